"""Every Redis client surgewatch opens, built from one URL: a single server, a Redis Cluster, or Sentinel.

The URL forms (`quotas.redis_url.parse_target` checks them before any connection: a bad one is exit 2):

- `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS), `unix:///path/to.sock[?db=N]`: one
  server. If it is a cluster node (`INFO cluster` says `cluster_enabled:1`, or a key read answers
  MOVED where an ACL forbids INFO), the cluster client is used from then on, with it as startup node.
- `redis://a:7000,redis://b:7000` (or `redis://a:7000,b:7000`: a part without a scheme takes the
  first's scheme and credentials): startup nodes of a cluster.
- `redis+sentinel://[user:password@]host:26379[,host2:26379]/MASTER[/DB]` (`rediss+sentinel://`: TLS):
  the current master of the service MASTER, found through the Sentinels and followed across a
  failover. The credentials are the master's; the Sentinels are asked without them.

`force_cluster` (`--redis-cluster`) skips the detection. The timeouts and options a caller passes go
to whichever client is built (redis-py's asyncio `Redis`, `RedisCluster`, or a Sentinel-managed `Redis`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis._parsers import AsyncCommandsParser
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import AskError, MovedError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from quotas.keys import DEFAULT_PREFIX, Keys
from quotas.library import UNREACHABLE_ERRORS, unreachable
from quotas.redis_url import Target, parse_target, shown

DETECT_TIMEOUT_S = 3.0  # the cluster probe; the caller's own deadline bounds the rest

__all__ = [
    "Connector",
    "ShardedPipeline",
    "Target",
    "is_cluster",
    "is_redirect",
    "lost_midway",
    "master_address",
    "open_client",
    "parse_target",
    "retry_once",
    "shown",
]


def _node_kwargs(node_url: str, options: dict[str, Any]) -> tuple[ClusterNode, dict[str, Any]]:
    """A startup node and the connection options its URL gives (user, password, TLS, query options)."""
    parsed: dict[str, Any] = dict(parse_url(node_url))
    cls = parsed.pop("connection_class", None)
    node = ClusterNode(parsed.pop("host"), parsed.pop("port", 6379))
    parsed.pop("db", None)
    if cls is not None and issubclass(cls, SSLConnection):
        parsed["ssl"] = True
    return node, {**parsed, **options}


class _Commands(AsyncCommandsParser):
    """redis-py's cluster key parser, with two fixes. It reads the command table (COMMAND) from the first
    primary when it (re)initializes: one that is down would make a cluster that lost a shard unusable for
    every new client; any primary that answers will do. And it asks that node for the keys of every FCALL
    (COMMAND GETKEYS: a second round trip per limiter decision, and every FCALL failing while that node is
    down); FCALL names its keys itself, as EVAL does, which redis-py parses locally."""

    async def get_keys(self, *args: Any) -> Any:
        if len(args) >= 3 and str(args[0]).upper() in ("FCALL", "FCALL_RO"):
            return tuple(args[3:3 + int(args[2])]) or None  # FCALL name numkeys key ... arg ...
        return await super().get_keys(*args)

    def __init__(self, client: RedisCluster) -> None:
        super().__init__()
        self._client = client

    async def initialize(self, node: Any = None) -> None:
        candidates = [node, *self._client.get_primaries()] if node is not None else [None]
        for i, n in enumerate(candidates):
            try:
                return await super().initialize(n)
            except UNREACHABLE_ERRORS:
                if i == len(candidates) - 1:
                    raise


def cluster_client(nodes: tuple[str, ...], **options: Any) -> RedisCluster:
    """redis-py's asyncio cluster client on these startup nodes, with the caller's options."""
    startup = []
    merged: dict[str, Any] = {}
    for n in nodes:
        node, kw = _node_kwargs(n, options)
        startup.append(node)
        merged = merged or kw
    client = RedisCluster(startup_nodes=startup, **merged)
    client.commands_parser = _Commands(client)
    return client


async def lost_midway(aw: Awaitable[Any]) -> Any:
    """await `aw`; the AttributeError redis-py's cluster client raises when a failing node's connection is
    closed under a command still using it (its writer gone) is the lost connection it stands for."""
    try:
        return await aw
    except AttributeError as e:
        raise RedisConnectionError(f"connection lost during a cluster failover ({e})") from e


class ShardedPipeline:
    """A pipeline of keyed reads on a cluster, sent as one pipeline per shard at once: a shard that does not
    answer costs its own commands (each reply is then the error), never the others' (redis-py's single
    cluster pipeline can fail whole). Same calls as a pipeline: `pipe.hgetall(key)`, `execute(...)`."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def add(*args: Any, **kwargs: Any) -> ShardedPipeline:
            self.calls.append((method, args, kwargs))
            return self
        return add

    async def execute(self, raise_on_error: bool = False) -> list[Any]:
        groups: dict[str, list[int]] = {}
        for i, (_, args, _) in enumerate(self.calls):
            node = self.client.get_node_from_key(args[0])
            groups.setdefault(node.name if node is not None else "", []).append(i)

        async def shard(indexes: list[int]) -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for i in indexes:
                method, args, kwargs = self.calls[i]
                getattr(pipe, method)(*args, **kwargs)
            return list(await lost_midway(pipe.execute(raise_on_error=raise_on_error)))

        results = await asyncio.gather(*(shard(ix) for ix in groups.values()), return_exceptions=True)
        replies: list[Any] = [None] * len(self.calls)
        for indexes, got in zip(groups.values(), results, strict=True):
            if isinstance(got, BaseException) and not isinstance(got, UNREACHABLE_ERRORS):
                raise got
            for j, i in enumerate(indexes):
                replies[i] = got if isinstance(got, BaseException) else got[j]
        if replies and all(isinstance(r, BaseException) for r in replies):
            raise replies[0]  # no shard answered: the caller's outage
        return replies


