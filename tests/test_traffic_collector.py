"""Per-tier traffic from the limiter's counters, against a real Valkey server."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
import redis.asyncio as aioredis

from collectors.traffic import TrafficCollector
from quotas.keys import Keys
from quotas.limiter import Limiter
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from tests.test_limiter import settle_in_second

K = Keys()


async def _server_now(r: aioredis.Redis) -> int:
    secs, _ = await r.time()
    return int(secs)


async def _count(r: aioredis.Redis, tier: str, sec: int, outcome: str, n: int) -> None:
    await r.hincrby(K.counters(tier, sec // 60), f"{sec % 60}:{outcome}", n)


async def _quota_hash(r: aioredis.Redis, tier: str, limit: int = 3, version: int = 4) -> None:
    await r.sadd(K.tiers, tier)
    await r.hset(K.quota(tier), mapping={
        "limit": limit, "window_s": 86400, "tier_cap_rps": "", "paused": 0, "mode": "enforce",
        "expires_at": "", "version": version, "updated_by": "alice", "updated_at": 1_700_000_000, "prev": "",
        "enforced": f"{limit}|86400||0|enforce|",  # what the limiter reads, written with the fields
    })


async def test_counts_rates_and_history_from_hincrby_counters(redis_client: aioredis.Redis) -> None:
    """Counters at known seconds give exact 10 s rates, 60 s counts and per-second history."""
    r = redis_client
    await _quota_hash(r, "free")
    await settle_in_second(r)  # the setup and the backfill must end within the second `now`, still incomplete
    now = await _server_now(r)
    await _count(r, "free", now - 4, "accepted", 50)
    await _count(r, "free", now - 4, "user_quota", 20)
    await _count(r, "free", now - 5, "tier_cap", 10)
    await _count(r, "free", now - 5, "blocked", 5)
    await _count(r, "free", now - 5, "error", 3)
    await _count(r, "free", now - 6, "shadow", 2)
    await _count(r, "free", now - 30, "accepted", 7)
    await _count(r, "free", now - 30, "paused", 4)
    await _count(r, "free", now - 75, "accepted", 11)  # outside the minute, inside the history
    await _count(r, "free", now - 600, "accepted", 13)
    await _count(r, "free", now, "accepted", 1000)  # the current, incomplete second is not counted
    c = TrafficCollector(r)
    s = await c.backfill()
    (t,) = s.tiers
    assert t.tier == "free" and t.quota is not None and (t.quota.limit, t.quota.version) == (3, 4)
    assert t.accepted_rps == 5.0 and t.rejected_rps == 3.5 and t.shadow_rps == 0.2
    assert t.rejected_by_reason_rps == {
        "user_quota": 2.0,
        "tier_cap": 1.0,
        "paused": 0.0,
        "blocked": 0.5,
        "unknown_tier": 0.0,
        "error": 0.3,
    }
    assert (t.accepted_1m, t.rejected_1m, t.shadow_1m) == (57, 39, 2)
    assert t.rejected_by_reason_1m == {
        "user_quota": 20,
        "tier_cap": 10,
        "paused": 4,
        "blocked": 5,
        "unknown_tier": 0,
        "error": 3,
    }
    assert len(t.accepted_history) == 900 and sum(t.accepted_history) == 50 + 7 + 11 + 13
    assert sum(t.rejected_history) == 20 + 10 + 5 + 4
    last = math.floor(s.taken_at) - 1
    assert t.accepted_history[-1 - (last - (now - 600))] == 13
    assert t.history_end_s == last  # the epoch second of the last value: sparklines pin columns to it


async def test_one_round_trip_per_poll_whatever_the_tiers(redis_client: aioredis.Redis) -> None:
    """After the first poll, each poll is one pipelined round trip, with 8 tiers and a new one appearing."""
    r = redis_client
    for i in range(8):
        await _quota_hash(r, f"t{i}")
    c = TrafficCollector(r)
    await c.poll()
    trips = c.round_trips
    for _ in range(3):
        s = await c.poll()
    assert c.round_trips - trips == 3 and len(s.tiers) == 8
    await _quota_hash(r, "newtier")
    await c.poll()  # this poll reads the registry ...
    s = await c.poll()  # ... the next one reads the new tier
    assert "newtier" in [t.tier for t in s.tiers] and c.round_trips - trips == 5


async def test_server_clock_decides_not_the_local_one(redis_client: aioredis.Redis) -> None:
    """A local clock an hour off changes nothing; a jump of the estimate costs one extra trip."""
    r = redis_client
    await _quota_hash(r, "free")
    now = await _server_now(r)
    await _count(r, "free", now - 3, "accepted", 40)
    offset = [3600.0]
    import time

    c = TrafficCollector(r, clock=lambda: time.time() + offset[0])
    (t,) = (await c.poll()).tiers
    assert t.accepted_1m == 40 and t.accepted_rps == 4.0
    offset[0] = -7200.0  # the local clock jumps: the estimate is wrong by three hours
    trips = c.round_trips
    (t,) = (await c.poll()).tiers
    assert t.accepted_1m == 40 and c.round_trips - trips == 2


async def test_garbage_in_redis_is_ignored(redis_client: aioredis.Redis) -> None:
    """Illegal tier names, a broken quota hash and junk counter fields neither crash nor count."""
    r = redis_client
    await _quota_hash(r, "free")
    await r.sadd(K.tiers, "fr}ee", "UPPER", "")
    await r.sadd(K.tiers, "broken")
    await r.hset(K.quota("broken"), mapping={"limit": "lots", "window_s": "x"})
    now = await _server_now(r)
    await _count(r, "free", now - 3, "accepted", 9)
    await r.hset(K.counters("free", (now - 3) // 60), mapping={"zz:accepted": 5, f"{(now - 3) % 60}:bogus": 5,
                                                              "61:accepted": 5, f"{(now - 2) % 60}:user_quota": "x"})
    c = TrafficCollector(r)
    s = await c.poll()
    by = {t.tier: t for t in s.tiers}
    assert sorted(by) == ["broken", "free"]
    assert by["broken"].quota is None and by["free"].accepted_1m == 9 and by["free"].rejected_1m == 0
    assert "is broken (" in by["broken"].quota_error and by["free"].quota_error == ""


async def test_illegal_tier_names_are_logged_once_a_change_not_once_a_poll(
        redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """Three polls over one bad name: one log line (`serve` and `record` poll every second, forever); a second
    bad name is logged again."""
    await _quota_hash(redis_client, "free")
    await redis_client.sadd(K.tiers, "fr}ee")
    c = TrafficCollector(redis_client)
    with caplog.at_level(logging.WARNING, logger="collectors.traffic"):
        for _ in range(3):
            await c.poll()
        await redis_client.sadd(K.tiers, "UPPER")
        await c.poll()
    said = [r.getMessage() for r in caplog.records if "illegal tier name" in r.getMessage()]
    assert said == [f"ignoring 1 illegal tier name(s) in {K.tiers}", f"ignoring 2 illegal tier name(s) in {K.tiers}"]


async def test_exact_counts_from_the_real_limiter(redis_client: aioredis.Redis) -> None:
    """Decisions made by the real limiter (and gateway-recorded outcomes) are counted exactly."""
    r = redis_client
    store = QuotaStore(r)
    await store.init()
    await store.set("free", QuotaSpec(3, 86400), actor="alice", reason="surge")
    await store.set("pro", QuotaSpec(100, 3600, tier_cap_rps=1000), actor="alice")
    lim = Limiter(r)
    free = [await lim.check("free", f"u{u}") for u in range(5) for _ in range(5)]
    pro = [await lim.check("pro", f"p{u}") for u in range(4) for _ in range(3)]
    await lim.record("free", "blocked", 2)
    await lim.record("free", "error")
    assert sum(d.allowed for d in free) == 15 and all(d.allowed for d in pro)
    await store.pause("team", actor="alice")
    team = [await lim.check("team", "x") for _ in range(6)]
    assert not any(d.allowed for d in team)
    await asyncio.sleep(1.05)  # let the decisions' second complete
    s = await TrafficCollector(r).poll()
    by = {t.tier: t for t in s.tiers}
    assert sorted(by) == ["enterprise", "free", "plus", "pro", "team"]
    f = by["free"]
    assert (f.accepted_1m, f.rejected_1m) == (15, 12)
    assert f.rejected_by_reason_1m == {
        "user_quota": 10,
        "tier_cap": 0,
        "paused": 0,
        "blocked": 2,
        "unknown_tier": 0,
        "error": 1,
    }
    assert f.accepted_rps == 1.5 and f.rejected_rps == 1.2
    assert f.quota is not None and f.quota.spec == "3/1d" and f.quota.version >= 2
    pt, tt = by["pro"], by["team"]
    assert pt.quota is not None and (pt.accepted_1m, pt.rejected_1m, pt.quota.tier_cap_rps) == (12, 0, 1000)
    assert tt.quota is not None and tt.rejected_by_reason_1m["paused"] == 6 and tt.quota.paused
    assert by["enterprise"].accepted_1m == 0 and sum(f.accepted_history) == 15


async def test_works_for_a_read_only_acl_user(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """A user allowed only read commands (and TIME) can poll and backfill."""
    r = redis_client
    await _quota_hash(r, "free")
    now = await _server_now(r)
    await _count(r, "free", now - 2, "accepted", 3)
    await r.execute_command(
        "ACL", "SETUSER", "viewer", "on", ">s3cret", "~*", "resetchannels", "-@all", "+@read", "+time", "+ping"
    )
    ro = aioredis.Redis.from_url(f"redis://viewer:s3cret@127.0.0.1:{valkey.port}/0", socket_timeout=5)
    try:
        c = TrafficCollector(ro)
        await c.backfill()
        (t,) = (await c.poll()).tiers
    finally:
        await ro.aclose()
    assert t.accepted_1m == 3 and t.quota is not None


async def test_incremental_polls_reread_incomplete_seconds(redis_client: aioredis.Redis) -> None:
    """A second read before it completed is read again once complete; complete seconds are counted once."""
    r = redis_client
    await _quota_hash(r, "free")
    now = await _server_now(r)
    await _count(r, "free", now - 5, "accepted", 4)
    c = TrafficCollector(r)
    (t,) = (await c.poll()).tiers
    assert t.accepted_1m == 4
    future = now + 2
    await _count(r, "free", future, "accepted", 5)  # a second that has not happened yet
    (t,) = (await c.poll()).tiers
    assert t.accepted_1m == 4
    await _count(r, "free", future, "accepted", 3)
    while await _server_now(r) <= future:
        await asyncio.sleep(0.1)
    for _ in range(2):  # the second poll must not count anything twice
        (t,) = (await c.poll()).tiers
        assert t.accepted_1m == 12 and sum(t.accepted_history) == 12


async def test_the_first_poll_after_a_redis_restart_is_answered(valkey: ValkeyProcess) -> None:
    """Redis restarted: every pooled connection is dead, yet the first poll once it is back is answered."""
    from quotas.connect import open_client
    from surgewatch.plan import CONSOLE_OPTIONS

    client = await open_client(valkey.url, **CONSOLE_OPTIONS)  # what the console opens
    try:
        await QuotaStore(client).init()
        collector = TrafficCollector(client)
        await asyncio.gather(*(client.ping() for _ in range(4)))  # several connections in the pool
        await collector.poll()
        valkey.stop()
        valkey.start()
        sample = await collector.poll()  # one dead connection each would have been one more "lost" here
        assert sample.redis.status == "no_tiers"  # it answered: no persistence, so it came back empty
    finally:
        await client.aclose()
