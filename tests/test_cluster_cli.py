"""Every CLI command and `snapshot --json` against a real 3-master, 3-replica Valkey cluster and a real Sentinel."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from quotas.keys import Keys
from quotas.library import library_version
from sim.valkey import ValkeyProcess
from tests.cluster_fixtures import Cluster, SentinelGroup, cluster, flush, sentinel_group  # noqa: F401
from tests.conftest import ROOT


def cli(url: str, *argv: str, stdin: str | None = None, extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "surgewatch.cli", "--redis", url, *extra, *argv], cwd=ROOT, input=stdin,
        capture_output=True, text=True, timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def empty(cluster: Cluster) -> Iterator[Cluster]:  # noqa: F811
    """The module's cluster, emptied of data and functions."""
    flush(cluster)
    yield cluster


def test_init_and_every_quota_command_on_one_node_url(empty: Cluster) -> None:
    """Given one node's URL, surgewatch finds the cluster: init, list, set, pause, resume, history all work."""
    url = empty.url
    code, out, err = cli(url, "init")
    assert code == 0, err
    assert f"loaded functions library surgewatch v{library_version()}" in out and "tier free: 20/1d created" in out
    for n in empty.masters:  # the library is on every primary
        with empty.client(n) as c:
            assert c.fcall_ro("sw_version", 0) == library_version()
    code, out, err = cli(url, "quota", "list", "--json")
    assert code == 0, err
    assert [q["tier"] for q in json.loads(out)] == ["free", "plus", "pro", "team", "enterprise"]  # by quota size
    code, out, err = cli(url, "quota", "set", "free", "3/1d", "--reason", "surge", "--as", "alice")
    assert (code, err) == (0, "") and out.startswith("set free 3/1d cap none enforce v2 by alice")
    assert cli(url, "quota", "pause", "pro", "--as", "bob")[0] == 0
    assert cli(url, "quota", "resume", "pro", "--as", "bob")[0] == 0
    code, out, err = cli(url, "quota", "history", "--json", "--count", "3")
    assert code == 0, err
    assert [(e["tier"], e["actor"], e["version"]) for e in json.loads(out)] == [
        ("pro", "bob", 3), ("pro", "bob", 2), ("free", "alice", 2)]  # every tier's stream, merged newest first
    code, out, _ = cli(url, "quota", "set", "nosuch", "3/1d")
    assert code == 2 and "unknown tier 'nosuch'" in _


def test_export_import_and_snapshot_with_startup_nodes(empty: Cluster, tmp_path: Path) -> None:
    """Comma-separated startup nodes: export, a flushed cluster, import restores every tier; snapshot --json
    lists the tiers, each with the master that serves it."""
    url = empty.startup_url
    assert cli(url, "init")[0] == 0
    assert cli(url, "quota", "set", "team", "50/1h", "--as", "carol")[0] == 0
    code, backup, err = cli(url, "quota", "export")
    assert code == 0, err
    flush(empty)
    assert cli(url, "init")[0] == 0  # the library back, the seeds back at version 1
    file = tmp_path / "quotas.json"
    file.write_text(backup)
    code, out, err = cli(url, "quota", "import", str(file), "--as", "dave")
    assert code == 0, err
    assert "tier team: written" in out
    code, out, err = cli(url, "snapshot", "--json", "--no-local")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["errors"] == {} and doc["redis"] == {"status": "ok", "error": None}
    tiers = {t["tier"]: t for t in doc["tiers"]}
    assert (tiers["team"]["limit"], tiers["team"]["window_s"], tiers["team"]["state"]) == (50, 3600, "active")
    serving = {f"{n.host}:{n.port}" for n in empty.masters}
    assert {t["master"] for t in doc["tiers"]} <= serving and len({t["master"] for t in doc["tiers"]}) >= 2


def test_cluster_mode_forced_on_a_lone_server_is_a_setting_to_change_not_an_outage(valkey: ValkeyProcess) -> None:
    """--redis-cluster on a server without cluster mode: exit 2 saying to drop the flag, never "unreachable"."""
    code, _, err = cli(valkey.url, "quota", "list", extra=("--redis-cluster",))
    assert code == 2 and "not a cluster member" in err and "--redis-cluster" in err and "unreachable" not in err


