"""Readers never write: a --read-only console, a wall, `snapshot` and `record` started while a temporary
override is due send read-only commands only (MONITOR sees every command the server runs), and the Python
reading of a due override is exactly what the library's expiry writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from quotas.codec import effective, quota_from_hash, quota_from_json
from quotas.keys import Keys
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from surgewatch.recording.writer import Recorder
from surgewatch.settings import Settings
from surgewatch.snapshot import take_snapshot
from tui.app import create_app
from tui.testing import wait_until

K = Keys()
DAY = 86400
# not flagged `write` by COMMAND INFO, but they change what others see: a script may write, a message is sent
ALSO_WRITES = {"fcall", "eval", "evalsha", "publish", "spublish", "function load", "function delete",
               "function flush", "function restore", "script load", "script flush"}


def _name(command: str) -> str:
    """A MONITOR line's command name, lower case, with its subcommand for FUNCTION and SCRIPT."""
    words = [w.strip('"').lower() for w in command.split(" ", 2)]
    return " ".join(words[:2]) if words[0] in ("function", "script") and len(words) > 1 else words[0]


async def _due(store: QuotaStore, tier: str = "free") -> None:
    """Give `tier` a 1 s override of 1/1d and wait (bounded) until the server's clock is past its end."""
    q = await store.set(tier, QuotaSpec(1, DAY), actor="oncall", reason="surge", for_s=1)
    assert q.expires_at is not None
    async with asyncio.timeout(10):  # a hang guard: the override ends 1 s after it was set
        while await store._now() < q.expires_at + 0.05:
            await asyncio.sleep(0.05)


class Monitor:
    """Every command the server runs while it is open (MONITOR on a connection of its own)."""

    def __init__(self, valkey: ValkeyProcess) -> None:
        self.client = aioredis.Redis.from_url(valkey.url, socket_timeout=5)
        self.commands: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Monitor:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._ready.wait()
        return self

    async def _run(self) -> None:
        async with self.client.monitor() as m:
            self._ready.set()
            async for cmd in m.listen():
                self.commands.append(str(cmd.get("command", "")))

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.client.aclose()

    async def writes(self, admin: aioredis.Redis) -> list[str]:
        """The commands seen that write (COMMAND INFO's `write` flag) or may write (scripts, PUBLISH)."""
        names = sorted({_name(c) for c in self.commands if c and " " not in _name(c)})
        flagged: set[str] = set()
        for name in names:
            reply = await admin.execute_command("COMMAND", "INFO", name)
            flags = reply.get(name, {}).get("flags", []) if isinstance(reply, dict) else (reply[0] or [[]] * 3)[2]
            if "write" in {f.decode() if isinstance(f, bytes) else str(f) for f in flags}:
                flagged.add(name)
        return [c for c in self.commands if c and _name(c) in flagged | ALSO_WRITES]


@pytest.fixture
async def due(store: QuotaStore, redis_client: aioredis.Redis) -> AsyncIterator[bytes]:
    """free's override is due and nobody has expired it yet; yields free's stored version."""
    await _due(store)
    version = await redis_client.hget(K.quota("free"), "version")
    assert isinstance(version, bytes)  # decode_responses off
    yield version


def _settings(valkey: ValkeyProcess, **kw: Any) -> Settings:
    return Settings(redis_url=valkey.url, interval_s=0.2, **kw)


async def _console_sees_fallback(settings: Settings) -> None:
    app = create_app(settings, sources=("traffic",), actor="tester")
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: (q := app.state.quotas.get("free")) is not None and q.limit == 20
                         and app.state.traffic is not None, what="free's fallback shown", timeout=20)


async def test_a_read_only_console_and_a_wall_write_nothing_while_an_override_is_due(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis, due: bytes
) -> None:
    """A --read-only console and a --wall console show free's fallback (20/1d) of a due override; MONITOR sees no
    write and free's hash and history are as they were."""
    history = await store.history("free", count=50)
    async with Monitor(valkey) as mon:
        await _console_sees_fallback(_settings(valkey, read_only=True))
        await _console_sees_fallback(_settings(valkey, wall=True))
    assert await mon.writes(redis_client) == []
    assert await redis_client.hget(K.quota("free"), "version") == due
    assert await store.history("free", count=50) == history


