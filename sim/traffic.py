"""The surge's population: who sends how many image requests, second by second.

- The free tier goes viral: its request rate ramps about tenfold along a logistic curve that is
  nearly complete 20 s after start. A share of each second's requests comes from new users (the
  trend keeps recruiting); the rest come from users already seen, chosen in proportion to a
  heavy-tailed (Pareto) appetite, so a few heavy repeat users make most of the requests, as in a
  viral trend.
- Paid tiers grow modestly (about 20 %) and their users are many and moderate, so they stay well
  inside their quotas.

Deterministic for a seed: one `random.Random` per tier, drawn in a fixed order.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass

TIERS = ("free", "plus", "pro", "team", "enterprise")
REFERENCE_GPUS = 128  # demand below is sized for 16 nodes x 8 GPUs and scales with the fleet
GPU_S_PER_IMAGE = 0.4  # one image costs 0.4 s of a GPU at full clock


@dataclass(frozen=True, slots=True)
class TierDemand:
    """How one tier's demand evolves (rates in requests per second, for the reference fleet)."""

    tier: str
    base_rps: float
    peak_rps: float
    ramp_mid_s: float
    ramp_width_s: float  # logistic scale: 90 % of the ramp is done by mid + 2.2 * width
    users: int  # users known at start
    new_user_share: float  # share of requests from users never seen before
    appetite_alpha: float  # Pareto shape of users' appetite; lower = heavier tail
    cost_s: float = GPU_S_PER_IMAGE

    def rate(self, t_s: float) -> float:
        ramp = 1.0 / (1.0 + math.exp(-(t_s - self.ramp_mid_s) / self.ramp_width_s))
        ramp0 = 1.0 / (1.0 + math.exp(self.ramp_mid_s / self.ramp_width_s))
        # normalised so the rate is exactly base at t=0 and tends to peak
        return self.base_rps + (self.peak_rps - self.base_rps) * (ramp - ramp0) / (1.0 - ramp0)


DEFAULT_DEMAND: tuple[TierDemand, ...] = (
    TierDemand("free", 60, 620, ramp_mid_s=9, ramp_width_s=2.5, users=300, new_user_share=0.05, appetite_alpha=1.05),
    TierDemand("plus", 40, 48, ramp_mid_s=30, ramp_width_s=10, users=2400, new_user_share=0.01, appetite_alpha=3.0),
    TierDemand("pro", 25, 30, ramp_mid_s=30, ramp_width_s=10, users=900, new_user_share=0.01, appetite_alpha=3.0),
    TierDemand("team", 15, 18, ramp_mid_s=30, ramp_width_s=10, users=120, new_user_share=0.0, appetite_alpha=3.0),
    TierDemand("enterprise", 10, 12, ramp_mid_s=30, ramp_width_s=10, users=12, new_user_share=0.0, appetite_alpha=3.0),
)


class TierPopulation:
    """One tier's users and their appetites; draws each second's requests."""

    def __init__(self, demand: TierDemand, seed: int, scale: float = 1.0) -> None:
        self.demand = demand
        self.scale = scale
        self.rng = random.Random(f"{seed}:{demand.tier}")
        self.names: list[str] = []
        self.cum: list[float] = []  # cumulative appetites: users only ever append, so this stays sorted
        self._ids = itertools.count(1)
        for _ in range(max(1, demand.users)):
            self._new_user()

    def _new_user(self) -> str:
        name = f"{self.demand.tier[0]}{next(self._ids):06d}"
        appetite = min(self.rng.paretovariate(self.demand.appetite_alpha), 500.0)
        self.names.append(name)
        self.cum.append((self.cum[-1] if self.cum else 0.0) + appetite)
        return name

    def offered(self, t_s: int) -> int:
        """How many requests this tier sends in second `t_s` (a Poisson-like jitter around the rate)."""
        mean = self.demand.rate(t_s) * self.scale
        return max(0, round(self.rng.gauss(mean, math.sqrt(mean)))) if mean > 0 else 0

    def requests(self, t_s: int) -> list[str]:
        """The users behind each request of second `t_s`, in order."""
        out: list[str] = []
        for _ in range(self.offered(t_s)):
            if self.rng.random() < self.demand.new_user_share:
                out.append(self._new_user())
            else:
                x = self.rng.random() * self.cum[-1]
                out.append(self.names[bisect.bisect_right(self.cum, x)])
        return out


class Population:
    """Every tier. `requests(t)` is one second's traffic: (tier, user, cost) in a fixed order."""

    def __init__(
        self, seed: int = 0, *, gpus: int = REFERENCE_GPUS, demand: tuple[TierDemand, ...] = DEFAULT_DEMAND
    ) -> None:
        scale = gpus / REFERENCE_GPUS
        self.tiers = [TierPopulation(d, seed, scale) for d in demand]

    def requests(self, t_s: int) -> dict[str, list[str]]:
        return {p.demand.tier: p.requests(t_s) for p in self.tiers}

    def cost_s(self, tier: str) -> float:
        for p in self.tiers:
            if p.demand.tier == tier:
                return p.demand.cost_s
        return GPU_S_PER_IMAGE
