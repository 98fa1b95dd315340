"""`demo --guard propose|auto`: the real guard (surgewatch.guard.loop) on the simulated surge.

After every simulated second the guard looks at what a console would see of that second: the GPUs of
the nodes that answer (a node that is down shows its GPUs stale, as the fleet collector does), each
tier's admitted and refused rates over the last 10 s and its quota as stored. Its clock is the
simulation's, so sustain times and cool-downs are simulated seconds whatever `--speed` is; its
writes and proposals go to the world's Redis through the store, so every console sees them and the
next second's decisions obey them.
"""

from __future__ import annotations

import socket
import sys
from collections import deque
from typing import TYPE_CHECKING, Any

from collectors.reasons import decode_reasons
from collectors.runner import Reading, SourceError
from collectors.samples import FleetSample, GpuSample, GpuStatus, NodeSample, TierTraffic, TrafficSample
from quotas.errors import ErrorKind
from sim.serving import ServingView
from surgewatch.guard.board import Board
from surgewatch.guard.loop import Guard
from surgewatch.guard.policy import GuardMode, Policy, default_policy
from surgewatch.guard.signals import observe

if TYPE_CHECKING:
    from sim.fleet import Fleet
    from sim.world import Tick, World

RATE_WINDOW_S = 10  # as the traffic collector: rates are means over the last 10 complete seconds


def guard_actor() -> str:
    return f"guard@{socket.gethostname()}"


def fleet_sample(fleet: Fleet, now: float, down_since: dict[int, float]) -> FleetSample:
    """What the fleet collector would see of the simulated fleet at `now`: a node that is down shows its GPUs
    stale, its reading as old as the outage (`down_since`, kept by the caller: node index -> when it went down)."""
    nodes = []
    for n in fleet.nodes:
        if n.up:
            down_since.pop(n.index, None)
        else:
            down_since.setdefault(n.index, now)
        url = f"http://{n.hostname}:9400/metrics"
        status: GpuStatus = "ok" if n.up else "stale"
        gpus = tuple(
            GpuSample(node=url, index=i, uuid=n.identities[i].uuid, util_pct=s.util_pct, temp_c=s.temp_c,
                      throttle=decode_reasons(s.throttle_mask), status=status)
            for i, s in enumerate(n.gpus)
        )
        taken = now if n.up else down_since[n.index]
        nodes.append(NodeSample(url, "up" if n.up else "down", None if n.up else "cannot connect", 1.0,
                                taken, now, gpus))
    return FleetSample(now, tuple(nodes))


class SimGuard:
    """Drives one Guard from the world's ticks."""

    def __init__(self, world: World, mode: GuardMode, policy: Policy | None = None, *, say: Any = None) -> None:
        self.world = world
        self.t = 0
        self.history: deque[Tick] = deque(maxlen=RATE_WINDOW_S)
        self.down_since: dict[int, float] = {}
        self.serving = ServingView()
        self.guard = Guard(
            world.store, policy or default_policy(), actor=guard_actor(), mode=mode,
            board=Board(world.client, world.store.keys.prefix), clock=lambda: float(self.t),
            say=say or self._say,
        )
        if world.config.speed != 1 and any(r.lever == "cap" for r in self.guard.policy.tiers.values()):
            # the limiter counts a tier cap per second of the server's clock, not per simulated second
            self.guard.say(f"at --speed {world.config.speed:g} a tier cap counts server seconds, not simulated "
                           "ones: run at --speed 1 for caps that mean requests per simulated second")

    def _say(self, text: str) -> None:
        print(f"surgewatch demo: t={self.t}s guard: {text}", file=sys.stderr, flush=True)

    def _fleet(self) -> FleetSample:
        return fleet_sample(self.world.fleet, float(self.t), self.down_since)

    async def _traffic(self) -> Reading[TrafficSample]:
        now = float(self.t)
        try:
            quotas = {q.tier: q for q in await self.world.store.list()}
        except Exception as e:  # the server went away: the guard freezes, as on a failing traffic poll
            from collectors.runner import classify

            return Reading("traffic", None, None, classify(e), 1, now + 1)
        if self.history and self.history[-1].errors:
            err = SourceError(ErrorKind.UNREACHABLE, "the limiter could not decide the last second")
            return Reading("traffic", None, None, err, 1, now + 1)
        span = max(1, len(self.history))
        tiers = []
        for name in sorted(set(quotas) | {n for tk in self.history for n in tk.tiers}):
            acc = sum(tk.tiers[name].accepted for tk in self.history if name in tk.tiers)
            rej = sum(tk.tiers[name].rejected for tk in self.history if name in tk.tiers)
            tiers.append(TierTraffic(name, quotas.get(name), acc / span, rej / span))
        return Reading("traffic", TrafficSample(now, tuple(tiers)), now, None, 0, now + 1)

    async def after_tick(self, tick: Tick) -> None:
        self.t = tick.t
        self.history.append(tick)
        now = float(self.t)
        fleet = Reading("fleet", self._fleet(), now, None, 0, now + 1)
        # what users feel: the nodes' inference servers, read as the serving collector would (sim/serving.py)
        serving = Reading("serving", self.serving.sample(self.world.fleet.nodes, now), now, None, 0, now + 1)
        obs = observe(self.guard.policy, now=now, traffic=await self._traffic(), fleet=fleet, serving=serving)
        await self.guard.step(obs)
