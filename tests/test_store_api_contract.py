"""The quota store's API contract: bounds, refusals with their messages, read-only, and what each call writes
(first written for surviving mutants of quotas/store.py: tests/README.md)."""

from __future__ import annotations

import asyncio
import re

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from quotas.connect import open_client
from quotas.errors import BrokenQuota, Conflict, UnknownTier, Unreachable
from quotas.keys import LIBRARY_NAME, Keys
from quotas.library import library_version, load_library
from quotas.model import MAX_WINDOW_S, Quota, QuotaError, QuotaSpec
from quotas.store import SEED_TIERS, QuotaStore
from sim.valkey import ValkeyProcess
from tests.cluster_fixtures import Cluster, fresh_cluster, kill  # noqa: F401

DAY = 86400
K = Keys()


async def _ended(store: QuotaStore, override: Quota) -> None:
    """Wait (hang guard: 30 s) until the server's clock has passed the override's end."""
    assert override.expires_at is not None
    async with asyncio.timeout(30):
        while True:
            secs, usecs = await store.client.time()  # the server's clock, which ends overrides
            if secs + usecs / 1e6 >= override.expires_at:
                return
            await asyncio.sleep(0.05)


async def test_an_expired_override_read_during_a_change_shows_the_change(
    store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """Bob sets free while Alice's console reads its ended override: the read answers with what the library
    stores now (Bob's 50/day), not a fallback computed from the hash read before Bob's write.

    The race is made deterministic by reading the raw hash first (as `list()` and `get()` do), letting the other
    writer set the tier, then handing the stale hash to `_read`, which persists the expiry with `sw_get`."""
    override = await store.set("free", QuotaSpec(1, DAY), actor="alice", for_s=1)
    await _ended(store, override)
    stale = await redis_client.hgetall(K.quota("free"))
    await store.set("free", QuotaSpec(50, DAY), actor="bob", reason="bigger")
    shown = await store._read("free", stale)
    assert (shown.limit, shown.updated_by, shown.expires_at) == (50, "bob", None)
    assert shown == await store.get("free")


async def test_persisting_an_ended_override_is_bounded_by_the_store_timeout(
    redis_client: aioredis.Redis,
) -> None:
    """A server that holds writes (CLIENT PAUSE WRITE, as during a manual failover) while a writer reads an ended
    override: the read ends in Unreachable after the store's own 0.5 s, not after the client's socket timeout."""
    store = QuotaStore(redis_client, timeout_s=0.5)
    await store.init()
    override = await store.set("free", QuotaSpec(1, DAY), actor="alice", for_s=1)
    await _ended(store, override)
    await redis_client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        async with asyncio.timeout(30):  # a hang guard, not a timing assertion
            with pytest.raises(Unreachable, match=r"no answer within 0\.5 s"):
                await store.get("free")
    finally:
        await redis_client.execute_command("CLIENT", "UNPAUSE")


async def test_a_quota_key_of_the_wrong_type_is_a_broken_quota_named_so(
    store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """Someone wrote free's quota key as a string: `get` raises BrokenQuota naming the tier, saying the key is not
    a hash and how to repair it."""
    await redis_client.delete(K.quota("free"))
    await redis_client.set(K.quota("free"), "20/day")
    with pytest.raises(BrokenQuota) as e:
        await store.get("free")
    assert (e.value.tier, e.value.what) == ("free", "the quota key is not a hash")
    assert str(e.value) == (
        "the stored quota of tier 'free' is broken (the quota key is not a hash); "
        "repair it with `surgewatch quota set free LIMIT/WINDOW`"
    )


async def test_a_shard_lost_for_good_makes_quota_list_an_outage_naming_the_server(
    fresh_cluster: Cluster,  # noqa: F811
) -> None:
    """free's master and its replica are killed while the rest of the cluster serves: `list` raises Unreachable
    naming the server the client was given and the driver's lost-connection error, never a broken quota."""
    master = fresh_cluster.owner(key_slot(K.quota("free").encode()))
    replica = fresh_cluster.replica_of(master)
    for n in fresh_cluster.nodes:
        with fresh_cluster.client(n) as c:
            c.config_set("cluster-require-full-coverage", "no")
    start = next(n for n in fresh_cluster.masters if n is not master)
    rc = await open_client(start.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        store = QuotaStore(rc)
        await store.init()
        assert "free" in [q.tier for q in await store.list()]
        kill(replica)
        kill(master)
        with pytest.raises(Unreachable) as e:
            await store.list()
        prefix = f"Redis at {start.host}:{start.port} is unreachable: "
        msg = str(e.value)
        assert msg.startswith(prefix) and "broken" not in msg, msg
        assert re.search(r"(?i)connect", msg.removeprefix(prefix)), msg  # the driver's error, as it said it
    finally:
        await rc.aclose()


async def test_a_server_holding_writes_ends_each_write_in_unreachable_after_the_store_timeout(
    valkey: ValkeyProcess, redis_client: aioredis.Redis
) -> None:
    """CLIENT PAUSE WRITE (as in a manual failover): a read still answers; creating a tier (its registry SADD) and
    changing one (the FCALL) each end in Unreachable naming the server and the store's own 0.5 s."""
    store = QuotaStore(redis_client, timeout_s=0.5)
    await store.init()
    await redis_client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        free = await store.get("free")
        assert free is not None and free.limit == 20
        for create in (True, False):
            async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                with pytest.raises(Unreachable) as e:
                    await store.set("vip" if create else "free", QuotaSpec(1, DAY), actor="alice", create=create)
            assert str(e.value) == f"Redis at {valkey.host}:{valkey.port} is unreachable: no answer within 0.5 s"
    finally:
        await redis_client.execute_command("CLIENT", "UNPAUSE")


async def test_a_store_waits_five_seconds_for_a_server_unless_told(valkey: ValkeyProcess) -> None:
    """A store made without a timeout, on a client without a socket timeout, gives a write held by the server
    5 s before it says Unreachable."""
    client = aioredis.Redis(host=valkey.host, port=valkey.port)
    try:
        store = QuotaStore(client)
        await store.init()
        await client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        try:
            async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                with pytest.raises(Unreachable, match=r"no answer within 5 s$"):
                    await store.set("free", QuotaSpec(1, DAY), actor="alice")
        finally:
            await client.execute_command("CLIENT", "UNPAUSE")
    finally:
        await client.aclose()


async def test_a_read_only_store_refuses_every_write_with_one_message(redis_client: aioredis.Redis) -> None:
    """The console's --read-only: init, set, pause and resume are each refused with the same sentence, and the
    server stays empty."""
    ro = QuotaStore(redis_client, read_only=True)
    writes = [
        lambda: ro.init(),
        lambda: ro.set("free", QuotaSpec(1, DAY), actor="alice", create=True),
        lambda: ro.pause("free", actor="alice"),
        lambda: ro.resume("free", actor="alice"),
    ]
    for write in writes:
        with pytest.raises(QuotaError) as e:
            await write()
        assert str(e.value) == "this quota store is read-only: nothing is written"
    assert await redis_client.keys("*") == []


async def test_bad_arguments_are_refused_with_their_messages(store: QuotaStore) -> None:
    """A quota that is not a QuotaSpec, an expected version that is not a whole number from 0 and an override
    length outside 1 s..31 d are each refused, naming what was given; 31 d itself is accepted."""
    with pytest.raises(QuotaError) as e:
        await store.set("free", "20/day", actor="alice")  # type: ignore[arg-type]  # what a careless caller passes
    assert str(e.value) == "invalid quota: a QuotaSpec is expected"
    for version in (-1, True, "3", 1.5):
        with pytest.raises(QuotaError) as e:
            await store.set("free", QuotaSpec(1, DAY), actor="alice", expect_version=version)  # type: ignore[arg-type]
        assert str(e.value) == f"invalid expected version {version!r}: a whole number from 0"
    for for_s in (0, True, "60", MAX_WINDOW_S + 1):
        with pytest.raises(QuotaError) as e:
            await store.set("free", QuotaSpec(1, DAY), actor="alice", for_s=for_s)  # type: ignore[arg-type]
        assert str(e.value) == f"invalid duration {for_s!r}: an override lasts from 1s to 31d"
    longest = await store.set("free", QuotaSpec(1, DAY), actor="alice", for_s=MAX_WINDOW_S)
    assert longest.expires_at is not None and round(longest.expires_at - longest.updated_at) == MAX_WINDOW_S


async def test_a_set_without_a_reason_audits_an_empty_one_and_never_creates(store: QuotaStore) -> None:
    """A set without `reason` writes an empty reason into the audit; a set of an unknown tier without `create` is
    refused, naming the tier and the option that creates it."""
    await store.set("free", QuotaSpec(7, DAY), actor="alice")
    (entry,) = await store.history("free", count=1)
    assert (entry.actor, entry.reason, entry.kind) == ("alice", "", "set")
    with pytest.raises(UnknownTier) as e:
        await store.set("vip", QuotaSpec(7, DAY), actor="alice")
    assert str(e.value) == ("unknown tier 'vip': create it with `surgewatch quota set vip LIMIT/WINDOW --create` "
                            "(see `surgewatch quota list`)")
    assert await store.get("vip") is None


async def test_a_lost_compare_and_set_names_the_tier_the_version_expected_and_the_quota_now(
    store: QuotaStore,
) -> None:
    """Alice read free at version 1; Bob changed it; Alice's set expecting version 1 raises Conflict carrying the
    tier, the version she expected and Bob's quota."""
    bobs = await store.set("free", QuotaSpec(30, DAY), actor="bob", expect_version=1)
    with pytest.raises(Conflict) as e:
        await store.set("free", QuotaSpec(10, DAY), actor="alice", expect_version=1)
    assert (e.value.tier, e.value.expected, e.value.current) == ("free", 1, bobs)
    assert "you expected version 1" in str(e.value) and "changed by bob" in str(e.value)


async def test_pausing_a_broken_quota_names_what_the_library_found(
    store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """free's limit was hand-edited to junk: pause (which needs a readable quota) raises BrokenQuota for free with
    the library's own description of the junk field."""
    await redis_client.hset(K.quota("free"), "limit", "lots")
    with pytest.raises(BrokenQuota) as e:
        await store.pause("free", actor="alice")
    assert e.value.tier == "free" and "limit" in e.value.what and "lots" in e.value.what, e.value.what


async def test_init_seeds_what_is_absent_keeps_what_exists_and_names_the_library_it_found(
    redis_client: aioredis.Redis,
) -> None:
    """An operator created plus before the first init: init loads the library (none before), seeds the other four
    tiers as "surgewatch init" with its reason, keeps plus; a second init finds this library and creates nothing."""
    store = QuotaStore(redis_client)
    await load_library(redis_client)
    await store.set("plus", QuotaSpec(5, DAY), actor="alice", create=True)
    await redis_client.function_delete(LIBRARY_NAME)  # the server has plus, but no library yet
    assert await store.init() == [t for t in SEED_TIERS if t != "plus"]
    assert store.library_before is None
    plus, free = await store.get("plus"), await store.get("free")
    assert plus is not None and free is not None and (plus.limit, free.limit) == (5, SEED_TIERS["free"][0])
    (seeded,) = await store.history("free")
    assert (seeded.actor, seeded.reason) == ("surgewatch init", "seed default quota")
    again = QuotaStore(redis_client)
    assert await again.init() == [] and again.library_before == library_version()


async def test_a_new_store_has_skipped_nothing_and_seen_no_library(redis_client: aioredis.Redis) -> None:
    """Before its first `list()` and `init()` a store reports no skipped and no missing tiers and no library seen
    (what `quota list`/`export` and `init` print from)."""
    store = QuotaStore(redis_client)
    assert (store.broken, store.missing, store.library_before) == ({}, [], None)
