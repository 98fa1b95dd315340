"""The interactive demo: the real console on the simulated world, driven by keys through the Pilot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from textual.pilot import Pilot

from quotas.store import QuotaStore
from sim.runner import WorldThread
from sim.valkey import port_open
from sim.world import DemoConfig, Tick
from surgewatch.cli.demo import demo_app
from surgewatch.settings import Settings
from tui.app import SurgewatchApp

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "demo.svg"


async def wait_for(pilot: Pilot[int], cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Let the app run until `cond()` holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


def console(world: WorldThread) -> SurgewatchApp:
    """The demo's console: demo_app is typed App[int], and what it returns is create_app's SurgewatchApp."""
    return cast(SurgewatchApp, demo_app(world, Settings()))


def free_reject_ratio(ticks: list[Tick]) -> float:
    offered = sum(t.tiers["free"].offered for t in ticks)
    return sum(t.tiers["free"].rejected for t in ticks) / max(1, offered)


async def test_operator_cuts_the_free_tier_with_keys_and_the_world_reacts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Select free in the tier panel, e, type 3/1d, ctrl+s: Redis holds 3/1d, the audit names the operator, free
    rejections jump, paid tiers unharmed."""
    # the operator: the login user and the SSH client address, as the CLI names them
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME", "SSH_CONNECTION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOGNAME", "olga")
    monkeypatch.setenv("SSH_CLIENT", "10.9.8.7 40022 22")
    ticks: list[Tick] = []
    world = WorldThread(DemoConfig(nodes=4, gpus_per_node=4, seed=3, speed=4.0), on_tick=ticks.append)
    world.start()
    node_ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in world.node_urls]
    redis_port = world.valkey.port
    client = aioredis.Redis.from_url(world.redis_url, socket_timeout=5)
    try:
        app = console(world)
        async with app.run_test(size=(200, 60)) as pilot:
            assert world.redis_url in app.sub_title
            await wait_for(
                pilot,
                lambda: len(app.state.rows) == 16 and "free" in app.state.quotas,
                20,
                "the fleet and the tiers on screen",
            )
            await wait_for(pilot, lambda: len(ticks) >= 24, 20, "the surge")
            assert app.state.quotas["free"].spec == "20/1d"

            for _ in range(8):
                if app.focused is not None and app.focused.id == "tier-table":
                    break
                await pilot.press("tab")
            assert app.focused is not None and app.focused.id == "tier-table"
            for _ in range(6):
                await pilot.press("up")
            for _ in range(6):
                if app.overview.selected_tier == "free":
                    break
                await pilot.press("down")
            assert app.overview.selected_tier == "free"

            await pilot.press("e")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "QuotaEditor", 5,
                           f"the quota editor (screen {app.screen!r}, focus {app.focused!r})")
            await pilot.press("end", *["backspace"] * 8, "3", "slash", "1", "d")
            cut_at = len(ticks)
            await pilot.press("ctrl+s")
            await wait_for(
                pilot, lambda: type(app.screen).__name__ != "QuotaEditor", 5, "the editor to apply and close"
            )

            q = await QuotaStore(client).get("free")
            assert q is not None and q.spec == "3/1d"
            audit = await QuotaStore(client).history("free", 1)
            assert audit[0].new is not None and audit[0].new.spec == "3/1d" and audit[0].actor == "olga@10.9.8.7"
            assert q.updated_by == "olga@10.9.8.7"
            await wait_for(pilot, lambda: app.state.quotas["free"].spec == "3/1d", 2, "the tier panel to show 3/1d")

            # the cut applies to the very next decisions: within 2 simulated seconds free rejections jump
            await wait_for(pilot, lambda: len(ticks) >= cut_at + 6, 10, "ticks after the cut")
            before, after = ticks[cut_at - 6 : cut_at - 1], ticks[cut_at + 1 : cut_at + 6]
            assert free_reject_ratio(after) > free_reject_ratio(before) + 0.2
            for tier in ("plus", "pro", "team", "enterprise"):
                assert sum(t.tiers[tier].rejected for t in ticks) == 0, tier

            await pilot.press("q")
        assert app.return_code in (0, None)
    finally:
        await client.aclose()
        world.stop()
    assert not port_open(redis_port)
    assert not any(port_open(p) for p in node_ports)


async def test_demo_console_shows_scraped_nodes_and_quit_stops_the_world() -> None:
    """The console lists every simulated GPU scraped over HTTP; after ctrl+c quits and the world stops, nothing
    listens."""
    world = WorldThread(DemoConfig(nodes=2, gpus_per_node=2, seed=1, speed=2.0))
    world.start()
    ports = [world.valkey.port] + [int(u.rsplit(":", 1)[1].split("/")[0]) for u in world.node_urls]
    try:
        app = console(world)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: len(app.state.rows) == 4, 15, "4 GPUs from 2 nodes")
            assert {r.node for r in app.state.rows} == {urlsplit(u).netloc for u in world.node_urls}
            await pilot.press("ctrl+c")
            async with asyncio.timeout(15):  # a hang guard: ctrl+c quits the demo (Textual alone only hints at q)
                while app.is_running:
                    await asyncio.sleep(0.05)
    finally:
        world.stop()
    assert not any(port_open(p) for p in ports)
