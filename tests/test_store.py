"""The quota store against a real Valkey: init, CAS, pause/resume, audit, events, garbage, read-only users."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from quotas.errors import BrokenQuota, Conflict, UnknownTier
from quotas.feed import QuotaEvent, quota_events
from quotas.keys import Keys
from quotas.library import installed_version, library_source, library_version
from quotas.model import QuotaError, QuotaSpec
from quotas.store import SEED_TIERS, QuotaStore
from sim.valkey import ValkeyProcess

DAY = 86400
K = Keys()


async def test_init_seeds_once_and_never_overwrites(redis_client: aioredis.Redis) -> None:
    """init creates the five default tiers, and a second init leaves an operator's change alone."""
    s = QuotaStore(redis_client)
    assert await s.init() == list(SEED_TIERS)
    assert s.library_before is None
    await s.set("free", QuotaSpec(3, DAY), actor="alice")
    assert await s.init() == []
    assert s.library_before == library_version()
    free = await s.get("free")
    assert free is not None and (free.limit, free.version) == (3, 2)
    assert [q.tier for q in await s.list()] == sorted(SEED_TIERS)
    assert {q.tier: (q.limit, q.window_s) for q in await s.list()}["pro"] == (600, 3600)


async def test_init_upgrades_an_older_library(redis_client: aioredis.Redis) -> None:
    """A server holding an older library version gets the shipped one on init."""
    old = library_source().replace(f"local LIB_VERSION = {library_version()}", "local LIB_VERSION = 0")
    await redis_client.function_load(old)
    s = QuotaStore(redis_client)
    await s.init()
    assert s.library_before == 0
    assert await installed_version(redis_client) == library_version()


async def test_set_get_and_audit_are_atomic(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Each accepted change bumps the version by one and writes exactly one audit entry with old and new."""
    before = await redis_client.xlen(K.audit("free"))
    q = await store.set("free", QuotaSpec(3, DAY, tier_cap_rps=50), actor="alice@10.0.0.7", reason="surge")
    assert (q.limit, q.window_s, q.tier_cap_rps, q.version, q.updated_by) == (3, DAY, 50, 2, "alice@10.0.0.7")
    assert await store.get("free") == q
    assert await redis_client.xlen(K.audit("free")) == before + 1
    (entry,) = await store.history("free", count=1)
    assert (entry.actor, entry.version, entry.reason, entry.kind) == ("alice@10.0.0.7", 2, "surge", "set")
    assert entry.old is not None and entry.old.limit == 20 and entry.new == q
    assert set(entry.to_json()) == {"tier", "actor", "at", "version", "old", "new", "reason"}
    assert entry.to_json()["at"].endswith("Z")


async def test_stale_write_conflicts_naming_who_and_when(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """A set with a stale expected version fails with Conflict naming the last writer, writes nothing."""
    await store.set("free", QuotaSpec(3, DAY), actor="alice", expect_version=1)
    xlen = await redis_client.xlen(K.audit("free"))
    with pytest.raises(Conflict) as e:
        await store.set("free", QuotaSpec(5, DAY), actor="bob", expect_version=1)
    assert "alice" in str(e.value) and "version 2" in str(e.value) and "Z" in str(e.value)
    assert e.value.current is not None and e.value.current.version == 2
    assert await redis_client.xlen(K.audit("free")) == xlen
    assert (await store.get("free")).limit == 3  # type: ignore[union-attr]  # the tier exists: just set


async def test_unknown_tier_needs_create(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Setting a tier that does not exist fails unless create=True; expect_version=0 means only-if-absent."""
    with pytest.raises(UnknownTier):
        await store.set("vip", QuotaSpec(1, 60), actor="t")
    with pytest.raises(UnknownTier):
        await store.pause("vip", actor="t")
    assert not await redis_client.exists(K.quota("vip"), K.audit("vip"))
    assert not await redis_client.sismember(K.tiers, "vip")
    q = await store.set("vip", QuotaSpec(1, 60), actor="t", create=True, expect_version=0)
    assert q.version == 1 and "vip" in [x.tier for x in await store.list()]
    with pytest.raises(Conflict):
        await store.set("vip", QuotaSpec(2, 60), actor="t", create=True, expect_version=0)


async def test_pause_resume_keep_everything_else(store: QuotaStore) -> None:
    """pause and resume flip only the paused flag and bump the version."""
    q = await store.set("team", QuotaSpec(7, 3600, tier_cap_rps=9, mode="shadow"), actor="t")
    p = await store.pause("team", actor="t", reason="incident", expect_version=q.version)
    assert p.paused and p.settings() == QuotaSpec(7, 3600, 9, True, "shadow") and p.version == q.version + 1
    r = await store.resume("team", actor="t")
    assert not r.paused and r.settings() == q.settings() and r.version == q.version + 2
    assert [e.kind for e in await store.history("team", count=2)] == ["resume", "pause"]


async def test_pause_and_resume_keep_an_overrides_expiry_and_fallback(store: QuotaStore,
                                                                      redis_client: aioredis.Redis) -> None:
    """Pausing and resuming a temporary override keep its end (to the ms) and the quota it falls back to."""
    await store.set("free", QuotaSpec(5, 86400), actor="t")
    o = await store.set("free", QuotaSpec(1, 86400), actor="t", reason="surge", for_s=7200)
    assert o.expires_at is not None
    key = Keys().quota("free")
    fallback = await redis_client.hget(key, "prev")
    assert fallback is not None and json.loads(fallback)["limit"] == 5
    p = await store.pause("free", actor="t", reason="incident")
    assert (p.paused, p.limit, p.expires_at) == (True, 1, o.expires_at)
    assert await redis_client.hget(key, "prev") == fallback
    r = await store.resume("free", actor="t", reason="resolved")
    assert (r.paused, r.settings(), r.expires_at) == (False, o.settings(), o.expires_at)
    assert await redis_client.hget(key, "prev") == fallback
    assert await store.get("free") == r
    h = await store.history("free", count=2)
    assert [(e.kind, e.reason, e.new.expires_at if e.new else None) for e in h] == [
        ("resume", "resolved", o.expires_at), ("pause", "incident", o.expires_at)]


async def test_a_paused_and_resumed_override_still_falls_back_when_it_ends(store: QuotaStore) -> None:
    """An override of 1 s, paused and resumed, still ends by itself and falls back to the quota before it."""
    await store.set("pro", QuotaSpec(5, 86400), actor="t")
    await store.set("pro", QuotaSpec(1, 86400), actor="t", for_s=1)
    await store.pause("pro", actor="t")
    await store.resume("pro", actor="t")
    async with asyncio.timeout(30):  # a hang guard: it ends 1 s after it was set
        while (q := await store.get("pro")) is not None and q.expires_at is not None:
            await asyncio.sleep(0.1)
    assert q is not None and (q.limit, q.paused, q.expires_at) == (5, False, None)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.set("fr}ee", QuotaSpec(1, 60), actor="t", create=True),
        lambda s: s.set("free", QuotaSpec(1, 60), actor=""),
        lambda s: s.set("free", QuotaSpec(1, 60), actor="t", reason="two\nlines"),
        lambda s: s.set("free", QuotaSpec(1, 60), actor="t", for_s=0),
        lambda s: s.set("free", QuotaSpec(1, 60), actor="t", for_s=40 * DAY),
        lambda s: s.set("free", QuotaSpec(1, 60), actor="t", expect_version=-1),
        lambda s: s.set("free", "3/1d", actor="t"),
        lambda s: s.pause("a b", actor="t"),
        lambda s: s.history("FREE "),
        lambda s: s.history(count=0),
    ],
)
async def test_store_refuses_bad_input_and_writes_nothing(
    store: QuotaStore, redis_client: aioredis.Redis, call: Callable[[QuotaStore], Awaitable[object]]
) -> None:
    """Bad input to the store raises QuotaError and changes no key at all."""
    before = {k: await redis_client.dump(k) for k in await redis_client.keys("*")}
    with pytest.raises(QuotaError):
        await call(store)
    assert {k: await redis_client.dump(k) for k in await redis_client.keys("*")} == before


