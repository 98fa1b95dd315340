"""The guard's tier-cap lever against a real Valkey, the real limiter (whose per-second counters feed the what-if)
and the real store; then on the simulated surge, where the limiter enforces the cap second by second."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.guard_hook import SimGuard
from sim.valkey import ValkeyProcess
from sim.world import DemoConfig, World
from surgewatch.guard.loop import Guard
from surgewatch.guard.policy import default_policy, over_default, parse_policy
from surgewatch.guard.signals import observe
from surgewatch.settings import ConfigError
from tests.test_guard_loop import ACTOR, fleet, got, guard_entries, look, policy, surge_traffic, traffic

CAP_TIERS = {"free": {"floor": "1/1d", "step_pct": 50, "lever": "cap", "cap_floor_rps": 40},
             "plus": {"floor": "2/1d", "step_pct": 50}}


@pytest.fixture
async def hot(store: QuotaStore) -> QuotaStore:
    await surge_traffic(store)  # free: 420 admitted in one second of the server's clock
    return store


async def test_the_default_policy_sheds_free_by_a_previewed_tier_cap_keeping_its_per_user_limit(
        hot: QuotaStore) -> None:
    """Held hot, free gets a tier cap below its admitted rate (at most a step_pct step), temporary and audited."""
    assert default_policy().tiers["free"].lever == "cap"
    g = Guard(hot, default_policy(), actor=ACTOR, mode="auto", say=lambda _: None)
    for t in range(0, 7):
        await look(g, hot, t, util=100, temp=70, throttled=4)  # 25 % of the GPUs throttling
    (e,) = await guard_entries(hot)
    assert e.tier == "free" and (e.new.limit, e.new.window_s) == (20, 86400)  # the per-user limit is kept
    assert e.old.tier_cap_rps is None and e.new.tier_cap_rps is not None
    assert 100 <= e.new.tier_cap_rps < 200  # free admits 200/s in these figures: a step of at most 50 %
    assert e.new.expires_at is not None and 590 <= e.new.expires_at - e.at <= 600
    assert f"20/1d cap {e.new.tier_cap_rps}/s would have refused" in e.reason and "free requests in 5 min" in e.reason
    impact = await hot.preview("free", e.new.settings())
    assert impact.would_refuse_cap > 0 and f"refused {impact.would_refuse:,} of" in e.reason


async def test_cap_steps_stop_at_the_cap_floor_then_the_next_tier_is_shed_never_a_protected_one(
        hot: QuotaStore) -> None:
    """Each step halves the cap at most, never below cap_floor_rps; then plus's per-user limit; pro never."""
    await hot.set("plus", QuotaSpec(10, 86400), actor="surgewatch init", reason="seed for the test")
    g = Guard(hot, policy(cooldown_s=5, min_shed_pct=90, max_shed_pct=90, tiers=CAP_TIERS), actor=ACTOR,
              mode="auto", say=lambda _: None)
    for t in range(0, 40):
        await look(g, hot, t, util=100, temp=85, throttled=8)
    entries = await guard_entries(hot)
    caps = [e.new.tier_cap_rps for e in entries if e.tier == "free"]
    assert caps == [100, 50, 40]  # 200/s halved, halved again, then the floor
    assert all(e.new.limit == 20 for e in entries if e.tier == "free")
    assert entries[-1].tier == "plus" and entries[-1].new.limit < 10 and entries[-1].new.tier_cap_rps is None
    for tier in ("pro", "team", "enterprise"):
        assert (await got(hot, tier)).version == 1
    assert "free: at its floor 20/1d cap 40/s" in g.why


async def test_the_cap_is_given_back_step_by_step_then_the_override_lapses(hot: QuotaStore) -> None:
    """Calm for hold_s: the cap rises by give_back_pct per step; the step past the offered rate is not written."""
    lines: list[str] = []
    g = Guard(hot, policy(cooldown_s=2, hold_s=3, min_shed_pct=90, max_shed_pct=90, give_back_pct=25,
                          tiers=CAP_TIERS), actor=ACTOR, mode="auto", say=lines.append)
    for t in range(0, 5):  # hot for the temperature's sustain time: one step
        await look(g, hot, t, util=100, temp=85)
    assert (await got(hot, "free")).tier_cap_rps == 100
    for t in range(6, 80):
        await look(g, hot, t, util=40, temp=50)
    ups = [e for e in await guard_entries(hot) if "gives free back" in e.reason]
    assert [(e.old.tier_cap_rps, e.new.tier_cap_rps) for e in ups] == [(100, 125), (125, 156), (156, 195)]
    assert all(e.new.expires_at is not None and e.new.limit == 20 for e in ups)
    assert (await got(hot, "free")).tier_cap_rps == 195  # 243/s would not bind 200/s offered: left to lapse
    assert any("lapses at" in line and "back to 20/1d" in line for line in lines)


