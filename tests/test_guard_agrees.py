"""The guard's words, proposals and countdown agree (real Valkey, real limiter counters, real store): the step
interval runs from an accepted proposal, a proposal whose reason no longer holds is withdrawn, and the state
between steps is "waiting", never "cooling" next to a hot fleet."""

from __future__ import annotations

import redis.asyncio as aioredis

from quotas.store import QuotaStore
from surgewatch.guard.board import Board
from surgewatch.guard.loop import Guard
from tests.test_guard_loop import ACTOR, look, policy, surge_traffic

COOLDOWN_S = 10  # LIMIT_POLICY's step interval


async def proposing(store: QuotaStore, lines: list[str], **hot: float) -> Guard:
    """A propose-mode guard that has just proposed to shed free, the fleet as `hot` says."""
    await surge_traffic(store)
    g = Guard(store, policy(), actor=ACTOR, mode="propose", board=Board(store.client), say=lines.append)
    for t in range(0, 7):
        await look(g, store, t, **hot)
    assert g.proposals["free"].state == "open"
    return g


async def test_no_new_proposal_within_the_step_interval_after_an_accept(
        store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Accepted late (after the interval from the proposal): the guard waits a whole interval from the accept,
    saying so with a countdown, before it proposes the next step."""
    lines: list[str] = []
    g = await proposing(store, lines, util=100, temp=70)
    for t in range(7, 20):  # the operator takes a while: the guard waits for an answer meanwhile
        await look(g, store, t, util=100, temp=70)
    assert g.state == "proposed" and "waiting for an operator" in g.why
    await Board(redis_client).accept(store, g.proposals["free"], "tester")
    for t in range(20, 20 + COOLDOWN_S):
        await look(g, store, t, util=100, temp=70)
        assert not [p for p in g.proposals.values() if p.state == "open"], f"a new proposal at {t} s"
        if t > 20:
            assert g.state == "waiting" and f"next step possible in {20 + COOLDOWN_S - t} s" in g.why, (t, g.why)
            status = await Board(redis_client).status()
            assert status is not None and status["state"] == "waiting"
    await look(g, store, 20 + COOLDOWN_S, util=100, temp=70)
    assert [p for p in g.proposals.values() if p.state == "open"], "the next step once the interval has passed"


async def test_a_shed_proposal_is_withdrawn_when_its_reason_no_longer_holds(
        store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Throttling 31 % > 10 % proposed a cut; at 6 % (below target) the proposal is withdrawn from every console."""
    lines: list[str] = []
    g = await proposing(store, lines, util=80, temp=70, throttled=5)
    p = g.proposals["free"]
    assert "throttling" in p.reason
    await look(g, store, 7, util=80, temp=70, throttled=5)
    assert (await Board(redis_client).proposals(["free"]))["free"].state == "open"  # still true: kept
    await look(g, store, 8, util=80, temp=70, throttled=1)
    assert "free" not in g.proposals
    assert await Board(redis_client).proposals(["free"]) == {}
    assert any(line.startswith(f"proposal {p.id} (free -> ") and "withdrawn: no signal is above its target" in line
               for line in lines), lines
    assert g.state != "proposed"


async def test_the_state_between_steps_never_says_cooling(store: QuotaStore) -> None:
    """Hot and sustained, inside the step interval after an auto step: "waiting", with the countdown."""
    await surge_traffic(store)
    g = Guard(store, policy(), actor=ACTOR, mode="auto", say=lambda _: None)
    states = set()
    for t in range(0, 12):
        await look(g, store, t, util=100, temp=85, throttled=8)
        states.add(g.state)
    assert "cooling" not in states and "waiting" in states
