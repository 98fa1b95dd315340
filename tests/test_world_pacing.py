"""The demo's world in real time on a busy machine: a tier cap counts per second of the server's clock, so no
two simulated seconds may share one of its seconds, even after a tick that ran late."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from sim.world import DemoConfig, World


async def test_a_late_tick_moves_the_run_back_instead_of_sharing_a_second_of_the_servers_clock(
        redis_client: aioredis.Redis) -> None:
    """A second that overran by 3 s: the ticks after it still fall in seconds of their own, mid-second."""
    world = await World.create(DemoConfig(nodes=1, gpus_per_node=1, seed=1, speed=1.0, serve_nodes=False),
                               redis_client)
    seen: list[tuple[int, int]] = []  # (tick, the server's clock in µs right after it decided)

    async def on_tick(tick: Any) -> None:
        secs, usecs = await redis_client.time()
        seen.append((tick.t, int(secs) * 1_000_000 + int(usecs)))
        if tick.t == 2:
            await asyncio.sleep(3.2)  # a busy machine: this second's work overran into three more

    try:
        await asyncio.wait_for(world.run(on_tick, duration_s=7), timeout=60)  # a hang guard
    finally:
        await world.close()
    assert [t for t, _ in seen] == list(range(1, 8))
    seconds = [us // 1_000_000 for _, us in seen]
    assert len(set(seconds)) == len(seconds), seconds  # old code: the late ticks ran back to back
    assert all(0.45 <= (us % 1_000_000) / 1e6 < 0.95 for t, us in seen if t >= 2)  # ticks fall mid-second
