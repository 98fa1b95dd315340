"""Failovers survived during traffic: a cluster master handing over to its replica (CLUSTER FAILOVER), a
cluster master killed with SIGKILL, and a Sentinel failover after its master is killed. Limiter decisions
follow fail_open, no quota write is half-applied, the console names the switch and everything resumes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.crc import key_slot

from quotas.connect import open_client
from quotas.errors import Conflict, Unreachable
from quotas.keys import Keys
from quotas.limiter import Limiter
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from surgewatch.settings import Settings
from tests.cluster_fixtures import Cluster, SentinelGroup, fresh_cluster, kill, sentinel_group, until  # noqa: F401
from tui.app import SurgewatchApp, create_app
from tui.testing import wait_until

FREE_SLOT = key_slot(Keys().quota("free").encode())


@dataclass
class Traffic:
    """Gateways deciding and an operator writing, all through the switch."""

    open_decisions: int = 0
    closed_decisions: int = 0
    closed_errors: list[BaseException] = field(default_factory=list)
    other_errors: list[BaseException] = field(default_factory=list)
    writes_ok: int = 0
    writes_failed: int = 0


async def _gateways(client: Any, t: Traffic, stop: asyncio.Event) -> None:
    """Two gateways on the same Redis: one fails open, one fails closed."""
    open_ = Limiter(client, fail_open=True, timeout_s=0.5)
    closed = Limiter(client, fail_open=False, timeout_s=0.5)
    i = 0
    try:
        while not stop.is_set():
            i += 1
            try:
                d = await open_.check("free", f"u{i % 50}")
                t.open_decisions += 1
                assert d.reason in ("ok", "user_quota", "tier_cap")
            except Exception as e:  # fail_open never raises for an outage
                t.other_errors.append(e)
            try:
                await closed.check("free", f"v{i % 50}")
                t.closed_decisions += 1
            except Unreachable as e:  # fail closed: an outage is Unreachable (Unavailable), never anything else
                t.closed_errors.append(e)
            except Exception as e:
                t.other_errors.append(e)
            await asyncio.sleep(0.01)
    finally:
        await open_.aclose()
        await closed.aclose()


async def _operator(store: QuotaStore, t: Traffic, stop: asyncio.Event) -> None:
    """Quota writes with compare-and-set, through the switch; each either happens or does not."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            cur = await store.get("free")
            await store.set("free", QuotaSpec(1000 + n % 7, 86400), actor="oncall", reason=f"write {n}",
                            expect_version=cur.version if cur else None)
            t.writes_ok += 1
        except (Unreachable, Conflict):
            t.writes_failed += 1
        await asyncio.sleep(0.05)


async def _consistent(store: QuotaStore) -> None:
    """Nothing half-applied: the stored version is the number of audit entries, the newest one wrote it."""
    q = await store.get("free")
    entries = await store.history("free", count=10_000)
    assert q is not None and len(entries) == q.version
    assert entries[0].new is not None and (entries[0].new.limit, entries[0].version) == (q.limit, q.version)


async def _watch(app: SurgewatchApp, banners: list[str], stop: asyncio.Event) -> None:
    """Every banner the console shows, as an operator glancing at it would see them."""
    while not stop.is_set():
        banners.append(app.state.banner()[1])
        await asyncio.sleep(0.05)


async def survive(url: str, failover: Callable[[], Awaitable[str]],
                  banner: str | tuple[str, ...] | None = None) -> str:
    """Traffic and a console on `url`, then `failover()` (returns free's new master): the assertions above;
    with `banner`, a banner containing it was shown during the switch. Returns the header after it."""
    client = await open_client(url, socket_timeout=1, socket_connect_timeout=1)
    store = QuotaStore(client, timeout_s=2.0)
    await store.init()
    app: SurgewatchApp = create_app(Settings(redis_url=url, interval_s=0.2), sources=["traffic"], actor="tester")
    t, stop = Traffic(), asyncio.Event()
    banners: list[str] = []

    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await wait_until(pilot, lambda: "free" in app.state.quotas and app.state.traffic is not None
                             and app.state.traffic.tiers, what="tiers shown", timeout=20)
            old = next(x.master for x in app.state.traffic.tiers if x.tier == "free")  # type: ignore[union-attr]  # the traffic sample was awaited above
            tasks = [asyncio.create_task(_gateways(client, t, stop)), asyncio.create_task(_operator(store, t, stop)),
                     asyncio.create_task(_watch(app, banners, stop))]
            await wait_until(pilot, lambda: t.writes_ok >= 2 and t.closed_decisions >= 5, what="traffic", timeout=20)
            new = await failover()
            assert new != old
            moved = f"Redis master for tier free moved to {new}"
            await wait_until(pilot, lambda: any(moved in e.text for e in app.state.events), what=moved,
                             timeout=30)
            # resumes by itself: decisions answered again, the banner gone, a change reaches the console
            before = t.closed_decisions
            await wait_until(pilot, lambda: t.closed_decisions > before + 5 and not app.state.banner()[1],
                             what="decisions and a calm banner again", timeout=30)
            stop.set()
            await asyncio.gather(*tasks)
            await _consistent(store)
            q = await store.set("free", QuotaSpec(7, 86400), actor="after", reason="after the failover")
            await wait_until(pilot, lambda: app.state.quotas["free"].version == q.version, what="change shown",
                             timeout=20)
            header = str(app.sub_title)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await client.aclose()
    assert t.other_errors == [], t.other_errors[:3]
    assert t.open_decisions > 0 and t.closed_decisions > 0 and t.writes_ok > 0
    if banner is not None:
        # a tuple: any of these words (a loaded machine may cut the poll off before it names the node)
        wanted = (banner,) if isinstance(banner, str) else banner
        assert any(w in b for b in banners for w in wanted), sorted(set(banners))
    return header


