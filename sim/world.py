"""The demo's world, one simulated second at a time: population -> real limiter -> GPU fleet.

Each tick draws one second of requests from the population, decides them all through the real
limiter (`Limiter.check_many`, one pipelined round trip against the real server), feeds the admitted
work to the GPU fleet model and reports what happened. Counts come from the decisions the driver
got back, not from the server's per-second counters, so a tick's figures never blur across
wall-clock second boundaries and a run is reproducible for a seed.

Time: the simulation advances in whole simulated seconds. At `speed` 1 a simulated second takes a
wall second (the interactive demo); headless runs may go faster (`speed` > 1, or 0 for as fast as
the server answers). That is sound because the limiter's windows are far longer than a run (1 h and
1 d by default), so decisions do not depend on when a tick ran, only on the quota and past usage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from quotas.keys import DEFAULT_PREFIX
from quotas.limiter import Limiter
from quotas.model import QuotaError, QuotaSpec, parse_spec, validate_tier
from quotas.store import QuotaStore
from sim.exporter import FleetServer
from sim.fleet import Fleet, FleetStats
from sim.traffic import GPU_S_PER_IMAGE, Population

log = logging.getLogger(__name__)

OPERATOR = "demo-operator"
LATE_S = 0.3  # in real time, a tick this late still falls within its own second of the server's clock
_CHANGE_RE = re.compile(r"^([0-9]{1,6}):([^:]+):(.+)$")


@dataclass(frozen=True, slots=True)
class QuotaChange:
    """`T:TIER:LIMIT/WINDOW`: at simulated second T the operator sets TIER's quota."""

    at_s: int
    tier: str
    limit: int
    window_s: int

    @classmethod
    def parse(cls, text: str) -> QuotaChange:
        m = _CHANGE_RE.fullmatch(text.strip())
        if not m:
            raise QuotaError(f"invalid quota change {text!r}: write T:TIER:LIMIT/WINDOW, e.g. 60:free:3/1d")
        limit, window_s = parse_spec(m.group(3))
        return cls(int(m.group(1)), validate_tier(m.group(2)), limit, window_s)


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Everything that shapes a run. Same config and seed, same run."""

    nodes: int = 16
    gpus_per_node: int = 8
    seed: int = 0
    speed: float = 1.0  # simulated seconds per wall second; 0 = as fast as possible
    serve_nodes: bool = True
    quota_changes: tuple[QuotaChange, ...] = ()
    prefix: str | None = None
    guard: str | None = None  # run the guard on the surge: "propose" or "auto" (sim/guard_hook.py)

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 1024:
            raise ValueError(f"invalid --nodes {self.nodes}: from 1 to 1024")
        if not 1 <= self.gpus_per_node <= 16:
            raise ValueError(f"invalid --gpus-per-node {self.gpus_per_node}: from 1 to 16")
        # NaN fails every comparison; a speed near 0 (1e-300) would never end a --duration run
        if not (self.speed == 0 or 0.01 <= self.speed <= 1000):
            raise ValueError(f"invalid --speed {self.speed}: from 0.01 to 1000, or 0 (as fast as possible)")
        if self.guard not in (None, "propose", "auto"):
            raise ValueError(f"invalid --guard {self.guard!r}: 'propose' or 'auto'")


@dataclass(frozen=True, slots=True)
class TierTick:
    offered: int
    accepted: int
    rejected: int


@dataclass(frozen=True, slots=True)
class Tick:
    """One simulated second: per-tier outcomes and the fleet after it."""

    t: int
    tiers: dict[str, TierTick]
    fleet: FleetStats
    errors: int = 0  # requests the limiter could not decide (server unreachable)
    # the quota changes that took effect this second (audit entries: operator, guard, expiry), oldest first
    quota_changes: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The headless output line: a contract, keep the keys."""
        return {
            "t": self.t,
            "tiers": {
                name: {"offered_rps": tt.offered, "accepted_rps": tt.accepted, "rejected_rps": tt.rejected}
                for name, tt in self.tiers.items()
            },
            "gpu_util_mean": round(self.fleet.util_mean_pct, 1),
            "gpu_temp_mean": round(self.fleet.temp_mean_c, 1),
            "gpu_temp_max": round(self.fleet.temp_max_c, 1),
            "throttled": self.fleet.throttled,
            # admitted requests (any tier) that waited past the gateway's timeout in a GPU's queue this second
            "timed_out": round(self.fleet.dropped_s / GPU_S_PER_IMAGE),
            "quota_changes": list(self.quota_changes),
            # what admitted users felt (sim/serving.py): the fleet's e2e p99 over the requests of the last
            # 10 simulated seconds (null: none finished), and the requests waiting in the GPUs' queues now
            "e2e_p99_s": None if self.fleet.e2e_p99_s is None else round(self.fleet.e2e_p99_s, 2),
            "queue": round(self.fleet.queue),
        }


