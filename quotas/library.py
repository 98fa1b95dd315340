"""The Redis Functions library (`quotas/lua/*.lua`): loading it and calling it with the two rules every
caller needs — reload once if the server lost it, and a bounded wait that ends in `Unreachable`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    InvalidResponse,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quotas.errors import AuthFailed, BrokenQuota, NotACluster, Unavailable, Unreachable
from quotas.keys import LIBRARY_NAME

LIBRARY_DIR = Path(__file__).with_name("lua")  # the library's parts, joined in name order

# Everything that means "no answer from the server" (builtin TimeoutError covers asyncio's); a reply that is not
# the Redis protocol (an HTTP server, a proxy's banner at that address) is no Redis answer either.
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError, InvalidResponse,
)

Client = Any  # redis.asyncio.Redis or redis.asyncio.RedisCluster: duck-typed on purpose


@lru_cache(maxsize=1)
def library_source() -> str:
    """The library's Lua source, as shipped in the package: its parts (each under 450 lines, one idea
    each) joined in name order. They share one chunk's locals, so a part may use what an earlier defines."""
    return "\n".join(p.read_text() for p in sorted(LIBRARY_DIR.glob("*.lua")))


def library_version() -> int:
    """The version number the shipped library declares (`LIB_VERSION`)."""
    m = re.search(r"^local LIB_VERSION = (\d+)", library_source(), re.M)
    assert m, "the library declares LIB_VERSION"
    return int(m.group(1))


def is_missing_function(exc: BaseException) -> bool:
    """True for the server's answer to FCALL of a function it does not have (library lost)."""
    text = str(exc).lower()
    return isinstance(exc, ResponseError) and ("function not found" in text or "no such function" in text)


def broken_from(exc: ResponseError, tier: str) -> BrokenQuota | None:
    """The library's 'broken quota' error as a BrokenQuota, else None."""
    text = str(exc)
    marker = "broken quota: tier "
    if marker not in text:
        return None
    what = text.split(marker, 1)[1]
    what = what.split(" has ", 1)[1] if " has " in what else what
    return BrokenQuota(tier, what)


def describe(client: Client) -> str:
    """host:port of a client, for error messages (never the password)."""
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service:  # a Sentinel-managed client: the service, and the master it last found
        addr = getattr(pool, "master_address", None)
        return f"Sentinel service {service} (master {f'{addr[0]}:{addr[1]}' if addr else 'not found yet'})"
    kwargs = getattr(pool, "connection_kwargs", None)
    if kwargs:
        if kwargs.get("path"):
            return str(kwargs["path"])
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    nodes = getattr(client, "startup_nodes", None) or {}
    return ",".join(sorted(getattr(n, "name", None) or str(n) for n in nodes)) or "the Redis server"


# What a server says when it refuses the login; redis-py raises some of these as ConnectionError and
# some (HELLO before AUTH) as a plain error, so the text decides.
_AUTH_MARKERS = (
    "WRONGPASS",
    "NOAUTH",
    "invalid username-password",
    "must be called with the client already authenticated",
    "Authentication required",
    "invalid password",
    "AuthenticationError",
    "AuthorizationError",
)


def refused_login(text: str) -> bool:
    """True when an error's text says the server refused the login (wrong or missing password, ...)."""
    low = text.lower()
    return any(m.lower() in low for m in _AUTH_MARKERS)


# Error replies that mean "cannot decide now", not "you asked wrongly": the first word of the reply.
_UNAVAILABLE_CODES = {
    "OOM": "it is out of memory (maxmemory reached with a noeviction policy)",
    "READONLY": "it is a read-only replica (point the client at the primary)",
    "MISCONF": "it refuses writes because it cannot save its data to disk",
    "LOADING": "it is loading its data set",
    "BUSY": "it is busy running a script",
    "MASTERDOWN": "its link to the primary is down",
    "CLUSTERDOWN": "the cluster is down",
    "TRYAGAIN": "the cluster is moving the tier's slot",
}
_CLASS_CODES: tuple[tuple[type[ResponseError], str], ...] = (
    (OutOfMemoryError, "OOM"),
    (ReadOnlyError, "READONLY"),
    (MasterDownError, "MASTERDOWN"),
    (ClusterDownError, "CLUSTERDOWN"),
    (TryAgainError, "TRYAGAIN"),
)


