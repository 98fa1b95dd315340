"""Writes paused and the limiter library missing are named states, never "ok": in `snapshot --json` and in the
console's banner, with what gateways get, found by read-only probes on a real Valkey."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from quotas.keys import Keys
from quotas.limiter import Limiter
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from surgewatch.settings import Settings
from surgewatch.snapshot import render_text, take_snapshot
from tui.app import create_app
from tui.testing import screen_text, wait_until

K = Keys()


@pytest.fixture
async def paused(store: QuotaStore, redis_client: aioredis.Redis) -> AsyncIterator[None]:
    """Redis holds every write for a minute (CLIENT PAUSE ... WRITE, as a manual failover does)."""
    await redis_client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        yield
    finally:
        await redis_client.execute_command("CLIENT", "UNPAUSE")


async def _snapshot(valkey: ValkeyProcess) -> dict[str, object]:
    return await take_snapshot(redis_url=valkey.url, prefix=K.prefix, nodes=(), prometheus=None, local=False)


async def test_snapshot_names_writes_paused_with_what_gateways_get(valkey: ValkeyProcess, paused: None) -> None:
    """Under CLIENT PAUSE WRITE, `snapshot --json` says redis.status writes_paused (not ok), why, and that
    gateways get no answer; the table says so too."""
    doc = await _snapshot(valkey)
    redis = doc["redis"]
    assert isinstance(redis, dict) and redis["status"] == "writes_paused"
    assert "CLIENT PAUSE WRITE" in redis["error"] and "no answer within their timeout" in redis["error"]
    assert "REDIS WRITES_PAUSED: Redis holds every write" in render_text(doc)


async def test_a_paused_server_is_a_banner_in_the_console(valkey: ValkeyProcess, paused: None) -> None:
    """A console started while writes are paused shows the named banner and refuses edits up front."""
    app = create_app(Settings(redis_url=valkey.url, interval_s=0.2), sources=("traffic",), actor="tester")
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: "REDIS HOLDS WRITES" in screen_text(app), what="the paused banner",
                         timeout=20)
        assert app.state.edit_refusal() is not None


async def test_a_flushed_library_is_named_in_snapshot_and_console(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """After FUNCTION FLUSH every gateway FCALL fails; `snapshot` says library_missing and the console's banner
    names it, and neither reloads the library (reading never writes); a Python Limiter's call brings it back."""
    await redis_client.execute_command("FUNCTION", "FLUSH")
    doc = await _snapshot(valkey)
    redis = doc["redis"]
    assert isinstance(redis, dict) and redis["status"] == "library_missing"
    assert "Function not found" in redis["error"] and "surgewatch init" in redis["error"]
    app = create_app(Settings(redis_url=valkey.url, interval_s=0.2, read_only=True), sources=("traffic",))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: "LIMITER LIBRARY MISSING" in screen_text(app), what="the library banner",
                         timeout=20)
    assert await redis_client.execute_command("FUNCTION", "LIST") == []
    await Limiter(redis_client).check("free", "u")  # a writer reloads it
    assert (await _snapshot(valkey))["redis"] == {"status": "ok", "error": None}
