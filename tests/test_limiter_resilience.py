"""The limiter when the server misbehaves: library lost on restart, server stopped, server hung."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
import redis.asyncio as aioredis

from quotas.errors import Unreachable
from quotas.keys import Keys
from quotas.limiter import Decision, Limiter
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess

DAY = 86400


async def test_restart_without_persistence_reloads_library(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """After a restart wiped functions and data, the next check loads the library itself and decides."""
    lim = Limiter(redis_client)
    await QuotaStore(redis_client).init()
    assert (await lim.check("free", "u")).allowed
    valkey.restart()
    d = await lim.check("free", "u")  # the data went with the library: decided, not an error
    assert (d.allowed, d.reason) == (False, "unknown_tier")
    assert len(await redis_client.function_list()) == 1
    # an operator restores the quota hash by hand (no `surgewatch init`): the gateway recovers alone
    await redis_client.hset(Keys().quota("free"), mapping={
        "limit": "2", "window_s": "60", "tier_cap_rps": "", "paused": "0", "mode": "enforce",
        "expires_at": "", "version": "1", "updated_by": "restore", "updated_at": "0", "prev": "",
    })
    assert [(await lim.check("free", "u")).allowed for _ in range(3)] == [True, True, False]
    assert len(await redis_client.function_list()) == 1


async def test_check_many_and_store_reload_library_too(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """check_many and the store's writes also reload a lost library and retry once."""
    store = QuotaStore(redis_client)
    await store.init()
    await redis_client.function_flush()
    got = await Limiter(redis_client).check_many([("free", "a", 1), ("pro", "b", 1)])
    assert [d.reason for d in got] == ["ok", "ok"]
    await redis_client.function_flush()
    assert (await store.set("free", QuotaSpec(3, DAY), actor="t")).version == 2


async def test_stopped_server_raises_clear_error_within_timeout(valkey: ValkeyProcess) -> None:
    """With the server stopped, check raises Unreachable naming the address, well within its timeout."""
    client = aioredis.Redis.from_url(valkey.url.replace("redis://", "redis://:s3cret@"), socket_connect_timeout=0.5)
    try:
        valkey.stop()
        lim = Limiter(client, timeout_s=1.0)
        t0 = time.monotonic()
        with pytest.raises(Unreachable) as e:
            await lim.check("free", "u")
        assert time.monotonic() - t0 < 2.0
        assert f"{valkey.host}:{valkey.port}" in str(e.value) and "s3cret" not in str(e.value)
        with pytest.raises(Unreachable):
            await lim.check_many([("free", "u", 1)])
        with pytest.raises(Unreachable):
            await lim.record("free", "error")
    finally:
        await client.aclose()


async def test_fail_open_admits_and_logs(valkey: ValkeyProcess, caplog: pytest.LogCaptureFixture) -> None:
    """fail_open=True admits with reason ok when the server is gone, and logs a warning naming the tier."""
    client = aioredis.Redis.from_url(valkey.url, socket_connect_timeout=0.5)
    try:
        valkey.stop()
        lim = Limiter(client, fail_open=True, timeout_s=0.5)
        with caplog.at_level(logging.WARNING, logger="quotas.limiter"):
            assert await lim.check("free", "u") == Decision(True, "ok", 0, 0.0, None)
            assert await lim.check_many([("pro", "u", 1)] * 2) == [Decision(True, "ok", 0, 0.0, None)] * 2
            await lim.record("free", "blocked")
        assert any("free" in r.getMessage() and "failing open" in r.getMessage() for r in caplog.records)
    finally:
        await client.aclose()


async def test_hung_server_times_out_no_hang(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """A server that accepts but never answers (SIGSTOP) yields Unreachable after timeout_s, not a hang."""
    await QuotaStore(redis_client).init()
    lim = Limiter(redis_client, timeout_s=0.5)
    assert (await lim.check("free", "u")).allowed
    pid = valkey._proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(Unreachable, match="no answer within 0.5 s|unreachable"):
            await lim.check("free", "u")
        assert time.monotonic() - t0 < 1.5
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (await lim.check("free", "u")).allowed  # and it recovers on the same client


async def test_a_timed_out_check_never_hands_its_reply_to_the_next(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """After a check abandoned mid-call (server hung), the next checks read their own replies, never the late one."""
    store = QuotaStore(redis_client)
    await store.init()
    await store.set("pro", QuotaSpec(7, DAY), actor="t")
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    lim = Limiter(redis_client, timeout_s=0.3)
    assert (await lim.check("free", "u")).limit == 3
    pid = valkey._proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(Unreachable):
            await lim.check("free", "u")  # sent, never answered in time: its reply comes later
    finally:
        os.kill(pid, signal.SIGCONT)
    for _ in range(3):  # a connection left in step would hand this the late "free" reply (limit 3)
        d = await lim.check("pro", "v")
        assert d.limit == 7 and d.reason == "ok"
    await lim.aclose()


async def test_sequential_checks_hold_one_connection(redis_client: aioredis.Redis) -> None:
    """The hot path keeps its connection between checks instead of a pool round per call."""
    await QuotaStore(redis_client).init()
    lim = Limiter(redis_client)
    for i in range(20):
        await lim.check("free", f"user{i}")
    pool = redis_client.connection_pool
    assert len(pool._in_use_connections) == 1  # held by the limiter, reused 20 times
    await lim.aclose()
    assert len(pool._in_use_connections) == 0