def unreachable(client: Client, exc: BaseException, timeout_s: float) -> Unreachable:
    """A clear, password-free Unreachable for a failed call (AuthFailed when the login was refused)."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) and not str(exc):
        detail = f"no answer within {timeout_s:g} s"
    if isinstance(exc, RedisClusterException) and "cluster mode is not enabled" in detail.lower():
        return NotACluster(f"Redis at {describe(client)} is not a cluster member (cluster mode is not enabled on it): "
                           "drop --redis-cluster (SURGEWATCH_REDIS_CLUSTER, redis_cluster) and the client is chosen "
                           "by asking the server")
    if isinstance(exc, InvalidResponse):
        return Unreachable(f"Redis at {describe(client)} is unreachable: what answers there does not speak the Redis "
                           f"protocol ({detail})")
    if isinstance(exc, BusyLoadingError):  # redis-py raises LOADING as a connection error: it answered
        return Unavailable(f"Redis at {describe(client)} cannot take the call now: it is loading its data set: "
                           f"{detail}", "LOADING")
    if isinstance(exc, (AuthenticationError, AuthorizationError)) or refused_login(detail):
        if "NOAUTH" in detail or "already authenticated" in detail or "Authentication required" in detail:
            detail = "it requires a password and the Redis URL gives none"
        return AuthFailed(
            f"Redis at {describe(client)} refused the login: {detail} (check the user and password in the Redis URL)"
        )
    return Unreachable(f"Redis at {describe(client)} is unreachable: {detail}")


def unavailable(client: Client, exc: BaseException) -> Unavailable | None:
    """The server's "cannot decide now" error replies (OOM, READONLY, ...) as Unavailable, else None."""
    if not isinstance(exc, ResponseError):
        return None
    text_ = str(exc)
    # redis-py strips the code from the errors it has a class for (OutOfMemoryError, ...)
    code = next((c for cls, c in _CLASS_CODES if isinstance(exc, cls)), text_.split(" ", 1)[0].upper())
    why = _UNAVAILABLE_CODES.get(code)
    if why is None:
        return None
    where = "the Redis server" if client is None else f"Redis at {describe(client)}"
    return Unavailable(f"{where} cannot take the call now: {why}: {text_}", code)


async def load_library(client: Client) -> None:
    """FUNCTION LOAD REPLACE the shipped library (on every primary of a cluster)."""
    await client.function_load(library_source(), replace=True)


async def installed_version(client: Client) -> int | None:
    """The version of the library the server has, or None when it has none."""
    try:
        value = await client.fcall_ro("sw_version", 0)
    except ResponseError as e:
        if is_missing_function(e):
            return None
        raise
    return int(value)


async def fcall(client: Client, name: str, keys: Sequence[str], args: Sequence[Any], *, timeout_s: float) -> Any:
    """FCALL `name`; reload the library and retry once if the server lost it; Unreachable after timeout_s."""

    async def call() -> Any:
        try:
            return await client.fcall(name, len(keys), *keys, *args)
        except ResponseError as e:
            if not is_missing_function(e):
                raise
            await load_library(client)
            return await client.fcall(name, len(keys), *keys, *args)

    return await bounded(client, call, timeout_s)


# where redis-py's writer-close race surfaces (redis/redis-py#3546, #4287; normalised upstream by PR #4217): a write
# on a connection that another task or the event loop tore down meanwhile (a cluster node failing over) raises
# AttributeError or TypeError from these frames instead of ConnectionError
_WRITE_PATH = ("/redis/asyncio/connection.py", "/asyncio/streams.py", "/asyncio/selector_events.py",
               "/asyncio/transports.py")