@dataclass
class World:
    """The running simulation against one Redis. Create with `World.create`, then `tick()` or `run()`."""

    config: DemoConfig
    client: Any
    limiter: Limiter
    store: QuotaStore
    fleet: Fleet
    population: Population
    server: FleetServer | None = None
    serving_server: FleetServer | None = None  # each node's inference server (sim/serving.py)
    t: int = 0
    _pending: list[QuotaChange] = field(default_factory=list)
    guard: Any = None  # sim.guard_hook.SimGuard with --guard: looks after every tick
    _audit_seen: set[str] = field(default_factory=set)

    @classmethod
    async def create(cls, config: DemoConfig, client: Any) -> World:
        """Load the limiter library, seed the tiers, build the fleet and (optionally) serve its nodes."""
        prefix = config.prefix or DEFAULT_PREFIX
        store = QuotaStore(client, prefix=prefix)
        await store.init()
        for change in config.quota_changes:
            if await store.get(change.tier) is None:
                raise QuotaError(f"unknown tier {change.tier!r} in --quota-change: the demo's tiers are "
                                 + ", ".join(q.tier for q in await store.list()))
        fleet = Fleet.build(config.nodes, config.gpus_per_node, config.seed)
        world = cls(
            config=config,
            client=client,
            limiter=Limiter(client, timeout_s=5.0, prefix=prefix),
            store=store,
            fleet=fleet,
            population=Population(config.seed, gpus=fleet.gpu_count),
            _pending=sorted(config.quota_changes, key=lambda c: c.at_s),
        )
        await world._quota_changes()  # the seeding happened before the run: not a change of second 1
        if config.guard is not None:
            from sim.guard_hook import SimGuard

            world.guard = SimGuard(world, config.guard)  # type: ignore[arg-type]  # validated above
        if config.serve_nodes:
            world.server = await FleetServer(fleet).start()
            world.serving_server = await FleetServer(fleet, serving=True).start()
        return world

    async def _quota_changes(self) -> tuple[dict[str, Any], ...]:
        """Audit entries not reported yet, oldest first, as `{tier, actor, new, reason}`."""
        try:
            entries = await self.store.history(None, count=50)
        except Exception as e:  # the server went away: the tick reports the limiter's errors already
            log.warning("cannot read the quota changes: %s", e)
            return ()
        fresh = [e for e in reversed(entries) if e.id not in self._audit_seen]
        self._audit_seen.update(e.id for e in fresh)
        return tuple(
            {"tier": e.tier, "actor": e.actor, "new": e.new.to_json() if e.new else None, "reason": e.reason}
            for e in fresh
        )

    @property
    def node_urls(self) -> list[str]:
        return self.server.urls if self.server else []

    @property
    def server_urls(self) -> list[str]:
        """The nodes' inference servers' /metrics (`--servers`)."""
        return self.serving_server.urls if self.serving_server else []

    async def apply(self, change: QuotaChange) -> None:
        """Set a tier's quota through the store, as an operator would (other settings kept)."""
        current = await self.store.get(change.tier)
        base = current.settings() if current is not None else QuotaSpec(change.limit, change.window_s)
        spec = replace(base, limit=change.limit, window_s=change.window_s)
        await self.store.set(change.tier, spec, actor=OPERATOR, reason=f"demo: scheduled change at t={change.at_s}s")
        log.info("t=%ss: %s set to %s", change.at_s, change.tier, spec.spec)

    async def tick(self) -> Tick:
        """Advance one simulated second."""
        self.t += 1
        while self._pending and self._pending[0].at_s <= self.t:
            await self.apply(self._pending.pop(0))
        by_tier = self.population.requests(self.t)
        batch = [(tier, user, 1) for tier, users in by_tier.items() for user in users]
        errors = 0
        try:
            decisions = await self.limiter.check_many(batch) if batch else []
        except Exception as e:  # the server went away: the gateway errors those requests, the world goes on
            log.warning("limiter unavailable: %s", e)
            decisions, errors = [], len(batch)
        tiers: dict[str, TierTick] = {}
        work_s = 0.0
        i = 0
        for tier, users in by_tier.items():
            part = decisions[i : i + len(users)]
            i += len(users)
            accepted = sum(1 for d in part if d.allowed)
            tiers[tier] = TierTick(len(users), accepted, len(part) - accepted)
            work_s += accepted * self.population.cost_s(tier)
        stats = self.fleet.step(work_s)
        # after the decisions: an override that ended was expired by the limiter's first decision past its end
        return Tick(self.t, tiers, stats, errors, await self._quota_changes())

    async def run(
        self,
        on_tick: Callable[[Tick], Awaitable[None] | None],
        *,
        duration_s: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Tick until `duration_s` simulated seconds passed or `stop` is set, paced by `config.speed`.

        In real time (`speed` 1) every tick after the first falls at the middle of a second of the wall clock,
        which is the embedded server's: a tier cap is counted per second of that clock, so each simulated
        second's decisions must share one of its seconds with no other tick. A tick more than `LATE_S` late
        (a busy machine) moves the rest of the run back by whole seconds instead of catching up in a burst."""
        start = time.monotonic()
        real_time = self.config.speed == 1
        if real_time:
            start += (0.5 - time.time() % 1.0) % 1.0
        while duration_s is None or self.t < duration_s:
            if stop is not None and stop.is_set():
                return
            tick = await self.tick()
            result = on_tick(tick)
            if asyncio.iscoroutine(result):
                await result
            if self.guard is not None:
                await self.guard.after_tick(tick)  # its changes take effect in the next second
            if self.config.speed > 0:
                delay = start + self.t / self.config.speed - time.monotonic()
                if real_time and delay < -LATE_S:
                    start += math.ceil(-delay)
                    delay += math.ceil(-delay)
                if stop is not None:
                    try:
                        await asyncio.wait_for(stop.wait(), max(0.0, delay))
                        return
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)  # let the node servers answer scrapes between ticks

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.serving_server is not None:
            await self.serving_server.stop()
            self.serving_server = None
