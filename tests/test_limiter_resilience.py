"""The limiter when the server misbehaves: library lost on restart, server stopped or hung, out of memory,
a read-only replica, a refused login, a failed save (MISCONF), a busy script (BUSY), a loading data set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from quotas.errors import AuthFailed, Unavailable, Unreachable
from quotas.keys import Keys
from quotas.limiter import Decision, Limiter
from quotas.model import Quota, QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from tests.test_limiter_counters import counters
from tests.test_quota_cli import sw

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
    # an operator restores the quota hash by hand (no `surgewatch init`), `enforced` included (the field
    # the limiter reads): the gateway recovers alone
    await redis_client.hset(Keys().quota("free"), mapping={
        "limit": "2", "window_s": "60", "tier_cap_rps": "", "paused": "0", "mode": "enforce",
        "expires_at": "", "version": "1", "updated_by": "restore", "updated_at": "0", "prev": "",
        "enforced": "2|60||0|enforce|",
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
        async with asyncio.timeout(30):  # a hang guard: the outcome asserted is the error, not its speed
            with pytest.raises(Unreachable) as e:
                await lim.check("free", "u")
        assert f"{valkey.host}:{valkey.port}" in str(e.value) and "s3cret" not in str(e.value)
        with pytest.raises(Unreachable):
            await lim.check_many([("free", "u", 1)])
        with pytest.raises(Unreachable):
            await lim.record("free", "error")
    finally:
        await client.aclose()


async def test_fail_open_admits_and_logs(valkey: ValkeyProcess, caplog: pytest.LogCaptureFixture) -> None:
    """fail_open=True admits with reason ok when the server is gone, and logs a warning naming the tier: one
    line per tier however many calls fail (an outage must not flood the log)."""
    client = aioredis.Redis.from_url(valkey.url, socket_connect_timeout=0.5)
    try:
        valkey.stop()
        lim = Limiter(client, fail_open=True, timeout_s=0.5)
        with caplog.at_level(logging.WARNING, logger="quotas.limiter"):
            assert await lim.check("free", "u") == Decision(True, "ok", 0, 0.0, None)
            assert await lim.check_many([("pro", "u", 1)] * 2) == [Decision(True, "ok", 0, 0.0, None)] * 2
            await lim.record("free", "blocked")
            for i in range(5):
                assert (await lim.check("free", f"u{i}")).allowed
                assert (await lim.check("pro", f"u{i}")).allowed
        warned = [r.getMessage() for r in caplog.records if "failing open" in r.getMessage()]
        assert sum("tier free" in m for m in warned) == 1 and sum("tier pro" in m for m in warned) == 1, warned
        assert len(warned) == 2
    finally:
        await client.aclose()


async def test_hung_server_times_out_no_hang(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """A server that accepts but never answers (SIGSTOP) yields Unreachable after timeout_s, not a hang."""
    await QuotaStore(redis_client).init()
    lim = Limiter(redis_client, timeout_s=0.5)
    assert (await lim.check("free", "u")).allowed
    pid = valkey.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        async with asyncio.timeout(30):  # a hang guard; the limiter's own deadline is what ends the call
            with pytest.raises(Unreachable, match=r"no answer within 0\.5 s|unreachable"):
                await lim.check("free", "u")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (await lim.check("free", "u")).allowed  # and it recovers on the same client


async def test_a_timed_out_check_never_hands_its_reply_to_the_next(valkey: ValkeyProcess,
                                                                  redis_client: aioredis.Redis) -> None:
    """After a check abandoned mid-call (server hung), the next checks read their own replies, never the late one."""
    store = QuotaStore(redis_client)
    await store.init()
    await store.set("pro", QuotaSpec(7, DAY), actor="t")
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    lim = Limiter(redis_client, timeout_s=0.3)
    assert (await lim.check("free", "u")).limit == 3
    pid = valkey.pid
    assert pid is not None  # the server was started by the fixture
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


async def test_out_of_memory_server_is_unavailable_and_fails_open(
        redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture, away_from_day_edges: float) -> None:
    """A server out of memory under noeviction: Unavailable (an Unreachable) by default, admitted with fail_open."""
    await QuotaStore(redis_client).init()
    lim = Limiter(redis_client)
    opener = Limiter(redis_client, fail_open=True)
    assert (await lim.check("free", "u")).allowed
    await redis_client.config_set("maxmemory-policy", "noeviction")
    await redis_client.config_set("maxmemory", "1")
    try:
        for call in (lambda: lim.check("free", "u"), lambda: lim.check_many([("free", "u", 1)]),
                     lambda: lim.record("free", "error")):
            with pytest.raises(Unavailable, match="out of memory") as e:
                await call()
            assert isinstance(e.value, Unreachable)
        with caplog.at_level(logging.WARNING, logger="quotas.limiter"):
            assert await opener.check("free", "v") == Decision(True, "ok", 0, 0.0, None)
            admitted = Decision(True, "ok", 0, 0.0, None)
            assert await opener.check_many([("free", "v", 1), ("pro", "v", 1)]) == [admitted] * 2
            await opener.record("free", "error")
        assert any("failing open for tier free" in r.getMessage() and "out of memory" in r.getMessage()
                   for r in caplog.records)
    finally:
        await redis_client.config_set("maxmemory", "0")
    assert await counters(redis_client, "free") == {"accepted": 1}  # nothing refused by the server was counted
    remaining = (await lim.check("free", "u")).remaining
    quota = await QuotaStore(redis_client).get("free")
    assert quota is not None
    assert remaining == quota.limit - 2


async def test_read_only_replica_is_unavailable(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """A gateway left pointing at a replica (after a failover) gets Unavailable naming the cause, or fails open."""
    await QuotaStore(redis_client).init()
    with ValkeyProcess() as replica:
        rc = aioredis.Redis.from_url(replica.url, socket_timeout=5)
        try:
            await rc.replicaof(valkey.host, valkey.port)
            deadline = time.monotonic() + 10
            while (await rc.info("replication")).get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica did not sync"
                await asyncio.sleep(0.05)
            with pytest.raises(Unavailable, match="read-only replica"):
                await Limiter(rc).check("free", "u")
            assert (await Limiter(rc, fail_open=True).check("free", "u")).allowed
        finally:
            await rc.aclose()
    assert await counters(redis_client, "free") == {}


async def test_refused_login_is_auth_failed_without_the_password() -> None:
    """A wrong or missing password raises AuthFailed (never showing the password); fail_open admits."""
    with ValkeyProcess() as server:
        admin = aioredis.Redis.from_url(server.url)
        await admin.config_set("requirepass", "right-one")
        await admin.aclose()
        for url in (server.url.replace("redis://", "redis://:wrong-one@"), server.url):
            client = aioredis.Redis.from_url(url, socket_timeout=2)
            try:
                with pytest.raises(AuthFailed, match="refused the login") as e:
                    await Limiter(client).check("free", "u")
                assert "wrong-one" not in str(e.value) and isinstance(e.value, Unreachable)
                assert (await Limiter(client, fail_open=True).check("free", "u")).allowed
            finally:
                await client.aclose()


async def wait_bgsave(client: aioredis.Redis) -> str:
    """Wait for the BGSAVE in progress to end (a hang guard only); its status, ok or err."""
    async with asyncio.timeout(30):
        while (info := await client.info("persistence"))["rdb_bgsave_in_progress"]:
            await asyncio.sleep(0.05)
    return str(info["rdb_last_bgsave_status"])


@contextlib.asynccontextmanager
async def failing_saves(valkey: ValkeyProcess, client: aioredis.Redis) -> AsyncIterator[None]:
    """MISCONF: the server is told to save, its last BGSAVE failed (the dump's path is a directory: even root
    cannot rename a file over it) and stop-writes-on-bgsave-error is yes, so it refuses every write."""
    blocker = valkey.data_dir / "dump.rdb"
    (blocker / "in-the-way").mkdir(parents=True)
    await client.config_set("stop-writes-on-bgsave-error", "yes")
    await client.config_set("save", "3600 1")
    try:
        await client.bgsave()
        assert await wait_bgsave(client) == "err"
        yield
    finally:
        shutil.rmtree(blocker)
        await client.bgsave()
        assert await wait_bgsave(client) == "ok"  # writes are accepted again
        await client.config_set("save", "")


@contextlib.asynccontextmanager
async def busy_script(valkey: ValkeyProcess, client: aioredis.Redis) -> AsyncIterator[None]:
    """BUSY: another connection runs a script that never ends; past busy-reply-threshold (here 100 ms) the
    server answers every other command BUSY until the script is killed."""
    await client.config_set("busy-reply-threshold", "100")
    runner = aioredis.Redis.from_url(valkey.url, socket_timeout=120)
    # the asyncio client's eval is a coroutine function (the stubs say Awaitable, for both clients)
    script = asyncio.create_task(cast(Coroutine[Any, Any, Any], runner.eval("while true do end", 0)))
    try:
        async with asyncio.timeout(30):  # a hang guard: wait until the server says BUSY
            while True:
                try:
                    await client.ping()
                except ResponseError as e:
                    if str(e).startswith("BUSY"):
                        break
                    raise
                await asyncio.sleep(0.05)
        yield
    finally:
        await client.script_kill()
        with pytest.raises(ResponseError, match="killed"):
            await script
        await runner.aclose()


async def no_trace_of_writes(client: aioredis.Redis, before: Quota, audit: int) -> None:
    """Nothing half-written: the tier's quota and audit as before, no usage key, no counter."""
    store = QuotaStore(client)
    assert await store.get(before.tier) == before
    assert len(await store.history(before.tier, count=100)) == audit
    assert await client.keys("surgewatch:{free}:u:*") == [] and await counters(client, before.tier) == {}