def test_forced_cluster_flag_and_a_key_read_only_user(empty: Cluster) -> None:
    """--redis-cluster skips the detection; a user that may only read keys (no INFO) still gets the cluster."""
    assert cli(empty.url, "init", extra=("--redis-cluster",))[0] == 0
    for n in empty.nodes:
        with empty.client(n) as c:
            c.execute_command("ACL", "SETUSER", "viewer", "on", ">pw", "~*", "&*", "+@read", "+@connection",
                              "-info", "+cluster|slots", "+cluster|shards", "+cluster|nodes")
    viewer = empty.url.replace("redis://", "redis://viewer:pw@")
    code, out, err = cli(viewer, "quota", "list", "--json")
    assert code == 0, err
    assert len(json.loads(out)) == 5 and "pw" not in err


def test_bad_urls_are_refused_before_connecting() -> None:
    """A malformed cluster or Sentinel URL: exit 2, a message naming the accepted forms, never the password."""
    for url, words in [
        ("redis://:secret@a:7000,redis://b:7000/3", "a cluster has only database 0"),
        ("redis://:secret@a:7000,rediss://b:7000", "all redis:// or all rediss://"),
        ("redis+sentinel://:secret@127.0.0.1:26379", "no master name"),
        ("redis+sentinel://127.0.0.1:99999/mymaster", "not a number"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/x", "the database 'x' is not a number"),
        ("redis://a:7000,,b:7000", "an empty startup node"),
    ]:
        code, _out, err = cli(url, "quota", "list")
        assert code == 2 and words in err and "redis+sentinel://[user:password@]host:26379" in err, (url, err)
        assert "secret" not in err


def test_sentinel_commands_and_snapshot(sentinel_group: SentinelGroup) -> None:  # noqa: F811
    """Through a Sentinel: init writes to the current master, a change is there, snapshot names the master."""
    url = sentinel_group.url
    code, out, err = cli(url, "init")
    assert code == 0, err
    assert cli(url, "quota", "set", "free", "3/1d", "--as", "alice")[0] == 0
    with redis.Redis(port=sentinel_group.current_master()) as m:
        assert m.hget(Keys().quota("free"), "limit") == b"3"
    code, out, err = cli(url, "snapshot", "--json", "--no-local")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["redis"]["status"] == "ok" and {t["master"] for t in doc["tiers"]} == {
        f"127.0.0.1:{sentinel_group.current_master()}"}
    code, _, err = cli("redis+sentinel://127.0.0.1:1/mymaster", "quota", "list")
    assert code == 4 and "unreachable" in err  # no Sentinel answers: an outage, within the deadline


def test_tls_and_acl_users_reach_every_client_kind() -> None:
    """rediss:// startup nodes and rediss+sentinel:// build TLS connections with the URL's user (the test
    binary has no TLS, so this checks the clients built, not a handshake)."""
    from redis.asyncio.connection import SSLConnection
    from redis.asyncio.sentinel import SentinelManagedSSLConnection

    from quotas.connect import cluster_client, sentinel_client
    from quotas.redis_url import parse_target

    rc = cluster_client(parse_target("rediss://alice:pw@a:7000,b:7001").nodes, socket_timeout=2)
    kw: Any = rc.get_connection_kwargs()
    assert issubclass(kw["connection_class"], SSLConnection) and (kw["username"], kw["password"]) == ("alice", "pw")
    assert sorted(rc.nodes_manager.startup_nodes) == ["a:7000", "b:7001"]
    sc: Any = sentinel_client(parse_target("rediss+sentinel://alice:pw@s1:26379,s2/mymaster/2"))
    pool = sc.connection_pool
    assert issubclass(pool.connection_class, SentinelManagedSSLConnection)
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["db"], pool.service_name) == ("alice", 2,
                                                                                                    "mymaster")
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in sc.sentinels.sentinels] == [("s1", 26379), ("s2", 26379)]


async def test_a_plain_client_on_a_cluster_node_is_never_called_refused(empty: Cluster) -> None:
    """A caller that reads a cluster node as one server (no detection) gets MOVED named as the cluster it is."""
    import redis.asyncio as aioredis

    from collectors.traffic import TrafficCollector

    assert cli(empty.url, "init")[0] == 0
    plain = aioredis.Redis.from_url(empty.url)
    try:
        sample = await TrafficCollector(plain).poll()
    finally:
        await plain.aclose()
    assert sample.redis.status == "unavailable" and sample.redis.error is not None
    assert "lives on another Redis Cluster node" in sample.redis.error
    assert "the server refused" not in sample.redis.error
    assert "no tier at all" not in sample.redis.error  # an unread registry is not an empty one