class _SentinelRedis(aioredis.Redis):
    """The master's client; closing it also closes its connections to the Sentinels."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            with contextlib.suppress(Exception):
                await self.sentinels.aclose()


def sentinel_client(target: Target, **options: Any) -> aioredis.Redis:
    """The current master of `target.service`, through its Sentinels (followed across a failover)."""
    socket = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=socket)
    client = sentinel.master_for(target.service, redis_class=_SentinelRedis, **{**options, **target.options})
    client.sentinels = sentinel
    return client


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def is_redirect(exc: BaseException) -> bool:
    """A MOVED or ASK reply: the key lives on another cluster node (never "the server refused")."""
    return isinstance(exc, (MovedError, AskError))


def master_address(client: Any) -> str | None:
    """host:port of the master a Sentinel-managed client last found, else None."""
    addr = getattr(getattr(client, "connection_pool", None), "master_address", None)
    return f"{addr[0]}:{addr[1]}" if addr else None


async def _cluster_enabled(client: aioredis.Redis, prefix: str) -> bool:
    """Is this server a cluster node? INFO cluster; where an ACL forbids INFO, a MOVED to a key read."""
    try:
        info = await client.info("cluster")
        return bool(int(info.get("cluster_enabled", 0)))
    except ResponseError as e:
        if is_redirect(e):
            return True
    keys = Keys(prefix)  # each tier's key has its own slot: one of them is another node's
    for tier in ("free", "plus", "pro", "team", "enterprise"):
        try:
            await client.exists(keys.quota(tier))
        except ResponseError as e:
            if is_redirect(e):
                return True
    return False


def retry_once() -> Retry:
    """One immediate retry on a fresh connection: a dead pooled connection costs no command (see
    `Connector._single`); a server that is really gone fails on the second try at once."""
    return Retry(NoBackoff(), 1)


class Connector:
    """Opens the client a URL calls for, once: `await client()` detects (a cluster?) on first use and keeps
    the result; a failure raises Unreachable (AuthFailed) and the next call tries again."""

    def __init__(self, url: str, *, force_cluster: bool = False, prefix: str = DEFAULT_PREFIX, **options: Any) -> None:
        self.url = url
        self.target = parse_target(url)
        self.force_cluster = force_cluster
        self.prefix = prefix
        self.options = options
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._next_node = 0

    @property
    def resolved(self) -> Any:
        """The client once `client()` succeeded, else None."""
        return self._client

    def _single(self) -> dict[str, Any]:
        """The options of a one-server client (plain or Sentinel-managed): the caller's, and by default one
        immediate retry on a fresh connection. A client built on a URL's pool gets no retry at all from
        redis-py (its connections only see a `retry` passed in): after a Redis restart every pooled
        connection is dead, and each of them would fail one command ("Connection closed by server"), so a
        console would report the server lost again for each, just after saying it was back. The cluster
        client keeps redis-py's own retries, which follow a failover."""
        return {"retry": retry_once(), **self.options}

    def _plain(self, **extra: Any) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.target.nodes[0], **{**self._single(), **extra})

    async def _open(self) -> Any:
        t = self.target
        if t.kind == "sentinel":
            return sentinel_client(t, **self._single())
        if t.kind == "cluster" or self.force_cluster:
            client = cluster_client(t.nodes, **self.options)
            try:
                await client.initialize()
            except BaseException:
                with contextlib.suppress(Exception):
                    await client.aclose()
                raise
            return client

        if t.nodes[0].startswith("unix:"):
            return self._plain()
        probe = self._plain()
        try:
            async with asyncio.timeout(DETECT_TIMEOUT_S):
                clustered = await _cluster_enabled(probe, self.prefix)
        finally:
            with contextlib.suppress(Exception):
                await probe.aclose()
        if not clustered:
            return self._plain()
        self.target = Target("cluster", nodes=t.nodes, options=t.options)
        return await self._open()

    async def client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await self._open()
                except UNREACHABLE_ERRORS as e:
                    raise unreachable(_Named(self.url), e, DETECT_TIMEOUT_S) from e
        return self._client

    async def subscriber(self) -> Any:
        """A fresh client for one pub/sub connection. On a cluster, a plain client to one node, the next one
        each call (every node hears a PUBLISH: the cluster bus carries it), so a dead node is left behind."""
        client = await self.client()
        if not is_cluster(client):
            if self.target.kind == "sentinel":
                return sentinel_client(self.target, **self._single())
            return self._plain()
        nodes = client.get_nodes() or []
        node = nodes[self._next_node % len(nodes)]
        self._next_node += 1
        _, kwargs = _node_kwargs(self.target.nodes[0], self.options)  # the URL's user, password and TLS
        return aioredis.Redis(host=node.host, port=node.port, **kwargs)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2)


@dataclass(frozen=True)
class _Named:
    """Something `quotas.library.describe` can name (the URL's hosts, without the password)."""

    url: str

    @property
    def startup_nodes(self) -> dict[str, None]:
        rest = (shown(self.url) or "").partition("://")[2]
        return {p.rpartition("@")[2].split("/")[0]: None for p in rest.split(",")}


async def open_client(url: str, *, force_cluster: bool = False, prefix: str = DEFAULT_PREFIX, **options: Any) -> Any:
    """The client for `url` (detected, or forced to a cluster), with the caller's timeouts and options."""
    return await Connector(url, force_cluster=force_cluster, prefix=prefix, **options).client()