@pytest.mark.parametrize("state", ["MISCONF", "BUSY"])
async def test_a_server_refusing_writes_or_busy_is_unavailable_and_nothing_is_half_written(
        valkey: ValkeyProcess, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture, state: str) -> None:
    """Under MISCONF (a failed save) or BUSY (a script running): check, check_many and record raise Unavailable
    naming the cause, fail_open admits with a warning, the store's writes fail, the CLI exits 1 naming the
    cause; afterwards nothing of any of it was written."""
    store = QuotaStore(redis_client)
    await store.init()
    before = await store.get("free")
    assert before is not None
    audit = len(await store.history("free", count=100))
    cause = {"MISCONF": "cannot save its data to disk", "BUSY": "busy running a script"}[state]
    states = {"MISCONF": failing_saves, "BUSY": busy_script}
    # a client of its own: the context's admin commands stay on redis_client
    client = aioredis.Redis.from_url(valkey.url, socket_timeout=5)
    lim, opener = Limiter(client), Limiter(client, fail_open=True)
    try:
        async with states[state](valkey, redis_client):
            for call in (lambda: lim.check("free", "u"), lambda: lim.check_many([("free", "u", 1)]),
                         lambda: lim.record("free", "error")):
                with pytest.raises(Unavailable, match=cause) as e:
                    await call()
                assert e.value.code == state and isinstance(e.value, Unreachable)
            with caplog.at_level(logging.WARNING, logger="quotas.limiter"):
                assert await opener.check("free", "v") == Decision(True, "ok", 0, 0.0, None)
            assert any("failing open for tier free" in r.getMessage() and cause in r.getMessage()
                       for r in caplog.records)
            for write in (lambda s: s.set("free", QuotaSpec(3, DAY), actor="t"), lambda s: s.pause("free", actor="t")):
                with pytest.raises(ResponseError, match=state):
                    await write(QuotaStore(client))
            r = await asyncio.to_thread(sw, valkey.url, "quota", "pause", "free", "--as", "t")
            assert r.returncode == 1 and cause in r.stderr and state in r.stderr, r.stderr
    finally:
        await lim.aclose()
        await opener.aclose()
        await client.aclose()
    await no_trace_of_writes(redis_client, before, audit)


