"""The guard's loop against a real Valkey, the real limiter (its counters feed the what-if) and the real store."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from typing import Any

import pytest

from collectors.runner import Reading, SourceError
from collectors.samples import FleetSample, GpuSample, NodeSample, RedisHealth, TierTraffic, TrafficSample
from quotas.errors import ErrorKind
from quotas.limiter import Limiter
from quotas.model import Quota, QuotaSpec
from quotas.store import QuotaStore
from surgewatch.guard.board import Board
from surgewatch.guard.loop import Guard
from surgewatch.guard.policy import DEFAULT_POLICY, Policy, over_default, parse_policy
from surgewatch.guard.signals import Observation, observe

ACTOR = "guard@test"
PAID = ("plus", "pro", "team", "enterprise")


# The policy these tests were written against: per-user limits only (the tier-cap lever, the built-in one for
# free since, has its own tests in tests/test_guard_cap.py), utilization 95/80 % over 5 s, temperature 80/76 °C
LIMIT_POLICY: dict[str, Any] = {
    "tiers": {"free": {"floor": "1/1d", "step_pct": 50}, "plus": {"floor": "50/1d", "step_pct": 25}},
    "signals": {"util_pct": {"target": 95, "release": 80, "sustain_s": 5},
                "temp_c": {"target": 80, "release": 76, "sustain_s": 3, "idle": 30},
                "throttled_pct": {"target": 10, "release": 2, "sustain_s": 3}},
    "cooldown_s": 10, "hold_s": 20, "give_back_pct": 25, "min_shed_pct": 15, "max_shed_pct": 40, "pegged_shed_pct": 20,
}


def policy(**table: Any) -> Policy:
    """LIMIT_POLICY over the built-in one, with `table`'s settings over both."""
    return parse_policy(over_default({**LIMIT_POLICY, **table}))


async def surge_traffic(store: QuotaStore) -> None:
    """Real limiter decisions: free heavy users up to their 20/1d, plus and pro moderate users."""
    limiter = Limiter(store.client)
    batch = [("free", f"f{u}", 1) for u in range(40) for _ in range(1 + u % 20)]
    batch += [("plus", f"p{u}", 1) for u in range(60) for _ in range(8)]
    batch += [("pro", f"r{u}", 1) for u in range(30) for _ in range(2)]
    await limiter.check_many(batch)


def fleet(n: int = 16, *, util: float = 50.0, temp: float = 60.0, throttled: int = 0, stale: int = 0,
          at: float = 0.0) -> Reading[FleetSample]:
    """A fleet of `n` GPUs on two nodes; `stale` of them on a node that is down."""
    gpus = [GpuSample("http://a:9400/metrics", i, util_pct=util, temp_c=temp,
                      throttle=("thermal",) if i < throttled else (), status="stale" if i < stale else "ok")
            for i in range(n)]
    nodes = (NodeSample("http://a:9400/metrics", "up", None, 1.0, at, at, tuple(g for g in gpus if g.status == "ok")),
             NodeSample("http://b:9400/metrics", "down", "cannot connect", None, at, at,
                        tuple(g for g in gpus if g.status != "ok")))
    return Reading("fleet", FleetSample(at, nodes), at, None, 0, at + 1)


async def traffic(store: QuotaStore, at: float, *, rates: dict[str, float] | None = None,
                  redis: RedisHealth | None = None, age_s: float = 0.0) -> Reading[TrafficSample]:
    rates = rates or {"free": 200.0, "plus": 40.0, "pro": 25.0, "team": 15.0, "enterprise": 10.0}
    tiers = tuple(TierTraffic(q.tier, q, rates.get(q.tier, 0.0), 0.0) for q in await store.list())
    sample = TrafficSample(at - age_s, tiers, redis or RedisHealth())
    return Reading("traffic", sample, at - age_s, None, 0, at + 1)