async def test_cluster_failover_command(fresh_cluster: Cluster) -> None:  # noqa: F811
    """CLUSTER FAILOVER on the replica of free's master: the console names the new master, nothing is lost."""
    master = fresh_cluster.owner(FREE_SLOT)
    replica = fresh_cluster.replica_of(master)

    async def failover() -> str:
        with fresh_cluster.client(replica) as c:
            c.execute_command("CLUSTER", "FAILOVER")
        await asyncio.to_thread(until, lambda: fresh_cluster.owner(FREE_SLOT) is replica, "replica took over")
        return f"{replica.host}:{replica.port}"

    header = await survive(fresh_cluster.url, failover)
    assert header.endswith("· cluster of 3 masters")


async def test_cluster_master_killed(fresh_cluster: Cluster) -> None:  # noqa: F811
    """free's master killed with SIGKILL: its replica is elected; during the switch the banner names the node."""
    master = fresh_cluster.owner(FREE_SLOT)
    replica = fresh_cluster.replica_of(master)

    async def failover() -> str:
        kill(master)
        await asyncio.to_thread(until, lambda: fresh_cluster.owner(FREE_SLOT) is replica, "replica elected")
        return f"{replica.host}:{replica.port}"

    start = next(n for n in fresh_cluster.masters if n is not master)  # the console's URL outlives the kill
    # during the switch the banner names the silent node, or (a poll cut off first on a loaded machine) the
    # timeout; the event naming the new master is asserted by survive() either way
    await survive(start.url, failover, banner=(f"Redis cluster node {master.host}:{master.port} (master of tier",
                                                "Redis unreachable: timed out after"))


async def test_sentinel_failover(sentinel_group: SentinelGroup) -> None:  # noqa: F811
    """The Sentinel's master killed: the Sentinel promotes the replica, the client follows, the header says so."""
    g = sentinel_group

    async def failover() -> str:
        kill(g.master)
        await asyncio.to_thread(until, lambda: g.current_master() == g.replica.port, "sentinel failover")
        return f"127.0.0.1:{g.replica.port}"

    header = await survive(g.url, failover, banner="Redis unreachable")
    assert header.endswith(f"· master 127.0.0.1:{g.replica.port}")


async def test_a_shard_lost_for_good_costs_only_its_tiers(fresh_cluster: Cluster) -> None:  # noqa: F811
    """free's master and its replica both killed (the rest of the cluster serving, full coverage off):
    `quota list` is an outage (exit 4), never a broken quota; snapshot names the node and keeps every other tier."""
    from tests.test_cluster_cli import cli

    master = fresh_cluster.owner(FREE_SLOT)
    replica = fresh_cluster.replica_of(master)
    for n in fresh_cluster.nodes:
        with fresh_cluster.client(n) as c:
            c.config_set("cluster-require-full-coverage", "no")
    start = next(n for n in fresh_cluster.masters if n is not master)
    assert cli(start.url, "init")[0] == 0
    kill(replica)
    kill(master)
    code, _, err = await asyncio.to_thread(cli, start.url, "quota", "list")
    assert code == 4 and "unreachable" in err and "broken" not in err, err
    code, out, err = await asyncio.to_thread(cli, start.url, "snapshot", "--json", "--no-local")
    import json

    doc = json.loads(out)
    assert code == 0 and doc["redis"]["status"] == "unavailable", doc["redis"]
    assert f"Redis cluster node {master.host}:{master.port} (master of tier" in doc["redis"]["error"]
    shown = {t["tier"] for t in doc["tiers"]}
    assert "free" not in shown and shown and all(t["state"] == "active" for t in doc["tiers"])