async def test_snapshot_and_record_write_nothing_while_an_override_is_due(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis, due: bytes, tmp_path: Path
) -> None:
    """`snapshot` lists free at its fallback and `record` records it; MONITOR sees no write from either."""
    from surgewatch.recording.daemon import record

    history = await store.history("free", count=50)
    loaded = asyncio.Event()

    class Watched(Recorder):
        def quotas_loaded(self, quotas: list[Any]) -> None:
            super().quotas_loaded(quotas)
            if any(q.tier == "free" and q.limit == 20 for q in quotas):
                loaded.set()

    async with Monitor(valkey) as mon:
        doc = await take_snapshot(redis_url=valkey.url, prefix=K.prefix, nodes=(), prometheus=None, local=False)
        (free,) = [t for t in doc["tiers"] if t["tier"] == "free"]
        assert (free["limit"], free["state"]) == (20, "active")
        rec = Watched(tmp_path / "black.box", flush_s=0.05)
        try:
            task = asyncio.create_task(record(_settings(valkey), rec, local=False, stop=loaded.is_set))
            async with asyncio.timeout(20):  # a hang guard: the feed lists the quotas on subscribing
                await task
        finally:
            rec.close()
    assert loaded.is_set()
    assert await mon.writes(redis_client) == []
    assert await redis_client.hget(K.quota("free"), "version") == due
    assert await store.history("free", count=50) == history


async def test_read_only_quota_commands_write_nothing_while_an_override_is_due(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis, due: bytes
) -> None:
    """`surgewatch --read-only quota list / export / history` show free's fallback and MONITOR sees no write."""
    from tests.test_quota_cli import sw

    async with Monitor(valkey) as mon:
        listed = await asyncio.to_thread(sw, valkey.url, "--read-only", "quota", "list", "--json")
        exported = await asyncio.to_thread(sw, valkey.url, "--read-only", "quota", "export")
        await asyncio.to_thread(sw, valkey.url, "--read-only", "quota", "history", "free")
    for r in (listed, exported):
        (free,) = [q for q in json.loads(r.stdout) if q["tier"] == "free"]
        assert (free["limit"], free["expires_at"]) == (20, None)
    assert await mon.writes(redis_client) == []
    assert await redis_client.hget(K.quota("free"), "version") == due


@pytest.mark.parametrize(
    "before",
    [
        QuotaSpec(5, DAY),
        QuotaSpec(7, 3600, tier_cap_rps=3, mode="shadow"),
        QuotaSpec(9, 60, paused=True),
    ],
    ids=["plain", "cap-and-shadow", "paused"],
)
async def test_a_due_override_reads_as_what_the_library_writes_when_it_expires(
    store: QuotaStore, redis_client: aioredis.Redis, before: QuotaSpec
) -> None:
    """The one expiry rule, pinned: the Python reading of a due override (codec.effective) equals the library's
    read-only answer (FCALL_RO sw_peek, flagged no-writes: nothing stored) and the quota the library stores when a
    writer expires it, for plain, capped/shadow and paused fallbacks."""
    await store.set("pro", before, actor="t")
    await store.set("pro", QuotaSpec(2, 3600), actor="t", for_s=600)  # stacked: still falls back to `before`
    await _due(store, "pro")
    raw = await redis_client.hgetall(K.quota("pro"))
    q, prev = quota_from_hash("pro", raw)
    read = effective(q, prev, await store._now())
    status, body = await redis_client.fcall_ro("sw_peek", 1, K.quota("pro"))
    assert status == b"ok" and quota_from_json(body) == read
    assert await redis_client.hgetall(K.quota("pro")) == raw  # peeking wrote nothing
    written = await store.get("pro")  # a writer: persists the expiry through the library
    assert await redis_client.hget(K.quota("pro"), "expires_at") == b""  # the library wrote it
    assert read == written
    assert read is not None and read.settings() == before
