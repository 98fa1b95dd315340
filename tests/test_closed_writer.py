"""redis-py's writer-close race (redis/redis-py#3546, #4287): a connection another task closes under a scheduled
write (what a cluster client does to a failed node's connections) raises AttributeError from redis-py's own frames
instead of ConnectionError. The one wrapper of the store and the limiter's calls (`quotas.library.bounded`) retries
it once on a fresh connection, then names the server unreachable, and never takes a bug of ours for it."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from quotas.errors import Unreachable
from quotas.library import bounded, closed_writer
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess


async def write_under_a_close(valkey: ValkeyProcess) -> None:
    """A PING scheduled on a real connection that another task closes before the write runs."""
    conn = Connection(host=valkey.host, port=valkey.port, socket_timeout=5)
    await conn.connect()
    send = asyncio.create_task(conn.send_packed_command(conn.pack_command("PING")))
    await asyncio.sleep(0)  # the send passed its connected check and scheduled its write
    await conn.disconnect(nowait=True)
    await send


async def test_the_race_raises_from_redis_py_and_is_recognised_as_a_closed_connection(valkey: ValkeyProcess) -> None:
    """The write on the closed connection fails inside redis-py; `closed_writer` says it is the race."""
    with pytest.raises((AttributeError, TypeError, RedisConnectionError)) as got:
        await write_under_a_close(valkey)
    # redis-py 8.1 raises AttributeError here; a release with PR #4217 raises ConnectionError (handled as ever)
    assert isinstance(got.value, RedisConnectionError) or closed_writer(got.value)


async def test_a_call_caught_by_the_race_is_retried_once_on_a_fresh_connection(
        valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """The first try dies in the race, the retry answers: the caller sees the answer, not the race."""
    tries = 0

    async def call() -> object:
        nonlocal tries
        tries += 1
        if tries == 1:
            await write_under_a_close(valkey)
        return await redis_client.ping()

    assert await bounded(redis_client, call, 5.0) is True
    assert tries == 2


async def test_a_call_the_race_catches_twice_names_the_server_unreachable(
        valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """Both tries die in the race: Unreachable naming the server, as any lost connection."""
    async def call() -> object:
        await write_under_a_close(valkey)
        return await redis_client.ping()

    # what matters is our classification and the server named; redis-py's own words vary by release
    # (8.2 says "Connection closed by the server before write" where the race itself said otherwise)
    with pytest.raises(Unreachable, match=rf"Redis at {valkey.host}:{valkey.port}\b"):
        await bounded(redis_client, call, 5.0)


async def test_an_attribute_error_of_our_own_is_not_taken_for_the_race(store: QuotaStore) -> None:
    """A bug in the caller's code (an AttributeError outside redis-py) propagates as it is, untried twice."""
    tries = 0

    async def call() -> object:
        nonlocal tries
        tries += 1
        return getattr(None, "hgetall")  # noqa: B009  # our own AttributeError, raised in this file

    with pytest.raises(AttributeError):
        await bounded(store.client, call, 5.0)
    assert tries == 1
