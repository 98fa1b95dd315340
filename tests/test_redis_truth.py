"""Never calm while it burns: Redis faults made for real, under the real console, in the CLI and --json."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from collectors.traffic import TrafficCollector
from quotas.keys import Keys
from quotas.limiter import Limiter
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess, free_port
from surgewatch.settings import Settings
from tests.conftest import ROOT, wait_away_from_window_edges
from tui.app import SurgewatchApp, create_app
from tui.screens.restore import RestoreScreen
from tui.testing import screen_text, wait_until
from tui.widgets.tiers import TierPanel


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[QuotaStore]:
    """A seeded quota store on the test's Valkey."""
    s = QuotaStore(redis_client)
    await s.init()
    yield s


def console(valkey: ValkeyProcess, *, read_only: bool = False) -> SurgewatchApp:
    """The real console on the test's Valkey, traffic source only, polling fast."""
    settings = Settings(redis_url=valkey.url, interval_s=0.2, read_only=read_only)
    return create_app(settings, sources=("traffic",), actor="tester")


def snapshot(url: str) -> dict[str, Any]:
    """`surgewatch snapshot --json --no-local` against the server, as a script would run it."""
    out = subprocess.run([sys.executable, "-m", "surgewatch.cli", "--redis", url, "snapshot", "--json", "--no-local"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def events(app: SurgewatchApp) -> str:
    return "\n".join(e.text for e in app.state.events)


def banner(app: SurgewatchApp) -> str:
    return app.state.banner()[1]


async def test_unknown_tier_is_counted_exactly_and_reported(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Decisions for a tier whose quota was deleted are counted as unknown_tier, in rejected_rps and by reason."""
    await wait_away_from_window_edges(redis_client)
    await redis_client.delete(Keys().quota("pro"))
    limiter = Limiter(redis_client)
    for i in range(7):
        assert (await limiter.check("pro", f"u{i}")).reason == "unknown_tier"
    await limiter.check_many([("pro", "a", 2), ("pro", "b", 1)])
    collector = TrafficCollector(redis_client)
    await collector.backfill()
    await wait_until_next_second(redis_client)
    sample = await collector.poll()
    (pro,) = [t for t in sample.tiers if t.tier == "pro"]
    assert pro.state == "no_quota" and pro.quota is None
    assert pro.rejected_by_reason_1m["unknown_tier"] == 10 and pro.rejected_1m == 10
    assert pro.rejected_rps == pytest.approx(1.0)  # 10 in the last 10 s
    assert sample.redis.status == "ok"


async def wait_until_next_second(client: aioredis.Redis) -> None:
    """Let the server's current second complete (the collector reads complete seconds only)."""
    import asyncio

    _secs, usecs = await client.time()
    await asyncio.sleep(1.05 - int(usecs) / 1e6)


async def test_deleted_quota_is_a_red_state_with_its_fix(valkey: ValkeyProcess, store: QuotaStore,
                                                         redis_client: aioredis.Redis) -> None:
    """DEL of a tier's quota while the console runs: NO QUOTA on screen, a crit event naming unknown_tier and
    the fix, the banner; `quota list` shows the tier and exits 1; snapshot says no_quota."""
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "pro" in app.state.quotas, what="tiers loaded")
        await redis_client.delete(Keys().quota("pro"))
        await wait_until(pilot, lambda: "pro" in app.state.missing, what="pro missing")
        await wait_until(pilot, lambda: "NO QUOTA" in screen_text(app), what="NO QUOTA on screen")
        # the change feed can show the tier gone before the traffic poll that raises the event sees it
        await wait_until(pilot, lambda: "unknown_tier" in events(app), what="the no_quota event")
        assert "quota set pro" in events(app)
        assert any(e.severity == "crit" and e.kind == "no_quota" for e in app.state.events)
        assert "NO QUOTA for pro" in banner(app) and "Press r" in banner(app)
        await wait_until(pilot, lambda: app.overview.query_one(TierPanel).quotas.get("pro") is None,
                         what="the old 600/1h no longer shown")
    out = subprocess.run([sys.executable, "-m", "surgewatch.cli", "--redis", valkey.url, "quota", "list"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no quota" in out.stdout and "unknown_tier" in out.stderr
    assert {t["tier"]: t["state"] for t in snapshot(valkey.url)["tiers"]}["pro"] == "no_quota"


async def test_flushed_redis_is_restored_from_the_console(valkey: ValkeyProcess, store: QuotaStore,
                                                          redis_client: aioredis.Redis) -> None:
    """Redis emptied while the console runs: a named state, `r` shows what will be written, `y` writes it back
    through the store with one audit entry per tier, and the console is calm again."""
    from quotas.model import QuotaSpec

    await store.set("free", QuotaSpec(3, 86400), actor="alice", reason="surge")
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: app.state.quotas.get("free") and app.state.quotas["free"].limit == 3,
                         what="tiers loaded")
        await redis_client.flushall()  # every key gone, as after a restart without persistence
        await wait_until(pilot, lambda: len(app.state.missing) == 5, what="every tier missing")
        await wait_until(pilot, lambda: "Press r" in banner(app), what="restore offered")
        await pilot.press("r")
        screen = await wait_until(pilot, lambda: isinstance(app.screen, RestoreScreen) and app.screen, what="restore")
        assert [q.tier for q in screen.quotas] == ["enterprise", "free", "plus", "pro", "team"]
        await wait_until(pilot, lambda: "3/1d" in screen_text(app) and "restored by tester" in screen_text(app),
                         what="the plan and its audit reason on screen")
        assert await redis_client.keys("*") == []  # nothing written before the confirmation
        await pilot.press("y")
        await wait_until(pilot, lambda: not isinstance(app.screen, RestoreScreen), what="restored")
        await wait_until(pilot, lambda: not app.state.missing, what="no tier missing")
        await wait_until(pilot, lambda: banner(app) == "", what="banner cleared")
    quotas = {q.tier: q for q in await store.list()}
    assert quotas["free"].spec == "3/1d" and quotas["pro"].spec == "600/1h"
    (entry,) = await store.history("free", count=5)
    assert entry.actor == "tester" and entry.reason.startswith("restored by tester from the console's last-known")


async def test_read_only_console_warns_without_the_offer(valkey: ValkeyProcess, store: QuotaStore,
                                                          redis_client: aioredis.Redis) -> None:
    """A read-only console shows the lost tiers and how to restore them, and `r` writes nothing."""
    app = console(valkey, read_only=True)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "team" in app.state.quotas, what="tiers loaded")
        await redis_client.delete(Keys().quota("team"))
        await wait_until(pilot, lambda: "NO QUOTA for team" in banner(app), what="warned")
        assert "quota import" in banner(app) and "Press r" not in banner(app)
        await pilot.press("r")
        assert not isinstance(app.screen, RestoreScreen)
    assert await redis_client.exists(Keys().quota("team")) == 0


async def test_out_of_memory_is_named_and_refuses_edits(valkey: ValkeyProcess, store: QuotaStore,
                                                         redis_client: aioredis.Redis) -> None:
    """maxmemory 1 under noeviction: the banner names it and what gateways get, edits are refused; snapshot says so."""
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "free" in app.state.quotas, what="tiers loaded")
        await redis_client.config_set("maxmemory-policy", "noeviction")
        await redis_client.config_set("maxmemory", "1")
        try:
            await wait_until(pilot, lambda: "OUT OF MEMORY" in banner(app), what="OOM banner")
            assert "fail open or closed" in banner(app) and "unreachable" not in banner(app).lower()
            assert app.state.edit_refusal() is not None
            assert "Redis out_of_memory" in events(app)
            assert snapshot(valkey.url)["redis"]["status"] == "out_of_memory"
        finally:
            await redis_client.config_set("maxmemory", "0")
        await wait_until(pilot, lambda: banner(app) == "", what="calm again")
        assert app.state.edit_refusal() is None


async def test_read_only_replica_is_named(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """A server turned into a replica (a failover left us on the old primary) is named, with the primary."""
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "free" in app.state.quotas, what="tiers loaded")
        await redis_client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            await wait_until(pilot, lambda: "READ-ONLY REPLICA" in banner(app), what="replica banner")
            assert snapshot(valkey.url)["redis"]["status"] == "read_only_replica"
        finally:
            await redis_client.execute_command("REPLICAOF", "NO", "ONE")


async def test_persistence_error_is_named(valkey: ValkeyProcess, store: QuotaStore,
                                          redis_client: aioredis.Redis) -> None:
    """A background save that fails (a directory where its file must go) is MISCONF: named on screen and in
    snapshot, and the limiter's writes are refused (fail_open decides)."""
    dbfile = (await redis_client.config_get("dbfilename"))["dbfilename"]
    assert dbfile is not None
    (valkey.data_dir / dbfile).mkdir()  # the save's final rename onto it fails, whoever runs the server
    await redis_client.config_set("save", "3600 1")
    await redis_client.bgsave()
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "MISCONF" in banner(app), timeout=20, what="persistence banner")
        assert app.state.edit_refusal() is not None
    assert snapshot(valkey.url)["redis"]["status"] == "persistence_error"
    assert (await Limiter(redis_client, fail_open=True).check("free", "u")).allowed  # no answer: fail open


