"""Propose mode in the real console (Pilot): the guard's proposal appears, `a` applies it as the operator, `x`
dismisses it; a read-only console shows it and changes nothing."""

from __future__ import annotations

import redis.asyncio as aioredis

from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from surgewatch.guard.board import Board
from surgewatch.guard.loop import Guard
from surgewatch.settings import Settings
from tests.test_guard_loop import ACTOR, got, look, policy, surge_traffic
from tui.app import SurgewatchApp, create_app
from tui.testing import screen_text, wait_until


async def proposing_guard(store: QuotaStore) -> Guard:
    """A guard in propose mode that has just published a proposal to shed free (real limiter counters)."""
    await surge_traffic(store)
    g = Guard(store, policy(), actor=ACTOR, mode="propose", board=Board(store.client), say=lambda _: None)
    for t in range(0, 7):
        await look(g, store, t, util=100, temp=70)
    assert "free" in g.proposals
    return g


def console(valkey: ValkeyProcess, *, read_only: bool = False) -> SurgewatchApp:
    return create_app(Settings(redis_url=valkey.url, interval_s=0.2, read_only=read_only),
                      sources=("traffic",), actor="tester")


async def test_a_proposal_appears_and_a_applies_it_under_the_operators_name(
        valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """The Guard panel shows the proposal with its reason; `a` writes it as tester's change, CAS, temporary."""
    g = await proposing_guard(store)
    p = g.proposals["free"]
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: f"PROPOSAL {p.id}" in screen_text(app), what="the proposal")
        text = screen_text(app)
        assert f"free 20/1d -> {p.spec.spec} for 10m" in text and "a: accept as yours" in text
        assert "would have refused" in text and "guard@test · propose" in text
        assert (await got(store, "free")).limit == 20  # propose mode wrote nothing
        await pilot.press("a")
        q = await wait_until(pilot, lambda: app.state.quotas.get("free") if app.state.quotas["free"].version > 1
                             else None, what="the accepted quota")
    q = await got(store, "free")
    assert (q.limit, q.updated_by) == (p.spec.limit, "tester") and q.expires_at is not None
    (e,) = await store.history("free", count=1)
    assert e.actor == "tester" and e.reason.startswith(f"accepted guard proposal {p.id}: fleet utilization")
    assert (await Board(redis_client).proposals(["free"]))["free"].state == "accepted"
    await look(g, store, 8, util=100, temp=70)  # the guard sees its proposal taken: its own step, not a human's
    assert g.tiers["free"].held_until == 0 and g.tiers["free"].original is not None


async def test_x_dismisses_the_proposal_and_the_guard_leaves_the_tier_alone(
        valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """`x` marks the proposal dismissed by the operator; the panel drops it; the guard holds off that tier."""
    g = await proposing_guard(store)
    p = g.proposals["free"]
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: f"PROPOSAL {p.id}" in screen_text(app), what="the proposal")
        await pilot.press("x")
        await wait_until(pilot, lambda: "PROPOSAL" not in screen_text(app), what="the proposal gone")
    answered = (await Board(redis_client).proposals(["free"]))["free"]
    assert (answered.state, answered.by) == ("dismissed", "tester")
    assert (await got(store, "free")).version == 1
    await look(g, store, 8, util=100, temp=70)
    assert g.tiers["free"].held_until == 8 + g.policy.cooldown_s


async def test_a_read_only_console_shows_the_proposal_and_changes_nothing(
        valkey: ValkeyProcess, store: QuotaStore) -> None:
    """Read-only: the proposal is shown as such; `a` is not bound there, nothing is written."""
    g = await proposing_guard(store)
    app = console(valkey, read_only=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "(read-only console)" in screen_text(app), what="the proposal")
        await pilot.press("a")
        await pilot.pause(0.3)
    assert (await got(store, "free")).version == 1
    assert g.proposals["free"].state == "open"


async def test_the_panel_stays_hidden_without_a_guard(valkey: ValkeyProcess, store: QuotaStore) -> None:
    """No guard running, no proposal: the console looks as before (no Guard line)."""
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "free" in screen_text(app), what="the tiers")
        await pilot.pause(0.5)
        assert "Guard " not in screen_text(app)