@contextlib.asynccontextmanager
async def loading_server(valkey: ValkeyProcess) -> AsyncIterator[tuple[aioredis.Redis, Quota, int]]:
    """LOADING: the server restarted from a dump and loads it, slowed by key-load-delay (~20 s at 1 ms a key)
    until the context ends, which lets the rest load at once. Yields a client, the free tier's quota and
    its number of audit entries from before."""
    client = aioredis.Redis.from_url(valkey.url, socket_timeout=5)
    store = QuotaStore(client)
    await store.init()
    before = await store.get("free")
    assert before is not None
    audit = len(await store.history("free", count=100))
    pipe = client.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"filler:{i}", "x" * 1000)
    await pipe.execute()
    await client.save()
    await client.aclose()
    valkey.extra_args = ["--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024"]
    valkey.stop()
    valkey.start()
    client = aioredis.Redis.from_url(valkey.url, socket_timeout=5)
    try:
        assert (await client.info("persistence"))["loading"] == 1
        yield client, before, audit
        assert (await client.info("persistence"))["loading"] == 1  # everything in the context met a loading server
    finally:
        await client.config_set("key-load-delay", "0")  # the rest loads at once
        async with asyncio.timeout(60):  # a hang guard
            while (await client.info("persistence"))["loading"]:
                await asyncio.sleep(0.05)
        await client.aclose()


async def test_a_loading_server_fails_open_refuses_writes_and_nothing_is_half_written(valkey: ValkeyProcess) -> None:
    """While the server loads its data set: the limiter raises an Unreachable naming it and fail_open admits, the
    store's writes fail, the CLI fails naming it; once loaded, nothing of any of it was written."""
    async with loading_server(valkey) as (client, before, audit):
        lim, opener = Limiter(client), Limiter(client, fail_open=True)
        with pytest.raises(Unreachable, match="loading"):
            await lim.check("free", "u")
        with pytest.raises(Unreachable, match="loading"):
            await lim.check_many([("free", "u", 1), ("pro", "u", 1)])
        assert await opener.check("free", "v") == Decision(True, "ok", 0, 0.0, None)
        with pytest.raises(Unreachable, match="loading"):
            await QuotaStore(client).set("free", QuotaSpec(3, DAY), actor="t")
        r = await asyncio.to_thread(sw, valkey.url, "quota", "pause", "free", "--as", "t")
        assert r.returncode != 0 and "loading" in r.stderr, r.stderr
        await lim.aclose()
        await opener.aclose()
    client = aioredis.Redis.from_url(valkey.url, socket_timeout=5)
    try:
        await no_trace_of_writes(client, before, audit)
    finally:
        await client.aclose()


async def test_a_loading_server_is_unavailable_naming_it(valkey: ValkeyProcess) -> None:
    """While the server loads its data set, check raises Unavailable (code LOADING) and the CLI exits 1 naming it."""
    async with loading_server(valkey) as (client, _, _):
        lim = Limiter(client)
        try:
            with pytest.raises(Unreachable) as e:
                await lim.check("free", "u")
            assert isinstance(e.value, Unavailable) and e.value.code == "LOADING", e.value
            r = await asyncio.to_thread(sw, valkey.url, "quota", "pause", "free", "--as", "t")
            assert r.returncode == 1 and "loading its data set" in r.stderr, r.stderr
        finally:
            await lim.aclose()