async def test_wrong_type_registry_is_bad_data_not_unreachable(valkey: ValkeyProcess, store: QuotaStore,
                                                                redis_client: aioredis.Redis) -> None:
    """The tier registry made a string: bad data naming the key and the fix, the tiers stay on screen, the CLI
    names the key too; never "unreachable"."""
    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "free" in app.state.quotas, what="tiers loaded")
        await redis_client.delete(Keys().tiers)
        await redis_client.set(Keys().tiers, "junk")
        await wait_until(pilot, lambda: "BAD DATA" in banner(app), what="bad data banner")
        assert "surgewatch:tiers" in banner(app) and "DEL surgewatch:tiers" in banner(app)
        assert "unreachable" not in banner(app).lower()
        assert "free" in screen_text(app) and "600/1h" in screen_text(app)  # the panel is not blanked
    for argv in (("quota", "list"), ("init",)):
        out = subprocess.run([sys.executable, "-m", "surgewatch.cli", "--redis", valkey.url, *argv],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "surgewatch:tiers is not a set" in out.stderr and "DEL" in out.stderr
    doc = snapshot(valkey.url)
    assert doc["redis"]["status"] == "bad_data" and "surgewatch:tiers" in doc["redis"]["error"]


async def test_keys_typed_after_a_refused_edit_do_not_reach_the_main_screen(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """e on a full server is refused in a modal; the `3/1d` and Enter typed on are held by it (no GPU filter
    opens, nothing quits), and Enter closes it."""
    from textual.widgets import Input

    from tui.screens.refused import RefusedScreen

    app = console(valkey)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: "free" in app.state.quotas, what="tiers loaded")
        app.overview.focus_tiers()
        await redis_client.config_set("maxmemory-policy", "noeviction")
        await redis_client.config_set("maxmemory", "1")
        try:
            await wait_until(pilot, lambda: app.state.edit_refusal() is not None, what="refusing edits")
            await pilot.press("e")
            assert isinstance(app.screen, RefusedScreen)
            await pilot.press("3", "slash", "1", "d", "q", "h")
            assert isinstance(app.screen, RefusedScreen) and app.is_running
            await pilot.press("enter")
            assert app.screen is app.overview
            assert not any(i.display and i.has_focus for i in app.overview.query(Input))  # no filter opened
        finally:
            await redis_client.config_set("maxmemory", "0")