def closed_writer(e: BaseException) -> bool:
    """Is `e` redis-py's writer-close race (the connection was closed under a write), not a bug of ours?"""
    if not isinstance(e, (AttributeError, TypeError)):
        return False
    tb, last = e.__traceback__, ""
    while tb is not None:
        last, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
    return last.replace("\\", "/").endswith(_WRITE_PATH)


async def bounded(client: Client, make: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    """Run `make()` within timeout_s; Unreachable if the server cannot be reached.

    A connection the server closed (a restart, an idle timeout), or closed under the write (`closed_writer`),
    is retried once on a fresh one: the command never reached a live server, so nothing is counted twice in
    the usual case."""
    try:
        async with asyncio.timeout(timeout_s):
            try:
                return await make()
            except (RedisConnectionError, AttributeError, TypeError) as e:
                if not isinstance(e, RedisConnectionError) and not closed_writer(e):
                    raise
                await asyncio.sleep(0.05)
                return await make()
    except UNREACHABLE_ERRORS as e:
        raise unreachable(client, e, timeout_s) from e
    except (AttributeError, TypeError) as e:
        if not closed_writer(e):
            raise
        raise unreachable(client, RedisConnectionError(f"the connection closed under a write ({e})"), timeout_s) from e


class Deadlines:
    """Bounds the awaits of many tasks with one watchdog task per event loop, instead of a loop timer per call.

    `asyncio.timeout` schedules a timer and cancels it on every call, a measurable share of a decision
    (bench/README.md); here a call costs a dict insert and delete. The watchdog sleeps until the earliest deadline and
    cancels whatever overran it; that call then raises TimeoutError, as under `asyncio.timeout`
    (an outside cancellation of the same task still propagates as CancelledError)."""

    def __init__(self) -> None:
        self._inflight: dict[asyncio.Task[Any], tuple[float, int]] = {}  # task -> (deadline, cancelling at entry)
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._wake_at = 0.0  # when the watchdog wakes next (loop time)

    async def run(self, aw: Awaitable[Any], timeout_s: float) -> Any:
        """await `aw`; TimeoutError if it has not finished within timeout_s."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None or task in self._inflight:
            async with asyncio.timeout(timeout_s):
                return await aw
        deadline = loop.time() + timeout_s
        self._inflight[task] = (deadline, task.cancelling())
        w = self._watchdog
        if w is None or w.done() or w.get_loop() is not loop or deadline < self._wake_at:
            if w is not None and not w.done() and w.get_loop() is loop:
                w.cancel()  # it sleeps past this call's deadline (a shorter timeout_s than before)
            self._wake_at = 0.0  # the new watchdog looks at every call as soon as it runs
            self._watchdog = loop.create_task(self._watch(loop))
        try:
            return await aw
        except asyncio.CancelledError:
            if task in self._expired and task.uncancel() <= self._inflight[task][1]:
                raise TimeoutError from None
            raise
        finally:
            del self._inflight[task]
            self._expired.discard(task)

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._inflight:
                now = loop.time()
                wake: float | None = None
                for task, (deadline, _) in list(self._inflight.items()):
                    if deadline > now:
                        wake = deadline if wake is None else min(wake, deadline)
                    elif task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
                # with only cancelled calls left, look again shortly: they leave as they unwind
                self._wake_at = wake if wake is not None else now + 0.05
                await asyncio.sleep(self._wake_at - now)
        finally:
            if self._watchdog is asyncio.current_task():
                self._watchdog = None


def text(value: Any) -> str:
    """bytes or str from the driver (decode_responses on or off) -> str."""
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "LIBRARY_NAME",
    "bounded",
    "fcall",
    "installed_version",
    "is_missing_function",
    "library_source",
    "library_version",
    "load_library",
]
