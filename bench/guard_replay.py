"""The real guard on an offline replay of the demo's surge: a policy screened in a second, not in five minutes.

    python bench/guard_replay.py [--seed 7] [--duration 120] [--policy FILE]

`surgewatch.guard.loop.Guard` (the real class, the built-in policy or `--policy`) looks after every simulated second
at the same figures `sim/guard_hook.py` gives it in the demo (the GPUs of the nodes that answer, each tier's
10-s mean rates, its quota), on the simulator's own population and fleet; the limiter's two rules that matter
here are restated in memory (each user's limit, the windows being longer than the run; a tier cap per
second), and so is the store the guard writes through: its what-if models a tier cap only (the built-in
policy sheds `free` by its cap; a per-user-limit what-if reads "would refuse nothing", so `plus` is never
shed here). A screen, not the measure: the figures that count come from `bench/guard.py` in real time
against the real limiter; this replay reproduced its free-admitted and throttling figures to the request on
seeds 7, 11 and 3 (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import sys
from collections import defaultdict, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.runner import Reading
from collectors.samples import TierTraffic, TrafficSample
from quotas.model import Quota, QuotaSpec
from quotas.store import SEED_TIERS
from sim.fleet import Fleet
from sim.guard_hook import RATE_WINDOW_S, fleet_sample
from sim.traffic import Population
from surgewatch.guard.loop import Guard
from surgewatch.guard.policy import load_policy
from surgewatch.guard.signals import observe

GPUS = 128


@dataclass(frozen=True)
class Impact:
    would_refuse: int
    total_admitted: int


def admit(used: dict[tuple[str, str], int], tier: str, users: list[str], limit: int, cap_rps: int | None) -> int:
    """How many of one second's requests (`users`, in order) the limiter admits: each user up to `limit` in the
    window (`used` counts admissions only: a refusal consumes no quota), and at most `cap_rps` in the second."""
    admitted = 0
    for user in users:
        if used[(tier, user)] < limit and (cap_rps is None or admitted < cap_rps):
            used[(tier, user)] += 1
            admitted += 1
    return admitted


class MemoryStore:
    """The store calls the guard makes, in memory: quotas, a tier-cap what-if over the admitted seconds, set."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.quotas = {t: Quota(t, limit, window, None, False, "enforce", None, 1, "surgewatch init", 0.0)
                       for t, (limit, window) in SEED_TIERS.items()}
        self.admitted: dict[str, list[int]] = defaultdict(list)

    async def list(self) -> list[Quota]:
        return list(self.quotas.values())

    async def preview(self, tier: str, spec: QuotaSpec, minutes: int = 5) -> Impact:
        seconds = self.admitted[tier][-60 * minutes:]
        cap = spec.tier_cap_rps
        return Impact(0 if cap is None else sum(max(0, n - cap) for n in seconds), sum(seconds))

    async def set(self, tier: str, spec: QuotaSpec, *, actor: str, reason: str = "", expect_version: int | None = None,
                  for_s: int | None = None) -> Quota:
        old = self.quotas[tier]
        now = self.clock[0]
        self.quotas[tier] = replace(old.with_spec(spec), version=old.version + 1, updated_by=actor, updated_at=now,
                                    expires_at=None if for_s is None else now + for_s)
        return self.quotas[tier]

    async def history(self, tier: str | None, count: int = 50) -> builtins.list[Any]:
        return []


async def replay(seed: int, duration: int, policy_path: str | None) -> tuple[int, int, list[tuple[int, int | None]]]:
    """(free admitted, seconds over 10 % throttling, free's cap each time it changed)."""
    clock = [0.0]
    population, fleet, store = Population(seed), Fleet.build(16, 8, seed), MemoryStore(clock)
    guard = Guard(store, load_policy(policy_path), actor="guard@replay", mode="auto", clock=lambda: clock[0],
                  wall=lambda: clock[0], say=lambda _: None)
    used: dict[tuple[str, str], int] = defaultdict(int)
    last: deque[dict[str, tuple[int, int]]] = deque(maxlen=RATE_WINDOW_S)  # as the traffic collector: 10-s means
    down_since: dict[int, float] = {}
    free = throttling = 0
    caps: list[tuple[int, int | None]] = [(0, None)]
    for t in range(1, duration + 1):
        clock[0] = float(t)
        second: dict[str, tuple[int, int]] = {}
        work_s = 0.0
        for tier, users in population.requests(t).items():
            q = store.quotas[tier]
            admitted = admit(used, tier, users, q.limit, q.tier_cap_rps)
            second[tier] = (admitted, len(users) - admitted)
            store.admitted[tier].append(admitted)
            work_s += admitted * population.cost_s(tier)
        free += second["free"][0]
        throttling += fleet.step(work_s).throttled > 0.10 * GPUS
        last.append(second)
        fleet_now = fleet_sample(fleet, clock[0], down_since)
        tiers = tuple(TierTraffic(name, q, sum(s[name][0] for s in last) / len(last),
                                  sum(s[name][1] for s in last) / len(last)) for name, q in store.quotas.items())
        await guard.step(observe(
            guard.policy, now=clock[0],
            traffic=Reading("traffic", TrafficSample(clock[0], tiers), clock[0], None, 0, clock[0] + 1),
            fleet=Reading("fleet", fleet_now, clock[0], None, 0, clock[0] + 1)))
        cap = store.quotas["free"].tier_cap_rps
        if cap != caps[-1][1]:
            caps.append((t, cap))
    return free, throttling, caps[1:]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=int, default=120)
    ap.add_argument("--policy", help="a TOML file with a [guard] table (default: the built-in policy)")
    args = ap.parse_args()
    free, throttling, caps = asyncio.run(replay(args.seed, args.duration, args.policy))
    steps = ", ".join(f"{t} s: {c}/s" if c is not None else f"{t} s: none" for t, c in caps)
    print(f"seed {args.seed}, {args.duration} simulated s: free admitted {free:,}, {throttling} s over 10 % "
          f"throttling; free's cap: {steps or 'never set'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
