"""The Redis Functions library (`surgewatch.lua`): loading it and calling it with the two rules every
caller needs — reload once if the server lost it, and a bounded wait that ends in `Unreachable`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quotas.errors import BrokenQuota, Unreachable
from quotas.keys import LIBRARY_NAME

LIBRARY_PATH = Path(__file__).with_name("surgewatch.lua")

# Everything that means "no answer from the server" (builtin TimeoutError covers asyncio's).
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError,
)

Client = Any  # redis.asyncio.Redis or redis.asyncio.RedisCluster: duck-typed on purpose


@lru_cache(maxsize=1)
def library_source() -> str:
    """The library's Lua source, as shipped in the package."""
    return LIBRARY_PATH.read_text()


def library_version() -> int:
    """The version number the shipped library declares (`LIB_VERSION`)."""
    m = re.search(r"^local LIB_VERSION = (\d+)", library_source(), re.M)
    assert m, "surgewatch.lua declares LIB_VERSION"
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
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if kwargs:
        if kwargs.get("path"):
            return str(kwargs["path"])
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    nodes = getattr(client, "startup_nodes", None) or {}
    return ",".join(sorted(str(n) for n in nodes)) or "the Redis server"


def unreachable(client: Client, exc: BaseException, timeout_s: float) -> Unreachable:
    """A clear, password-free Unreachable for a failed call."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) and not str(exc):
        detail = f"no answer within {timeout_s:g} s"
    return Unreachable(f"Redis at {describe(client)} is unreachable: {detail}")


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


async def bounded(client: Client, make: Callable[[], Awaitable[Any]], timeout_s: float) -> Any:
    """Run `make()` within timeout_s; Unreachable if the server cannot be reached.

    A connection the server closed (a restart, an idle timeout) is retried once on a fresh one: the
    command never reached a live server, so nothing is counted twice in the usual case."""
    try:
        async with asyncio.timeout(timeout_s):
            try:
                return await make()
            except RedisConnectionError:
                await asyncio.sleep(0.05)
                return await make()
    except UNREACHABLE_ERRORS as e:
        raise unreachable(client, e, timeout_s) from e


def text(value: Any) -> str:
    """bytes or str from the driver (decode_responses on or off) -> str."""
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "LIBRARY_NAME", "library_source", "library_version", "load_library", "installed_version", "fcall",
    "bounded", "is_missing_function",
]
