"""The surge population: a viral free tier of heavy repeat users, modest paid growth, reproducible."""

from __future__ import annotations

from collections import Counter

from sim.traffic import DEFAULT_DEMAND, TIERS, Population


def test_free_tier_ramps_tenfold_within_twenty_seconds() -> None:
    """The free tier's rate grows about tenfold and the surge is nearly complete 20 s after start."""
    free = DEFAULT_DEMAND[0]
    assert free.tier == "free"
    assert free.rate(0) == free.base_rps
    assert 8 <= free.peak_rps / free.base_rps <= 12
    assert free.rate(20) >= 0.9 * free.peak_rps


def test_paid_tiers_grow_modestly() -> None:
    """Every paid tier grows, by at most a third, over ten minutes."""
    for d in DEFAULT_DEMAND[1:]:
        assert d.tier in TIERS
        assert d.rate(0) < d.rate(600) <= 1.34 * d.rate(0)


def test_a_few_free_users_make_most_requests() -> None:
    """Over two minutes, the top 5 % of free users send more than half of the free tier's requests."""
    pop = Population(seed=1)
    counts: Counter[str] = Counter()
    for t in range(1, 121):
        counts.update(pop.requests(t)["free"])
    ranked = [c for _, c in counts.most_common()]
    top = ranked[: max(1, len(ranked) // 20)]
    assert sum(top) > 0.5 * sum(ranked)
    assert ranked[0] > 100, "the heaviest user keeps coming back"


def test_paid_users_stay_well_inside_their_quotas() -> None:
    """In ten minutes no paid user comes near the default quota of its tier (plus 200/1d, pro 600/1h, ...)."""
    quotas = {"plus": 200, "pro": 600, "team": 3000, "enterprise": 20000}
    pop = Population(seed=2)
    counts: dict[str, Counter[str]] = {t: Counter() for t in quotas}
    for t in range(1, 601):
        for tier, users in pop.requests(t).items():
            if tier in counts:
                counts[tier].update(users)
    for tier, c in counts.items():
        assert max(c.values()) < 0.6 * quotas[tier], tier


def test_same_seed_same_requests() -> None:
    """A seed fixes every request and its user; another seed gives other traffic."""
    a, b, c = Population(seed=9), Population(seed=9), Population(seed=10)
    ra = [a.requests(t) for t in range(1, 30)]
    assert ra == [b.requests(t) for t in range(1, 30)]
    assert ra != [c.requests(t) for t in range(1, 30)]


def test_demand_scales_with_the_fleet() -> None:
    """A fleet half the reference size gets about half the traffic."""
    big, small = Population(seed=3), Population(seed=3, gpus=64)
    full = sum(len(u) for t in range(20, 40) for u in big.requests(t).values())
    half = sum(len(u) for t in range(20, 40) for u in small.requests(t).values())
    assert 0.4 * full < half < 0.6 * full