async def test_near_the_release_levels_the_cap_comes_back_by_the_fleets_headroom_only(hot: QuotaStore) -> None:
    """Calm but warm: the step back is the headroom the temperature leaves, far less than give_back_pct."""
    signals = {"util_pct": {"target": 95, "release": 88, "sustain_s": 2},
               "temp_c": {"target": 80, "release": 79, "sustain_s": 2, "idle": 30}}
    g = Guard(hot, policy(cooldown_s=2, hold_s=3, min_shed_pct=90, max_shed_pct=90, give_back_pct=25,
                          signals=signals, tiers=CAP_TIERS), actor=ACTOR, mode="auto", say=lambda _: None)
    for t in range(0, 4):
        await look(g, hot, t, util=100, temp=85)
    assert (await got(hot, "free")).tier_cap_rps == 100
    for t in range(4, 10):  # utilization above its release (not calm yet), the temperature settled at 78 °C
        await look(g, hot, t, util=90, temp=78)
    for t in range(10, 14):
        await look(g, hot, t, util=80, temp=78)
    (up,) = [e for e in await guard_entries(hot) if "gives free back" in e.reason]
    # (79 - 78) / (78 - 30) of the 290 requests/s the fleet admits: 6 more, where 25 % would be 25
    assert (up.old.tier_cap_rps, up.new.tier_cap_rps) == (100, 106)


@pytest.mark.parametrize(("tau_s", "cap"), [(12, 133), (0, 113)])
async def test_a_falling_temperature_is_read_where_it_is_heading_when_capacity_comes_back(
        hot: QuotaStore, tau_s: int, cap: int) -> None:
    """Cooling at 0.24 °C/s: the give-back sizes its headroom on 73.9 °C (76.8 + 12 x -0.24), not on 76.8 °C."""
    signals = {"util_pct": {"target": 95, "release": 88, "sustain_s": 2},
               "temp_c": {"target": 80, "release": 79, "sustain_s": 2, "idle": 30}}
    g = Guard(hot, policy(cooldown_s=2, hold_s=3, min_shed_pct=90, max_shed_pct=90, give_back_pct=50,
                          thermal_tau_s=tau_s, signals=signals, tiers=CAP_TIERS),
              actor=ACTOR, mode="auto", say=lambda _: None)
    for t in range(0, 4):
        await look(g, hot, t, util=100, temp=85)
    for t in range(4, 10):
        await look(g, hot, t, util=90, temp=78)
    for t in range(10, 14):  # calm from 10 s, the temperature falling 0.4 °C a look: 76.8 °C at 13 s
        await look(g, hot, t, util=70, temp=78 - 0.4 * (t - 10))
    (up,) = [e for e in await guard_entries(hot) if "gives free back" in e.reason]
    # heading: the slope over 5 s is (76.8 - 78) / 5; (79 - 73.92) / (73.92 - 30) of 290/s = 33 more;
    # read as it is: (79 - 76.8) / (76.8 - 30) of 290/s = 13 more (utilization leaves (88 - 70) / 70: more)
    assert (up.old.tier_cap_rps, up.new.tier_cap_rps) == (100, cap)


async def test_an_operators_cap_meanwhile_wins_and_the_conflict_is_not_retried(hot: QuotaStore) -> None:
    """The guard's CAS loses to alice's own cap: not retried, and free is left alone for the cool-down."""
    g = Guard(hot, policy(cooldown_s=10, tiers=CAP_TIERS), actor=ACTOR, mode="auto", say=lambda _: None)
    before = await traffic(hot, 6)  # read before alice acts
    cur = await got(hot, "free")
    await hot.set("free", replace(cur.settings(), tier_cap_rps=150), actor="alice", reason="mine", for_s=600)
    states = []
    for t in range(0, 6):
        await g.step(observe(g.policy, now=t, traffic=before, fleet=fleet(util=100, temp=85, at=t)))
        states.append((g.state, g.why))
    assert any(st == "conflict" and "changed by alice meanwhile: not retried" in why for st, why in states)
    for t in range(6, 12):  # still within the cool-down of the conflict
        await look(g, hot, t, util=100, temp=85)
    assert await guard_entries(hot) == []  # neither retried nor fought
    q = await got(hot, "free")
    assert (q.updated_by, q.tier_cap_rps) == ("alice", 150)


