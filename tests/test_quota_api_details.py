"""Details of the quota API: preview windows, audit entries as stored, pause/resume, the registry and history
(first written for surviving mutants: tests/README.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import cast

import pytest
import redis.asyncio as aioredis

from quotas.errors import BadData, BrokenQuota, Conflict, UnknownTier
from quotas.keys import Keys
from quotas.model import QuotaError, QuotaSpec
from quotas.store import QuotaStore
from tests.test_limiter_counters import write_counters

DAY = 86400
K = Keys()


async def test_whatif_never_ranks_a_request_above_the_limit_in_force(store: QuotaStore, redis_client: aioredis.Redis,
                                                                     away_from_window_edges: float) -> None:
    """Bucket 32 (ranks 17..32) under a limit of 20 holds ranks 17..20 only: the current quota refuses none of
    it and 18 refuses half; under a limit of 17 it holds rank 17 alone, so 17 refuses nothing."""
    minute = int(away_from_window_edges) // 60
    await write_counters(redis_client, "free", minute, {5: 20}, {32: 16})  # free is seeded at 20 a day

    async def refused(tier: str, limit: int) -> int:
        return (await store.preview(tier, QuotaSpec(limit, DAY))).would_refuse_user

    assert await refused("free", 20) == 0
    assert await refused("free", 18) == 8  # 16 * (20 - 18) / (20 - 16)
    assert await refused("free", 16) == 16
    await store.set("vip", QuotaSpec(17, DAY), actor="t", create=True)
    await write_counters(redis_client, "vip", minute, {5: 20}, {32: 16})
    assert await refused("vip", 17) == 0
    assert await refused("vip", 16) == 16


async def test_whatif_reads_one_to_sixty_minutes(store: QuotaStore) -> None:
    """A preview of the last hour is accepted (the editor's longest); 0 and 61 minutes are refused."""
    assert (await store.preview("free", QuotaSpec(5, DAY), minutes=60)).total_admitted == 0
    assert (await store.preview("free", QuotaSpec(5, DAY), minutes=1)).total_admitted == 0
    for bad in (0, 61):
        with pytest.raises(QuotaError, match="from 1 to 60"):
            await store.preview("free", QuotaSpec(5, DAY), minutes=bad)


async def test_history_reads_entries_as_the_library_wrote_them(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """An entry's id, time (ms and µs, as stored), tier and JSON old/new are the stream's: a created tier's first
    entry has no old quota, a later one has both."""
    await store.set("vip", QuotaSpec(3, 60), actor="alice", create=True)
    await store.set("vip", QuotaSpec(4, 60), actor="bob", reason="more")
    raw = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis_client.xrevrange(K.audit("vip")))
    newest, created = await store.history("vip")
    for entry, (rid, fields) in zip((newest, created), raw, strict=True):
        assert entry.id == rid.decode() and entry.tier == "vip"
        assert entry.at_us == int(fields[b"at_us"]) and round(entry.at * 1000) == int(fields[b"at"])
    assert created.old is None and created.to_json()["old"] is None
    assert created.new is not None and created.to_json()["new"] == created.new.to_json()
    assert newest.old is not None and newest.to_json()["old"] == newest.old.to_json() and newest.old.limit == 3


async def test_history_reads_hand_written_entries(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Entries written outside the library (an operator's XADD, an old version) read with defaults: the stream's
    tier, no reason, kind `set`, µs from the ms; a junk time reads as 0; without times they sort by stream id."""
    await store.set("vip", QuotaSpec(3, 60), actor="t", create=True)
    await store.set("vip2", QuotaSpec(3, 60), actor="t", create=True)
    await redis_client.delete(K.audit("vip"), K.audit("vip2"))
    await redis_client.xadd(K.audit("vip"), {"actor": "ops", "version": "7", "at": "1500"}, id="1000-1")
    await redis_client.xadd(K.audit("vip"), {"version": "6"}, id="2000-1")
    await redis_client.xadd(K.audit("vip2"), {"actor": "ops", "version": "8", "at": "junk"}, id="1000-2")
    await redis_client.xadd(K.audit("vip2"), {"version": "9"}, id="2000-3")
    hist = [x for x in await store.history(None, count=20) if x.tier.startswith("vip")]
    e = {x.id: x for x in hist}
    timed = e["1000-1"]
    assert (timed.tier, timed.actor, timed.reason, timed.kind, timed.version) == ("vip", "ops", "", "set", 7)
    assert (timed.at, timed.at_us) == (1.5, 1_500_000)
    assert timed.to_json()["new"] is None and timed.to_json()["old"] is None
    assert (e["1000-2"].at, e["1000-2"].version, e["1000-2"].at_us) == (0.0, 0, 0)  # junk time: nothing trusted
    assert (e["2000-3"].tier, e["2000-3"].version, e["2000-3"].at, e["2000-3"].at_us) == ("vip2", 9, 0.0, 0)
    assert [x.id for x in hist] == ["1000-1", "2000-3", "2000-1", "1000-2"]


async def test_pause_and_resume_keep_their_reason_and_compare_and_set(store: QuotaStore) -> None:
    """pause/resume write the reason given (none: empty), honour an expected version, and never create a tier."""
    q = await store.get("team")
    assert q is not None
    await store.pause("team", actor="t")
    await store.resume("team", actor="t")
    await store.pause("team", actor="t", reason="incident")
    await store.resume("team", actor="t", reason="resolved")
    assert [e.reason for e in await store.history("team", count=4)] == ["resolved", "incident", "", ""]
    for change in (store.pause, store.resume):
        with pytest.raises(Conflict):
            await change("team", actor="t", expect_version=q.version)
    with pytest.raises(UnknownTier):
        await store.resume("vip", actor="t")
    assert "vip" not in await store.registry()


async def test_registry_of_the_wrong_type_is_named(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """A tier registry that is not a set: BadData naming the key, what it should be and the repair."""
    await redis_client.delete(K.tiers)
    await redis_client.set(K.tiers, "oops")
    for read in (store.registry, store.list):
        with pytest.raises(BadData) as e:
            await read()
        assert e.value.key == K.tiers
        assert str(e.value) == (f"{K.tiers} is not a set (WRONGTYPE): redis-cli DEL {K.tiers}, then `surgewatch init` "
                                "re-creates the registry (quotas are kept)")


async def test_list_names_what_it_skips(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """list() keeps the tiers it cannot show: an illegal name (shown cut to 40 characters), a quota key that is
    not a hash, and a registered tier whose quota is gone."""
    bad = "Bad" + "x" * 60
    await redis_client.sadd(K.tiers, bad, "ghost")
    await redis_client.delete(K.quota("team"))
    await redis_client.set(K.quota("team"), "junk")
    await redis_client.delete(K.quota("pro"))
    tiers = [q.tier for q in await store.list()]
    assert tiers == ["enterprise", "free", "plus"]
    assert store.missing == ["ghost", "pro"]
    assert store.broken[bad] == f"invalid tier name {bad[:40]!r} in the registry {K.tiers}"
    assert set(store.broken) == {bad, "team"}
    assert store.broken["team"] == str(BrokenQuota("team", "the quota key is not a hash"))


async def test_an_expired_override_is_persisted_by_a_writer(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """A writer that reads an expired override stores its fallback (the hash no longer holds the override)."""
    await store.set("pro", QuotaSpec(5, 3600), actor="t")
    await store.set("pro", QuotaSpec(1, 3600), actor="t", for_s=1)
    async with asyncio.timeout(30):  # a hang guard: the override ends 1 s after it was set
        while (q := await store.get("pro")) is not None and q.expires_at is not None:
            await asyncio.sleep(0.1)
    assert q is not None and (q.limit, q.expires_at) == (5, None)
    raw = await redis_client.hgetall(K.quota("pro"))
    assert raw[b"limit"] == b"5" and raw.get(b"expires_at", b"") == b""


async def test_history_count_is_checked_and_defaults_to_twenty(store: QuotaStore) -> None:
    """history() returns 20 entries unless asked; 10,000 is the most it gives, and a flag or 10,001 is refused."""
    for n in range(25):
        await store.set("team", QuotaSpec(100 + n, 3600), actor="t")
    assert len(await store.history("team")) == 20
    assert len(await store.history("team", count=10_000)) == 26  # the seed and the 25 changes
    for bad in (True, 0, 10_001):
        with pytest.raises(QuotaError, match=f"invalid count {bad!r}: a whole number from 1 to 10000"):
            await store.history("team", count=bad)


async def test_whatif_reads_five_minutes_unless_asked(store: QuotaStore, redis_client: aioredis.Redis,
                                                      away_from_window_edges: float) -> None:
    """The default period is the last five minutes: counters four minutes old count, five minutes old do not;
    a flag is not a number of minutes."""
    minute = int(away_from_window_edges) // 60
    await write_counters(redis_client, "free", minute - 4, {1: 3})
    await write_counters(redis_client, "free", minute - 5, {1: 100})
    assert (await store.preview("free", QuotaSpec(5, DAY))).total_admitted == 3
    with pytest.raises(QuotaError, match="from 1 to 60"):
        await store.preview("free", QuotaSpec(5, DAY), minutes=True)


def _quota_json(tier: str, limit: int, mode: str = "enforce") -> str:
    return json.dumps({"tier": tier, "limit": limit, "window_s": DAY, "paused": False, "mode": mode, "version": 1})


async def test_whatif_ceiling_is_every_limit_in_force_during_the_period(store: QuotaStore, redis_client: aioredis.Redis,
                                                                        away_from_window_edges: float) -> None:
    """The highest limit in force during the last minute bounds bucket 64 (ranks 33..64): the limit in force
    when it began (a change more than 1 s before it), every limit changed within it (however many changes),
    none at all when one was shadow mode; a preview of limit 40 refuses its share of the 16 requests there."""
    minute = int(away_from_window_edges) // 60
    since_ms = minute * 60 * 1000
    n = 0

    async def refused(changes: Sequence[tuple[float, int | None, int, str]]) -> int:
        """A tier at 20 now whose audit stream holds `changes` (seconds from the period start, old and new limit,
        new mode), with 16 requests in bucket 64 this minute: what a limit of 40 would have refused."""
        nonlocal n
        n += 1
        tier = f"vip{n}"
        await store.set(tier, QuotaSpec(20, DAY), actor="t", create=True)
        await redis_client.delete(K.audit(tier))
        for i, (at_s, old, new, mode) in enumerate(changes, 1):
            await redis_client.xadd(K.audit(tier), {
                "at": str(since_ms + round(at_s * 1000)), "version": str(i), "kind": "set", "actor": "t",
                "old": "" if old is None else _quota_json(tier, old), "new": _quota_json(tier, new, mode)})
        await write_counters(redis_client, tier, minute, {5: 20}, {64: 16})
        return (await store.preview(tier, QuotaSpec(40, DAY), minutes=1)).would_refuse_user

    before = (-120.0, 64, 48, "enforce")  # two minutes before: 48 was in force when the period began, 64 was not
    assert await refused([before]) == 8  # ceiling 48: 16 * (48 - 40) / (48 - 32)
    assert await refused([before, (0.5, 52, 20, "enforce")]) == 10  # 52 in force within it: 16 * 12 / 20
    assert await refused([before, (-1.5, 60, 44, "enforce")]) == 5  # 1.5 s before it: only 44 counts
    assert await refused([before, (-1.0, 60, 44, "enforce")]) == 11  # within the 1 s grace: 60 counts
    assert await refused([(0.2, None, 20, "enforce"), (0.4, 20, 64, "enforce"), (0.6, 64, 20, "enforce")]) == 12
    assert await refused([(0.1, 64, 20, "enforce")] + [(0.2 + i / 100, 20, 20, "enforce") for i in range(24)]) == 12
    assert await refused([(0.5, 20, 20, "shadow")]) == 12  # shadow admits any rank: no ceiling, 16 * 24 / 32


async def test_history_skips_an_unreadable_stream_and_reads_the_rest(store: QuotaStore,
                                                                     redis_client: aioredis.Redis) -> None:
    """An audit key of the wrong type costs that tier's entries only: the merged history still has the others."""
    await redis_client.delete(K.audit("enterprise"))
    await redis_client.set(K.audit("enterprise"), "junk")  # the first tier in name order
    assert {e.tier for e in await store.history(None)} == {"free", "plus", "pro", "team"}
