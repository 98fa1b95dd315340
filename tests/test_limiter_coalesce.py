"""Concurrent checks of one tier share one server call (coalescing), with each check's own semantics kept."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest
import redis.asyncio as aioredis

from quotas.errors import BrokenQuota, Unreachable
from quotas.keys import Keys
from quotas.limiter import FAIL_OPEN, Decision, Limiter
from quotas.model import QuotaError, QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess

DAY = 86400


async def fcalls(client: aioredis.Redis) -> int:
    """FCALLs the server has run since its stats were last reset."""
    return int((await client.info("commandstats")).get("cmdstat_fcall", {}).get("calls", 0))


async def test_concurrent_checks_share_calls_and_keep_arrival_order(store: QuotaStore, redis_client: aioredis.Redis,
                                                                    away_from_day_edges: float) -> None:
    """50 checks at once of one user under 30/1d: a handful of calls, and exactly the first 30 admitted."""
    await store.set("free", QuotaSpec(30, DAY), actor="t")
    lim = Limiter(redis_client)
    await redis_client.config_resetstat()
    got = await asyncio.gather(*(lim.check("free", "u") for _ in range(50)))
    assert [d.allowed for d in got] == [True] * 30 + [False] * 20
    assert [d.remaining for d in got[:30]] == list(range(29, -1, -1))
    assert all(d.reason == "user_quota" and d.retry_after_s > 0 and d.limit == 30 for d in got[30:])
    assert await fcalls(redis_client) <= 3  # the first check alone, then the 49 that waited (chunked at most once)
    await lim.aclose()


async def test_without_coalescing_every_check_is_a_call(store: QuotaStore, redis_client: aioredis.Redis,
                                                        away_from_day_edges: float) -> None:
    """coalesce=False: one server call per concurrent check, same totals."""
    await store.set("free", QuotaSpec(30, DAY), actor="t")
    lim = Limiter(redis_client, coalesce=False)
    await redis_client.config_resetstat()
    got = await asyncio.gather(*(lim.check("free", "u") for _ in range(50)))
    assert sum(d.allowed for d in got) == 30
    assert await fcalls(redis_client) == 50
    await lim.aclose()


async def test_tiers_are_coalesced_apart(store: QuotaStore, redis_client: aioredis.Redis,
                                         away_from_day_edges: float) -> None:
    """Checks of different tiers at once get their own tier's quota and limit."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    await store.set("pro", QuotaSpec(5, DAY), actor="t")
    lim = Limiter(redis_client)
    got = await asyncio.gather(*(lim.check(t, "u") for _ in range(8) for t in ("free", "pro")))
    free, pro = got[0::2], got[1::2]
    assert [d.allowed for d in free] == [True] * 3 + [False] * 5 and {d.limit for d in free} == {3}
    assert [d.allowed for d in pro] == [True] * 5 + [False] * 3 and {d.limit for d in pro} == {5}
    await lim.aclose()