@pytest.mark.parametrize(("tier", "message"), [
    ({"floor": "1/1d", "lever": "cap"}, "guard.tiers.free.cap_floor_rps: missing"),
    ({"floor": "1/1d", "lever": "rate"}, "guard.tiers.free.lever: 'rate'"),
    ({"floor": "1/1d", "cap_floor_rps": 20}, "guard.tiers.free.cap_floor_rps: only lever = \"cap\""),
    ({"floor": "1/1d", "lever": "cap", "cap_floor_rps": 0}, "guard.tiers.free.cap_floor_rps: 0"),
    ({"floor": "1/1d", "lever": "cap", "cap_floor_rps": 2.5}, "not a whole number"),
])
def test_a_bad_cap_lever_setting_is_named(tier: dict[str, Any], message: str) -> None:
    """The lever and its floor are validated like every other setting."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_policy(over_default({"tiers": {"free": tier, "plus": {"floor": "1/1d"}}}))


async def test_on_the_simulated_surge_the_limiter_holds_free_under_the_guards_cap(
        valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """The demo's surge in real time with the default policy: free is capped, the limiter admits no more than
    the cap in any second after it, and no paid request is refused."""
    world = await World.create(DemoConfig(seed=7, speed=1.0, serve_nodes=False), redis_client)
    world.guard = SimGuard(world, "auto", say=lambda _: None)
    ticks: list[Any] = []
    first: list[tuple[int, int]] = []  # (second, cap) when the guard's first cap was seen
    stop = asyncio.Event()

    async def on_tick(tick: Any) -> None:
        ticks.append(tick)
        q = await world.store.get("free")
        if not first and q is not None and q.tier_cap_rps is not None:
            first.append((tick.t, q.tier_cap_rps))
        if first and tick.t >= first[0][0] + 5:
            stop.set()

    try:
        await asyncio.wait_for(world.run(on_tick, duration_s=90, stop=stop), timeout=300)
    finally:
        await world.close()
    assert first, "the guard never capped free"
    since, cap = first[0]
    after = [tk for tk in ticks if tk.t > since]
    assert after and all(tk.tiers["free"].accepted <= cap < tk.tiers["free"].offered for tk in after)
    assert sum(tk.tiers[t].rejected for tk in ticks for t in ("plus", "pro", "team", "enterprise")) == 0
    entry = next(e for e in await world.store.history("free", count=20) if e.actor.startswith("guard@"))
    assert entry.new is not None and entry.new.tier_cap_rps == cap and entry.new.expires_at is not None


async def test_a_cap_proposal_shows_the_cap_in_the_console_and_a_applies_it(
        valkey: ValkeyProcess, store: QuotaStore) -> None:
    """Propose mode with the cap lever: the Guard panel names the cap; `a` writes it as the operator's change."""
    from surgewatch.guard.board import Board
    from surgewatch.settings import Settings
    from tui.app import create_app
    from tui.testing import screen_text, wait_until

    await surge_traffic(store)
    g = Guard(store, policy(tiers=CAP_TIERS), actor=ACTOR, mode="propose", board=Board(store.client),
              say=lambda _: None)
    for t in range(0, 7):
        await look(g, store, t, util=100, temp=70)
    p = g.proposals["free"]
    assert p.spec.tier_cap_rps is not None and p.spec.limit == 20
    app = create_app(Settings(redis_url=valkey.url, interval_s=0.2), sources=("traffic",), actor="tester")
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: f"PROPOSAL {p.id}" in screen_text(app), what="the proposal")
        assert f"free 20/1d -> 20/1d cap {p.spec.tier_cap_rps}/s for 10m" in screen_text(app)
        await pilot.press("a")
        await wait_until(pilot, lambda: app.state.quotas["free"].version > 1 or None, what="the accepted cap")
    q = await got(store, "free")
    assert (q.tier_cap_rps, q.updated_by) == (p.spec.tier_cap_rps, "tester") and q.expires_at is not None