async def test_history_merges_tiers_newest_first(store: QuotaStore) -> None:
    """history() without a tier merges every tier's stream, newest first, bounded by count."""
    await store.set("free", QuotaSpec(3, DAY), actor="a")
    await store.set("pro", QuotaSpec(5, 3600), actor="b")
    await store.pause("free", actor="c")
    got = await store.history(count=3)
    assert [(e.tier, e.actor) for e in got] == [("free", "c"), ("pro", "b"), ("free", "a")]
    assert len(await store.history(count=100)) == 5 + 3


async def test_garbage_in_redis_is_reported_not_fatal(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Junk quota values, a wrong key type and a hostile registry name are skipped by list with a message."""
    await redis_client.hset(K.quota("free"), mapping={"mode": "yolo"})
    await redis_client.delete(K.quota("plus"))
    await redis_client.lpush(K.quota("plus"), "x")
    await redis_client.sadd(K.tiers, "Bad}Name", "ghost")
    tiers = [q.tier for q in await store.list()]
    assert tiers == ["enterprise", "pro", "team"]
    assert set(store.broken) == {"free", "plus", "Bad}Name"}
    assert "mode" in store.broken["free"] and "not a hash" in store.broken["plus"]
    with pytest.raises(BrokenQuota):
        await store.get("free")
    with pytest.raises(BrokenQuota):
        await store.pause("free", actor="t")
    repaired = await store.set("free", QuotaSpec(3, DAY), actor="t")  # a full set repairs it
    assert repaired.mode == "enforce" and (await store.get("free")) == repaired
    await redis_client.xadd(K.audit("pro"), {"junk": "1"})
    assert (await store.history("pro", count=1))[0].actor == ""


async def test_read_only_user_sees_override_fallback_without_writing(
    store: QuotaStore, redis_client: aioredis.Redis, valkey: ValkeyProcess
) -> None:
    """A read-only ACL user lists an expired override as its fallback, and nothing is written."""
    await store.set("free", QuotaSpec(1, DAY), actor="oncall", for_s=1)
    await redis_client.execute_command("ACL", "SETUSER", "viewer", "on", ">pw", "~*", "&*", "+@read")
    ro = aioredis.Redis(host=valkey.host, port=valkey.port, username="viewer", password="pw")
    try:
        await asyncio.sleep(1.1)
        (free,) = [q for q in await QuotaStore(ro).list() if q.tier == "free"]
        assert (free.limit, free.expires_at, free.version, free.updated_by) == (
            20,
            None,
            3,
            "surgewatch (override expired)",
        )
        assert await redis_client.hget(K.quota("free"), "version") == b"2"
        assert await QuotaStore(ro).get("free") == free
        assert await QuotaStore(redis_client, read_only=True).get("free") == free  # --read-only: no write
        assert await redis_client.hget(K.quota("free"), "version") == b"2"
        with pytest.raises(QuotaError, match="read-only"):
            await QuotaStore(redis_client, read_only=True).pause("free", actor="viewer")
        with pytest.raises(Exception, match=r"(?i)noperm|permission"):
            await QuotaStore(ro).set("free", QuotaSpec(2, DAY), actor="viewer")
        # a writer persists the same fallback
        assert await store.get("free") == free
        assert await redis_client.hget(K.quota("free"), "version") == b"3"
    finally:
        await ro.aclose()


async def test_events_published_and_resubscribed_after_restart(store: QuotaStore, valkey: ValkeyProcess) -> None:
    """Every change publishes an event; a restart is reported once, then the subscription comes back by itself."""
    got: asyncio.Queue[QuotaEvent] = asyncio.Queue()

    async def consume() -> None:
        async for ev in quota_events(valkey.url, backoff_s=0.05, max_backoff_s=0.2):
            await got.put(ev)

    task = asyncio.create_task(consume())
    try:
        assert (await asyncio.wait_for(got.get(), 5)).kind == "resubscribed"
        await store.set("free", QuotaSpec(3, DAY), actor="alice")
        assert await asyncio.wait_for(got.get(), 5) == QuotaEvent("set", "free", 2, "alice")
        await store.client.publish(K.events, "not json")  # ignored, not fatal
        await asyncio.to_thread(valkey.restart)
        down = await asyncio.wait_for(got.get(), 10)
        assert down.kind == "disconnected" and down.error  # one per outage, however many retries
        assert (await asyncio.wait_for(got.get(), 10)).kind == "resubscribed"
        await store.init()
        ev = await asyncio.wait_for(got.get(), 5)
        assert ev.kind == "set" and ev.version == 1 and ev.tier == "free"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_event_payload_shape() -> None:
    """The channel carries JSON with tier, version, actor and kind."""
    from quotas.feed import parse_event

    assert parse_event(json.dumps({"tier": "free", "version": 3, "actor": "a", "kind": "pause"})) == QuotaEvent(
        "pause", "free", 3, "a"
    )
    assert parse_event(b"{}") is None and parse_event("[") is None


async def test_works_with_decode_responses(valkey: ValkeyProcess) -> None:
    """A client created with decode_responses=True (str replies) gets the same results."""
    from quotas.limiter import Limiter

    client = aioredis.Redis.from_url(valkey.url, decode_responses=True)
    try:
        store = QuotaStore(client)
        await store.init()
        await store.set("free", QuotaSpec(1, DAY), actor="alice", reason="r")
        assert (await store.get("free")).limit == 1  # type: ignore[union-attr]  # the tier exists: just set
        assert [e.actor for e in await store.history("free", count=1)] == ["alice"]
        lim = Limiter(client)
        assert [(d.allowed, d.reason) for d in await lim.check_many([("free", "u", 1)] * 2)] == [
            (True, "ok"),
            (False, "user_quota"),
        ]
        assert (await lim.check("free", "u")).reason == "user_quota"
        assert (await store.preview("free", QuotaSpec(0, DAY))).would_refuse == 1
    finally:
        await client.aclose()


async def test_stacked_overrides_fall_back_to_permanent_quota(store: QuotaStore) -> None:
    """An override replacing another override falls back to the last permanent quota, not the first override."""
    await store.set("plus", QuotaSpec(200, DAY), actor="t")
    await store.set("plus", QuotaSpec(50, DAY), actor="t", for_s=600)
    q = await store.set("plus", QuotaSpec(5, DAY, mode="shadow"), actor="t", for_s=1)
    await asyncio.sleep(1.1)
    now = await store.get("plus")
    assert now is not None and now.settings() == QuotaSpec(200, DAY) and now.version == q.version + 1
    assert (await store.history("plus", count=1))[0].reason == "temporary override expired"