async def look(guard: Guard, store: QuotaStore, at: float, **fleet_kw: Any) -> Observation:
    obs = observe(guard.policy, now=at, traffic=await traffic(store, at), fleet=fleet(at=at, **fleet_kw))
    await guard.step(obs)
    return obs


async def got(store: QuotaStore, tier: str) -> Quota:
    q = await store.get(tier)
    assert q is not None, tier
    return q


async def guard_entries(store: QuotaStore) -> list[Any]:
    return [e for e in reversed(await store.history(None, count=100)) if e.actor == ACTOR]


async def shed_while_hot(g: Guard, store: QuotaStore, until: int) -> int:
    """The guard's looks at a fleet at 100 % and 85 °C from second 0 to `until`; free's limit then (below 20)."""
    for t in range(0, until):
        await look(g, store, t, util=100, temp=85)
    cut = (await got(store, "free")).limit
    assert cut < 20
    return cut


@pytest.fixture
async def hot(store: QuotaStore) -> QuotaStore:
    await surge_traffic(store)
    return store


async def test_a_sustained_signal_sheds_free_first_with_a_previewed_temporary_override(hot: QuotaStore) -> None:
    """One hot second does nothing; held for its sustain time, free gets a smaller limit for override_s, audited."""
    lines: list[str] = []
    g = Guard(hot, policy(), actor=ACTOR, mode="auto", say=lines.append)
    await look(g, hot, 0, util=100, temp=70)
    assert await guard_entries(hot) == []
    for t in range(1, 7):
        await look(g, hot, t, util=100, temp=70)
    (e,) = await guard_entries(hot)
    assert e.tier == "free" and e.old.limit == 20 and 10 <= e.new.limit < 20  # at most a 50 % step
    assert e.new.expires_at is not None and 590 <= e.new.expires_at - e.at <= 600
    assert "fleet utilization 100 % > 95 % for 5 s" in e.reason
    assert f"{e.new.limit}/1d would have refused" in e.reason and "free requests in 5 min" in e.reason
    for tier in PAID:
        assert (await got(hot, tier)).updated_by == "surgewatch init"
    assert any(line.startswith("acted: shed free") for line in lines)


async def test_steps_respect_the_cooldown_the_floor_then_the_next_tier_never_a_protected_one(hot: QuotaStore) -> None:
    """Steps come cooldown_s apart; free stops at its floor, then plus is shed; pro, team, enterprise never."""
    # plus at 10/1d (seeded so, long before the guard), its users at 8 a day: a step to 5/1d sheds some
    await hot.set("plus", QuotaSpec(10, 86400), actor="surgewatch init", reason="seed for the test")
    p = policy(cooldown_s=5, max_shed_pct=90, min_shed_pct=90,
               tiers={"free": {"floor": "12/1d", "step_pct": 50}, "plus": {"floor": "2/1d", "step_pct": 50}})
    g = Guard(hot, p, actor=ACTOR, mode="auto", say=lambda _: None)
    for t in range(0, 40):
        await look(g, hot, t, util=100, temp=85, throttled=8)
    entries = await guard_entries(hot)
    tiers = [e.tier for e in entries]
    assert tiers[0] == "free" and "plus" in tiers and set(tiers) <= {"free", "plus"}
    assert tiers.index("plus") > max(i for i, t in enumerate(tiers) if t == "free")  # free first, to its floor
    assert min(e.new.limit for e in entries if e.tier == "free") == 12
    assert min(e.new.limit for e in entries if e.tier == "plus") >= 2
    assert all(b - a >= 5 for a, b in zip(g.changes, list(g.changes)[1:], strict=False))
    for tier in ("pro", "team", "enterprise"):
        assert (await got(hot, tier)).version == 1
    assert g.state == "nothing to shed" and "free: at its floor 12/1d" in g.why