async def test_waiting_checks_get_a_broken_quota_each(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Junk in the quota reaches every check that waited for the shared call, as BrokenQuota."""
    await redis_client.hset(Keys().quota("free"), "enforced", "lots|86400||0|enforce|")
    lim = Limiter(redis_client)
    got = await asyncio.gather(*(lim.check("free", f"u{i}") for i in range(10)), return_exceptions=True)
    assert all(isinstance(e, BrokenQuota) and "lots" in str(e) for e in got)
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    assert (await lim.check("free", "u")).allowed  # the lane is free again
    await lim.aclose()


async def test_a_cancelled_waiting_check_leaves_the_others(store: QuotaStore, redis_client: aioredis.Redis,
                                                           away_from_day_edges: float) -> None:
    """A gateway request abandoned while its check waits does not disturb the checks beside it."""
    await store.set("free", QuotaSpec(100, DAY), actor="t")
    lim = Limiter(redis_client)
    tasks = [asyncio.create_task(lim.check("free", f"u{i}")) for i in range(10)]
    await asyncio.sleep(0)  # all started: the first is in flight, nine wait
    tasks[5].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[5], asyncio.CancelledError)
    assert all(isinstance(d, Decision) and d.allowed for i, d in enumerate(done) if i != 5)
    # the abandoned one was dropped before its call went out: it consumed nothing, the others one each
    day = int(away_from_day_edges) // DAY  # the server's UTC day, the limiter's
    used = [await redis_client.get(Keys().usage("free", DAY, day, f"u{i}")) for i in range(10)]
    assert used == [b"1"] * 5 + [None] + [b"1"] * 4
    await lim.aclose()


async def test_waiting_checks_time_out_and_fail_open_on_a_hung_server(
    valkey: ValkeyProcess, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """With the server hung, checks that wait behind a call in flight end within their own timeout too: Unreachable,
    or with fail_open an admitting decision and one warning; then the tier's calls go on as before."""
    await QuotaStore(redis_client).init()
    strict = Limiter(redis_client, timeout_s=0.4)
    lenient = Limiter(redis_client, timeout_s=0.4, fail_open=True)
    assert (await strict.check("free", "u")).allowed and (await lenient.check("free", "u")).allowed
    pid = valkey._proc.pid  # type: ignore[union-attr]  # the server was started by the fixture
    os.kill(pid, signal.SIGSTOP)
    try:
        async with asyncio.timeout(20):  # a hang guard: each check is bounded by its 0.4 s timeout
            with caplog.at_level(logging.WARNING, logger="quotas.limiter"):
                got = await asyncio.gather(*(strict.check("free", f"u{i}") for i in range(5)),
                                           *(lenient.check("free", f"u{i}") for i in range(5)), return_exceptions=True)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert all(isinstance(e, Unreachable) for e in got[:5])
    assert got[5:] == [FAIL_OPEN] * 5
    assert len([r for r in caplog.records if "failing open for tier free" in r.getMessage()]) == 1
    for lim in (strict, lenient):
        again = await asyncio.gather(*(lim.check("free", f"v{i}") for i in range(5)))
        assert all(d.allowed and d.limit is not None for d in again)
        await lim.aclose()



async def test_a_lane_left_busy_by_a_stopped_loop_is_not_waited_for(valkey: ValkeyProcess, store: QuotaStore,
                                                                    redis_client: aioredis.Redis) -> None:
    """A check whose event loop stopped mid-call (closed, or never run again) leaves its tier's lane busy; checks
    on another loop start afresh instead of waiting behind it (here they would wait their 30 s timeout)."""
    client = aioredis.Redis.from_url(valkey.url, socket_timeout=5)
    lim = Limiter(client, timeout_s=30)
    gone = asyncio.new_event_loop()
    abandoned: list[asyncio.Task[Decision]] = []

    def stop_mid_call() -> None:
        abandoned.append(gone.create_task(lim.check("free", "gone")))
        gone.run_until_complete(asyncio.sleep(0.3))  # the call is sent; the paused server holds its reply

    def finish_there() -> None:  # only now does the stopped loop run again: its check is abandoned
        tasks = asyncio.all_tasks(gone)  # the check and the limiter's watchdog there
        assert set(abandoned) <= tasks
        for t in tasks:
            t.cancel()
        gone.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        gone.close()

    await redis_client.client_pause(60_000, all=False)  # writes (the check's FCALL) wait; the unpause does not
    try:
        await asyncio.to_thread(stop_mid_call)
    finally:
        await redis_client.execute_command("CLIENT", "UNPAUSE")
    try:
        async with asyncio.timeout(10):  # a hang guard, well inside the 30 s a wrongly waiting check would take
            got = await asyncio.gather(*(lim.check("free", f"v{i}") for i in range(3)))
            assert [d.allowed for d in got] == [True] * 3
            assert (await lim.check("free", "w")).allowed  # and the tier's lane is free again afterwards
    finally:
        await asyncio.to_thread(finish_there)
    await lim.aclose()
    await client.aclose()


async def test_a_busy_tier_is_batched_within_the_window(store: QuotaStore, redis_client: aioredis.Redis,
                                                        away_from_day_edges: float) -> None:
    """Checks arriving about 1 ms apart, window 50 ms: far fewer calls than checks, decided in arrival order."""
    await store.set("free", QuotaSpec(150, DAY), actor="t")
    lim = Limiter(redis_client, batch_window_s=0.05)
    await redis_client.config_resetstat()
    tasks = []
    for _ in range(240):  # one user: exactly the first 150 to arrive are admitted, whatever the batches
        tasks.append(asyncio.create_task(lim.check("free", "u")))
        await asyncio.sleep(0.001)
    async with asyncio.timeout(30):  # a hang guard
        got = await asyncio.gather(*tasks)
    assert [d.allowed for d in got] == [True] * 150 + [False] * 90
    calls = await fcalls(redis_client)
    assert lim.batches_held >= 1 and lim.calls_sent == calls and calls <= 120
    await lim.aclose()


async def test_a_sequential_caller_is_not_held_by_the_window(store: QuotaStore, redis_client: aioredis.Redis,
                                                             away_from_day_edges: float) -> None:
    """One check after another at full speed, window 100 ms: a held batch that gathers nobody stops the holding."""
    from quotas.limiter import HOLD_OFF_WINDOWS

    await store.set("free", QuotaSpec(1000, DAY), actor="t")
    lim = Limiter(redis_client, batch_window_s=0.1)
    start = asyncio.get_running_loop().time()
    async with asyncio.timeout(60):  # a hang guard
        for i in range(80):
            assert (await lim.check("free", f"u{i}")).allowed
    elapsed_s = asyncio.get_running_loop().time() - start
    assert lim.batches_held <= 1 + int(elapsed_s / (HOLD_OFF_WINDOWS * 0.1))  # one probe per hold-off at most
    await lim.aclose()


async def test_a_full_batch_goes_before_the_window_ends(store: QuotaStore, redis_client: aioredis.Redis,
                                                        away_from_day_edges: float) -> None:
    """batch_limit 8: once 8 checks wait in a held batch it goes at once, in one call."""
    await store.set("free", QuotaSpec(1000, DAY), actor="t")
    lim = Limiter(redis_client, batch_window_s=0.1, batch_limit=8)
    await asyncio.gather(*(lim.check("free", f"w{i}") for i in range(30)))  # a burst: the tier is busy
    await redis_client.config_resetstat()
    held, full = lim.batches_held, lim.batches_full
    got = await asyncio.gather(*(lim.check("free", f"u{i}") for i in range(8)))
    assert all(d.allowed for d in got)
    assert (lim.batches_held - held, lim.batches_full - full, await fcalls(redis_client)) == (1, 1, 1)
    await lim.aclose()


def test_a_batch_window_out_of_range_is_refused(redis_client: aioredis.Redis) -> None:
    """A window below 0 or above 100 ms, or a batch limit below 1, is a QuotaError naming both."""
    for window_s, limit in ((-0.001, 64), (0.2, 64), (0.001, 0)):
        with pytest.raises(QuotaError, match="batch window"):
            Limiter(redis_client, batch_window_s=window_s, batch_limit=limit)


async def test_a_flood_of_made_up_tiers_leaves_a_real_tier_seen_afterwards_batched(
        store: QuotaStore, redis_client: aioredis.Redis, away_from_day_edges: float) -> None:
    """10,001 names no quota has, each asked once, then 50 checks at once of a real tier: still a few calls.
    (The caches refused new tiers once full: every later tier went unbatched, a call a check, until a restart.)"""
    await store.set("pro", QuotaSpec(1000, DAY), actor="t")
    lim = Limiter(redis_client)
    for i in range(10_001):  # one at a time: each a tier of its own, its own call
        assert (await lim.check(f"zz{i}", "u")).reason == "unknown_tier"
    await redis_client.config_resetstat()
    got = await asyncio.gather(*(lim.check("pro", f"u{i}") for i in range(50)))
    assert all(d.allowed for d in got)
    assert await fcalls(redis_client) <= 3
    await lim.aclose()
