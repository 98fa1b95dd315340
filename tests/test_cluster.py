"""The library, the limiter and the store, unchanged, on a 3-master Valkey cluster on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import cast

import pytest
import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from quotas.keys import Keys
from quotas.library import library_version
from quotas.limiter import Limiter
from quotas.model import QuotaSpec
from quotas.store import SEED_TIERS, QuotaStore
from sim.valkey import ValkeyProcess

SLOTS = [(0, 5460), (5461, 10922), (10923, 16383)]


def owner(rc: RedisCluster, key: str) -> ClusterNode:
    """The master that serves a key's slot (an initialized client knows every slot)."""
    node = rc.get_node_from_key(key)
    assert node is not None, f"no node serves {key}"
    return node


def port_of(node: ClusterNode) -> int:
    """A node's port: an int from CLUSTER SLOTS (the stubs allow str for a node built by hand)."""
    return cast(int, node.port)


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[ValkeyProcess]]:
    """Three cluster-enabled masters joined with CLUSTER MEET and ADDSLOTSRANGE from redis-py."""
    nodes = [ValkeyProcess(cluster=True) for _ in range(3)]
    try:
        for n in nodes:
            n.start()
        clients = [redis.Redis(host=n.host, port=n.port, socket_timeout=5) for n in nodes]
        for c, (lo, hi) in zip(clients, SLOTS, strict=True):
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for n in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", n.host, n.port, n.cluster_port)
        deadline = time.monotonic() + 20
        while not all(c.cluster("info")["cluster_state"] == "ok" for c in clients):
            assert time.monotonic() < deadline, "cluster did not reach cluster_state:ok"
            time.sleep(0.1)
        for c in clients:
            c.close()
        yield nodes
    finally:
        for n in nodes:
            n.close()


@pytest.fixture
async def rc(cluster: list[ValkeyProcess]) -> AsyncIterator[RedisCluster]:
    """An asyncio RedisCluster client on the test cluster, emptied first."""
    client = RedisCluster(host=cluster[0].host, port=cluster[0].port, socket_timeout=5)
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    await client.function_flush()  # FUNCTION FLUSH goes to every primary
    try:
        yield client
    finally:
        await client.aclose()


async def test_tiers_spread_over_masters(rc: RedisCluster) -> None:
    """The seeded tiers' hash tags land on more than one master, so the test exercises real routing."""
    slots = {rc.keyslot(Keys().quota(t)) for t in SEED_TIERS}
    owners = {owner(rc, Keys().quota(t)).name for t in SEED_TIERS}
    assert len(slots) == len(SEED_TIERS) and len(owners) >= 2


async def test_store_and_limiter_on_cluster(rc: RedisCluster, cluster: list[ValkeyProcess]) -> None:
    """init loads the library on every master; set, list, history, check and check_many work unchanged."""
    store = QuotaStore(rc)
    assert await store.init() == list(SEED_TIERS)
    for n in cluster:
        with redis.Redis(host=n.host, port=n.port) as c:
            assert c.fcall_ro("sw_version", 0) == library_version()
    await store.set("free", QuotaSpec(2, 86400), actor="alice", reason="surge")
    await store.pause("team", actor="bob")
    assert [q.tier for q in await store.list()] == sorted(SEED_TIERS)
    assert [(e.tier, e.actor) for e in await store.history(count=2)] == [("team", "bob"), ("free", "alice")]
    lim = Limiter(rc)
    assert [(await lim.check("free", "u")).allowed for _ in range(3)] == [True, True, False]
    got = await lim.check_many([(t, "u", 1) for t in sorted(SEED_TIERS)] + [("free", "v", 1)])
    assert [d.reason for d in got] == ["ok", "user_quota", "ok", "ok", "paused", "ok"]
    impact = await store.preview("free", QuotaSpec(1, 86400))
    assert (impact.total_admitted, impact.would_refuse_user) == (3, 1)


async def test_cluster_master_lost_library_is_reloaded(rc: RedisCluster, cluster: list[ValkeyProcess]) -> None:
    """A master that lost the library (FUNCTION FLUSH) gets it back from the next check by itself."""
    await QuotaStore(rc).init()
    node = owner(rc, Keys().quota("pro"))
    with redis.Redis(host=node.host, port=port_of(node)) as c:
        c.function_flush()
    assert (await Limiter(rc).check("pro", "u")).allowed
    with redis.Redis(host=node.host, port=port_of(node)) as c:
        assert c.fcall_ro("sw_version", 0) == library_version()


def test_plain_client_sees_moved(cluster: list[ValkeyProcess]) -> None:
    """Sanity: the nodes really are one cluster (a key of another master answers MOVED)."""
    with redis.Redis(host=cluster[0].host, port=cluster[0].port) as c:
        assert c.cluster("info")["cluster_known_nodes"] == "3"
        assert c.get("{b}") is None  # slot 3300: node 0's own
        with pytest.raises(redis.exceptions.MovedError):
            c.get("{a}")  # slot 15495: the third master's


async def test_events_reach_a_subscriber_on_any_node(rc: RedisCluster, cluster: list[ValkeyProcess]) -> None:
    """A change published by the library on one master reaches a subscriber connected to another."""
    import asyncio

    import redis.asyncio as aioredis

    from quotas.feed import quota_events

    store = QuotaStore(rc)
    await store.init()
    owner_port = port_of(owner(rc, Keys().quota("free")))
    other = next(n for n in cluster if n.port != owner_port)
    events = quota_events(lambda: aioredis.Redis(host=other.host, port=other.port))
    try:
        assert (await asyncio.wait_for(anext(events), 5)).kind == "resubscribed"
        await store.set("free", QuotaSpec(3, 86400), actor="alice")
        ev = await asyncio.wait_for(anext(events), 5)
        while ev.actor == "surgewatch init":  # init's own events may cross the cluster bus after the subscribe
            ev = await asyncio.wait_for(anext(events), 5)
        assert (ev.kind, ev.tier, ev.version, ev.actor) == ("set", "free", 2, "alice")
    finally:
        await events.aclose()