async def test_never_acts_on_stale_gpus_an_unhealthy_redis_or_old_traffic(hot: QuotaStore) -> None:
    """Frozen, with the reason logged and published, while the data cannot be trusted: nothing is written."""
    lines: list[str] = []
    g = Guard(hot, policy(), actor=ACTOR, mode="auto", board=Board(hot.client), say=lines.append)
    board = Board(hot.client)
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        ({"redis": RedisHealth("out_of_memory", "OOM command not allowed")}, {}, "Redis is not ok: out_of_memory"),
        ({"age_s": 12.0}, {}, "traffic figures are 12 s old"),
        ({}, {"stale": 8}, "50 % of GPUs (8 of 16) are stale or lost"),
    ]
    for tr_kw, fl_kw, why in cases:
        for t in range(0, 10):
            tr = await traffic(hot, t, **tr_kw)
            await g.step(observe(g.policy, now=t, traffic=tr, fleet=fleet(util=100, temp=90, throttled=12, at=t,
                                                                          **fl_kw)))
        assert g.state == "frozen" and why in g.why
        status = await board.status()
        assert status is not None and status["state"] == "frozen" and why in status["why"]
        assert any(why in line for line in lines)
    lost = SourceError(ErrorKind.UNREACHABLE, "cannot connect to redis")
    failing: Reading[TrafficSample] = Reading("traffic", None, None, lost, 3, 1.0)
    await g.step(observe(g.policy, now=11, traffic=failing, fleet=fleet(util=100, at=11)))
    assert g.state == "frozen" and "the traffic source fails: cannot connect" in g.why
    assert await guard_entries(hot) == []


async def test_gives_capacity_back_step_by_step_when_the_load_falls_then_lets_the_override_lapse(
        hot: QuotaStore) -> None:
    """Calm for hold_s: the limit rises by give_back_pct per step; the step that would reach 20/1d is not written."""
    lines: list[str] = []
    g = Guard(hot, policy(cooldown_s=2, hold_s=3, min_shed_pct=90, max_shed_pct=90), actor=ACTOR, mode="auto",
              say=lines.append)
    await shed_while_hot(g, hot, 6)
    for t in range(6, 80):
        await look(g, hot, t, util=40, temp=50)
    ups = [e for e in await guard_entries(hot) if "gives free back" in e.reason]
    assert ups and [e.new.limit for e in ups] == sorted(e.new.limit for e in ups)
    assert all(e.new.limit > e.old.limit and e.new.expires_at is not None for e in ups)
    assert ups[-1].new.limit < 20 and (await got(hot, "free")).limit == ups[-1].new.limit
    assert any("lapses at" in line and "back to 20/1d" in line for line in lines)


async def test_an_operators_change_meanwhile_wins_and_a_conflict_is_not_retried(hot: QuotaStore) -> None:
    """A change by someone else: the guard says so and leaves the tier alone; its own CAS loss is not retried."""
    lines: list[str] = []
    g = Guard(hot, policy(cooldown_s=10), actor=ACTOR, mode="auto", say=lines.append)
    for t in range(0, 6):
        await look(g, hot, t, util=100, temp=85)
    assert len(await guard_entries(hot)) == 1
    before = await traffic(hot, 16)  # read before the operator acts: the guard's next write would be stale
    await hot.set("free", QuotaSpec(15, 86400), actor="alice", reason="I'll handle free", for_s=600)
    obs = observe(g.policy, now=16, traffic=before, fleet=fleet(util=100, temp=85, at=16))
    await g.step(obs)
    assert g.state == "conflict" and "changed by alice meanwhile: not retried" in g.why
    for t in range(17, 26):
        await look(g, hot, t, util=100, temp=85)
    assert len(await guard_entries(hot)) == 1  # neither retried nor fought
    q = await got(hot, "free")
    assert (q.updated_by, q.limit) == ("alice", 15)
    assert any("leaves it alone" in line for line in lines) or "leaves it alone" in g.why


