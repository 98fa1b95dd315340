"""How much free traffic any cap schedule could admit on the demo's surge within the guard's throttling bound.

    python bench/guard_frontier.py [--seed 7] [--duration 120]

`bench/guard.py` compares the guard with no action and the README's manual cut. This script asks what the
best possible shedding would have done on the same seed: it replays the same population and fleet (the
simulator's `Population` and `Fleet`, the same random draws) through the two rules of the limiter that
matter here, restated in a few lines so that hundreds of schedules run in seconds instead of real time:
each user's limit in its window (the windows are longer than the run; free's 20/1d, then 3/1d from 60 s
for the manual cut) and free's tier cap counted per second (`admit` of `bench/guard_replay.py`, shared with the
replay of the guard). Every schedule of the family "admit free at
its full limit until T1, cap it at C1 for D seconds (to drain the queue and let the hot GPUs cool below
their recovery point), then hold C2" is tried, with hindsight: the best free count is reported under the
issue's throttling bound (a third of no action's seconds) and under a quarter less (the margin a
controller that cannot see the future needs). No action and the manual cut are computed the same way, as
the check that the restated rules are the limiter's: their figures must equal `bench/guard.py`'s to the
request. Each figure comes with the admitted requests (any tier) that timed out in a GPU's queue: what a
fleet pegged at 100 % does with what it was given beyond its capacity.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guard_replay import admit  # this directory: run as `python bench/guard_frontier.py`

from quotas.store import SEED_TIERS
from sim.fleet import Fleet
from sim.traffic import GPU_S_PER_IMAGE, Population

GPUS = 128  # the demo's 16 nodes x 8 GPUs
# (free's per-user daily limit, free's cap in requests/s or None) for simulated second t
Schedule = Callable[[int], tuple[int, int | None]]


def run(seed: int, schedule: Schedule, duration: int) -> tuple[int, int, int]:
    """(free admitted, seconds with more than 10 % of GPUs throttling, admitted requests of any tier that timed
    out in a GPU's queue) for one schedule."""
    population, fleet = Population(seed), Fleet.build(16, 8, seed)
    used: dict[tuple[str, str], int] = defaultdict(int)
    limits = {tier: limit for tier, (limit, _) in SEED_TIERS.items()}
    free = throttling = 0
    timed_out_s = 0.0
    for t in range(1, duration + 1):
        free_limit, cap = schedule(t)
        limits["free"] = free_limit
        work_s = 0.0
        for tier, users in population.requests(t).items():
            admitted = admit(used, tier, users, limits[tier], cap if tier == "free" else None)
            work_s += admitted * population.cost_s(tier)
            if tier == "free":
                free += admitted
        stats = fleet.step(work_s)
        throttling += stats.throttled > 0.10 * GPUS
        timed_out_s += stats.dropped_s
    return free, throttling, round(timed_out_s / GPU_S_PER_IMAGE)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=int, default=120)
    args = ap.parse_args()
    d = args.duration
    none = run(args.seed, lambda t: (20, None), d)
    cut = run(args.seed, lambda t: (3 if t >= 60 else 20, None), d)
    bound = none[1] / 3
    best: dict[str, tuple[int, int, int, str]] = {}
    for t1, c1, hold, c2 in itertools.product((12, 16, 20, 24, 28, 32, 36, 40), (0, 40, 80, 120),
                                              (0, 10, 15, 20), (145, 150, 155, 160)):
        def schedule(t: int, t1: int = t1, c1: int = c1, hold: int = hold, c2: int = c2) -> tuple[int, int | None]:
            return 20, (None if t < t1 else c1 if t < t1 + hold else c2)
        free, thr, lost = run(args.seed, schedule, d)
        what = f"full until {t1} s, {c1}/s for {hold} s, then {c2}/s"
        for name, limit in (("bound", bound), ("margin", 0.75 * bound)):
            if thr <= limit and free > best.get(name, (-1, 0, 0, ""))[0]:
                best[name] = (free, thr, lost, what)
    print(f"seed {args.seed}, the first {d} simulated s, 128 GPUs")
    print(f"no action: {none[0]:,} free admitted, {none[1]} s over 10 % throttling, {none[2]:,} admitted requests "
          "timed out in the GPUs' queues")
    print(f"manual cut 60:free:3/1d: {cut[0]:,} free admitted, {cut[1]} s over 10 % throttling, {cut[2]:,} timed out")
    for name, label in (("bound", f"<= {bound:.1f} s (a third of no action)"),
                        ("margin", f"<= {0.75 * bound:.1f} s (a quarter below it)")):
        if name in best:
            free, thr, lost, what = best[name]
            print(f"best schedule with throttling {label}: {free:,} free ({free / cut[0]:.0%} of the manual cut), "
                  f"{thr} s throttling, {lost:,} timed out: {what}")
        else:
            print(f"no schedule keeps throttling {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
