"""Bounded work: tiers per import and in all, JSON depth, and a console that coalesces a storm of change events
(at most one re-read per tier per second), on a real Valkey."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import cast

import redis.asyncio as aioredis

from quotas.feed import Coalescer, QuotaEvent, coalesced, quota_events
from quotas.keys import Keys
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from surgewatch.settings import Settings
from tests.test_quota_cli import sw
from tests.test_readers_never_write import Monitor
from tui.app import create_app
from tui.testing import wait_until

K = Keys()


def _backup(n: int, first: int = 0) -> str:
    return json.dumps([{"tier": f"t{i}", "limit": 5, "window_s": 60, "tier_cap_rps": None, "paused": False,
                        "mode": "enforce", "expires_at": None} for i in range(first, first + n)])


async def _written(r: aioredis.Redis) -> tuple[set[bytes], list[bytes]]:
    """The registry and every key: what an import could have written."""
    return {cast(bytes, m) for m in await r.smembers(K.tiers)}, sorted(cast(bytes, k) for k in await r.keys("*"))


async def test_an_import_over_the_tiers_per_import_bound_is_refused_whole(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """1,001 tiers in one file: exit 2 naming the bound of 1,000 per import, nothing written; --max-tiers raises it."""
    before = await _written(redis_client)
    big = tmp_path / "big.json"
    big.write_text(_backup(1001))
    r = sw(valkey.url, "quota", "import", str(big))
    assert r.returncode == 2, r.stderr
    assert "1,001 entries, over the bound of 1,000 tiers per import" in r.stderr and "--max-tiers" in r.stderr
    assert await _written(redis_client) == before
    small = tmp_path / "small.json"
    small.write_text(_backup(4))
    assert sw(valkey.url, "quota", "import", str(small), "--max-tiers", "3").returncode == 2
    below = sw(valkey.url, "quota", "import", str(small), "--max-tiers", "-1")
    assert below.returncode == 2 and "(--max-tiers)" in below.stderr
    assert "SURGEWATCH_MAX_IMPORT_TIERS" not in below.stderr
    assert await _written(redis_client) == before
    assert sw(valkey.url, "quota", "import", str(small), "--max-tiers", "4").returncode == 0
    assert len(await redis_client.smembers(K.tiers)) == 9


async def test_tiers_in_all_are_bounded_for_import_and_create(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """With SURGEWATCH_MAX_TIERS=7 and 5 tiers stored, importing 3 new ones is refused whole (exit 2, the bound
    named), 2 are written; then `quota set --create` of an 8th is refused; a bad bound is exit 2."""
    env = {"SURGEWATCH_MAX_TIERS": "7"}
    f = tmp_path / "three.json"
    f.write_text(_backup(3))
    before = await _written(redis_client)
    r = sw(valkey.url, "quota", "import", str(f), env=env)
    assert r.returncode == 2 and "3 new tiers on top of the 5 stored would pass the bound of 7 tiers in all" in r.stderr
    assert await _written(redis_client) == before
    f.write_text(_backup(2))
    assert sw(valkey.url, "quota", "import", str(f), env=env).returncode == 0
    r = sw(valkey.url, "quota", "set", "eighth", "5/1m", "--create", env=env)
    assert r.returncode == 2 and "bound of 7 tiers in all" in r.stderr
    assert b"eighth" not in await redis_client.smembers(K.tiers)
    assert sw(valkey.url, "quota", "set", "free", "6/1d", env=env).returncode == 0  # changing a tier is no new tier
    assert sw(valkey.url, "quota", "list", env={"SURGEWATCH_MAX_TIERS": "many"}).returncode == 2


def test_a_deeply_nested_file_is_a_clear_refusal(valkey: ValkeyProcess, tmp_path: Path) -> None:
    """A 100,000-deep nested JSON array: exit 2 with a message naming the nesting, no traceback."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    r = sw(valkey.url, "quota", "import", str(deep))
    assert r.returncode == 2 and "nests JSON deeper than a backup ever does" in r.stderr
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr


def test_the_coalescer_holds_a_tiers_changes_to_one_per_gap() -> None:
    """Within a second, the first change of a tier goes through, later ones are held and go through as one (the
    newest) once the second is over; control events pass at once; too many held tiers become one `reread`."""
    now = [100.0]
    c = Coalescer(gap_s=1.0, max_tiers=3, clock=lambda: now[0])
    for v in range(1, 6):
        c.offer(QuotaEvent("set", "free", v, "a"))
    c.offer(QuotaEvent("set", "pro", 1, "a"))
    assert [(e.tier, e.version) for e in c.take()] == [("free", 1), ("pro", 1)]
    c.offer(QuotaEvent("set", "free", 6, "a"))
    assert c.take() == [] and c.wait_s() == 1.0
    now[0] += 1.0
    assert [(e.tier, e.version) for e in c.take()] == [("free", 6)]
    for t in ("a", "b", "c", "d"):
        c.offer(QuotaEvent("set", t, 1, "x"))
        c.offer(QuotaEvent("set", t, 2, "x"))
    c.offer(QuotaEvent("disconnected", error="gone"))
    kinds = [e.kind for e in c.take()]
    assert "reread" in kinds and kinds[-1] == "disconnected" and c.wait_s() is None


async def test_a_storm_of_changes_reaches_a_subscriber_coalesced(valkey: ValkeyProcess, store: QuotaStore) -> None:
    """200 changes of one tier as fast as Redis takes them: the coalesced feed yields at most one event for it per
    second of the storm (plus the first), and the last one it yields is the last version written."""
    got: list[tuple[float, QuotaEvent]] = []
    subscribed = asyncio.Event()

    async def consume() -> None:
        async for ev in coalesced(quota_events(valkey.url)):
            got.append((time.monotonic(), ev))
            if ev.kind == "resubscribed":
                subscribed.set()

    task = asyncio.create_task(consume())
    try:
        async with asyncio.timeout(30):  # a hang guard
            await subscribed.wait()
            started = time.monotonic()
            for n in range(200):
                last = await store.set("free", QuotaSpec(100 + n, 86400), actor="storm")
            took = time.monotonic() - started
            while not any(e.version == last.version for _, e in got):
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    free = [(at, e) for at, e in got if e.tier == "free"]
    assert len(free) <= took + 2  # one per second of the storm, plus the first and the last held one


async def test_a_console_re_reads_a_storming_tier_at_most_once_a_second(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """A read-only console while 300 changes hit free: it shows the last one, and its history reads of free
    (one per re-read) are at most one per second of the storm, plus the first."""
    app = create_app(Settings(redis_url=valkey.url, interval_s=0.5, read_only=True), sources=(), actor="tester")
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: "free" in app.state.quotas, what="quotas loaded", timeout=20)
        async with Monitor(valkey) as mon:
            started = time.monotonic()
            for n in range(300):
                last = await store.set("free", QuotaSpec(100 + n, 86400), actor="storm")
            took = time.monotonic() - started
            await wait_until(pilot, lambda: app.state.quotas["free"].version == last.version, what="last change",
                             timeout=20)
    reads = [c for c in mon.commands if c.startswith("XREVRANGE surgewatch:{free}:audit ")]
    assert 1 <= len(reads) <= took + 3