async def test_a_tier_in_shadow_mode_is_shed_in_shadow(hot: QuotaStore) -> None:
    """The override keeps the tier's shadow mode: its refusals are counted, not enforced."""
    cur = await got(hot, "free")
    await hot.set("free", replace(cur.settings(), mode="shadow"), actor="alice", reason="trial week")
    g = Guard(hot, policy(), actor=ACTOR, mode="auto", say=lambda _: None)
    for t in range(100, 140):  # alice's change is over a cool-down old by then
        await look(g, hot, t, util=100, temp=85)
    e = (await guard_entries(hot))[0]
    assert e.new.mode == "shadow" and "shadow mode: counted, not refused" in e.reason


def test_the_default_policy_parses_and_bad_settings_are_named() -> None:
    """The shipped policy is valid; each bad setting is refused with its name."""
    d = parse_policy(tomllib.loads(DEFAULT_POLICY)["guard"])
    assert d.order == ("free", "plus") and "pro" in d.protect and d.mode == "propose"
    from surgewatch.settings import ConfigError

    for table, name in [
        ({"cooldown": 3}, "unknown setting 'cooldown'"),
        ({"protect": ["free"]}, "guard.protect: tier 'free' is also in guard.order"),
        ({"tiers": {"free": {"floor": "1/1x"}, "plus": {"floor": "1/1d"}}}, "guard.tiers.free.floor"),
        ({"signals": {"util_pct": {"target": 90, "release": 95, "sustain_s": 5}}}, "guard.signals.util_pct.release"),
        ({"signals": {"heat": {"target": 1}}}, "unknown signal 'heat'"),
        ({"mode": "yolo"}, "guard.mode"),
        ({"thermal_tau_s": -1}, "guard.thermal_tau_s: -1 is not a number from 0 to 3600"),
        ({"order": ["free"], "tiers": {"free": {"floor": "1/1d"}, "gold": {"floor": "1/1d"}}}, "guard.tiers.gold"),
    ]:
        with pytest.raises(ConfigError, match=name):
            parse_policy(over_default(table))


async def test_a_hold_of_zero_gives_nothing_back_while_a_signal_is_above_its_release(hot: QuotaStore) -> None:
    """hold_s = 0 and the fleet at 93 % (release 80 %) after a cut: no give-back ("calm for 0 s" was calm)."""
    g = Guard(hot, policy(cooldown_s=1, hold_s=0), actor=ACTOR, mode="auto", say=lambda _: None)
    cut = await shed_while_hot(g, hot, 8)
    for t in range(8, 30):
        await look(g, hot, t, util=93, temp=79)
    assert not [e for e in await guard_entries(hot) if "gives free back" in e.reason]
    assert (await got(hot, "free")).limit <= cut


async def test_no_signal_with_a_value_freezes_the_guard_instead_of_reading_calm(hot: QuotaStore) -> None:
    """A policy of serving signals only, with no servers watched: frozen, said once, no give-back of its cut."""
    lines: list[str] = []
    g = Guard(hot, policy(cooldown_s=1, hold_s=1), actor=ACTOR, mode="auto", say=lines.append)
    cut = await shed_while_hot(g, hot, 8)
    g.policy = replace(g.policy, signals=tuple(r for r in g.policy.signals if r.name == "e2e_p99_s")
                       or (replace(g.policy.signals[0], name="e2e_p99_s"),))
    lines.clear()
    for t in range(8, 30):
        await look(g, hot, t, util=100, temp=90)
    assert (await got(hot, "free")).limit == cut and g.state == "frozen"
    assert [line for line in lines if "no signal of the policy has a value" in line] == lines and len(lines) == 1


async def test_a_lasting_state_is_logged_once_not_once_a_second(hot: QuotaStore) -> None:
    """Fifteen seconds of waiting out a cooldown whose countdown changes every second: a line when the signals
    above target change (temperature, then utilization too), not one a second."""
    lines: list[str] = []
    g = Guard(hot, policy(cooldown_s=60), actor=ACTOR, mode="auto", say=lines.append)
    for t in range(0, 20):
        await look(g, hot, t, util=100, temp=85)
    waiting = [line for line in lines if line.startswith("waiting:")]
    assert len(waiting) == 2 and all("next step possible in" in line for line in waiting), waiting
