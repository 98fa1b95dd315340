"""The console against a real Valkey and real loopback /metrics nodes, driven by keys like an operator."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from quotas.limiter import Limiter
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from surgewatch.settings import Settings
from tests.conftest import L4_CAPTURE
from tui.app import SurgewatchApp, create_app
from tui.screens.editor import QuotaEditor
from tui.screens.history import HistoryScreen
from tui.screens.refused import RefusedScreen
from tui.testing import MetricsNode, multiply_page, screen_text, wait_until
from tui.testing import notifications as notes
from tui.widgets.events_log import EventLog
from tui.widgets.tiers import TierPanel


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[QuotaStore]:
    """A seeded quota store (library loaded, default tiers) on the test's Valkey."""
    s = QuotaStore(redis_client)
    await s.init()
    yield s


@pytest.fixture
def node() -> Iterator[MetricsNode]:
    """A loopback node serving the real dcgm-exporter L4 capture for 2 GPUs."""
    with MetricsNode(multiply_page(L4_CAPTURE.read_text(), 2)) as n:
        yield n


def make(valkey: ValkeyProcess, *, nodes: tuple[str, ...] = (), read_only: bool = False, url: str | None = None,
         sources: tuple[str, ...] = ("traffic",)) -> SurgewatchApp:
    settings = Settings(redis_url=url or valkey.url, nodes=nodes, interval_s=0.2, node_interval_s=0.3,
                        read_only=read_only)
    return create_app(settings, sources=sources, actor="tester")


def tiers_text(app: SurgewatchApp) -> str:
    return screen_text(app)


def event_texts(app: SurgewatchApp) -> list[str]:
    """The lines of the overview's events panel (the widget's own list, so it keeps growing)."""
    return app.overview.query_one("#events", EventLog).texts


async def open_editor(pilot: Pilot[int], app: SurgewatchApp, tier: str) -> QuotaEditor:
    """Keys an operator presses: e (jumps to the tier list), arrows to the tier, e again."""
    await wait_until(pilot, lambda: tier in app.state.quotas, what=f"tier {tier} loaded")
    await pilot.press("e")
    await wait_until(pilot, lambda: app.overview.tiers_focused, what="tier list focused")
    for _ in range(10):
        if app.overview.selected_tier == tier:
            break
        await pilot.press("down")
    assert app.overview.selected_tier == tier
    await pilot.press("e")
    return await wait_until(pilot, lambda: isinstance(app.screen, QuotaEditor) and app.screen, what="editor")


async def type_into(pilot: Pilot[int], field: str, text: str) -> None:
    """Focus a field by clicking it, clear it, type."""
    await pilot.click(f"#{field}")
    await pilot.press("home", "ctrl+k", *list(text))


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_edit_flow_end_to_end(valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis,
                                    size: tuple[int, int]) -> None:
    """Keys pressed in the editor change the quota in Redis, write one audit entry and update the screen."""
    limiter = Limiter(redis_client)
    for user in ("u1", "u2"):
        for _ in range(6):
            await limiter.check("free", user)  # ranks 1..6 per user: a lower limit would refuse some
    app = make(valkey)
    async with app.run_test(size=size) as pilot:
        editor = await open_editor(pilot, app, "free")
        assert editor.query_one("#spec", Input).value == app.state.quotas["free"].spec  # prefilled
        await type_into(pilot, "spec", "3/1x")
        await wait_until(
            pilot, lambda: "invalid window" in str(editor.query_one("#error").render()), what="inline error"
        )
        assert editor.query_one("#apply").disabled
        await type_into(pilot, "spec", "2/1d")
        await type_into(pilot, "reason", "surge")
        await wait_until(pilot, lambda: "would have been refused" in str(editor.query_one("#impact").render()),
                         what="what-if")
        assert "of 12 admitted requests, 8" in str(editor.query_one("#impact").render())
        before = await store.get("free")
        assert before is not None
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, QuotaEditor), what="editor closed")
        q = await store.get("free")
        assert q is not None and q.spec == "2/1d" and q.version == before.version + 1
        (entry,) = await store.history("free", count=1)
        assert entry.new is not None and (entry.actor, entry.reason, entry.new.spec) == ("tester", "surge", "2/1d")
        await wait_until(pilot, lambda: "by tester" in screen_text(app) or "by tester" in "\n".join(
            event_texts(app)), what="audit event shown")
        assert app.state.quotas["free"].spec == "2/1d"
        if size == (200, 60):
            assert "2/1d" in screen_text(app)
        await pilot.press("h")  # the audit history of the selected tier
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), what="history")
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count >= 2, what="history rows")
        newest = [str(c) for c in table.get_row_at(0)]
        assert newest[1:4] == ["free", str(q.version), "tester"] and newest[-1] == "surge"
        assert newest[4].endswith("-> 2/1d")


async def test_conflict_flow_names_who_and_reloads(valkey: ValkeyProcess, store: QuotaStore) -> None:
    """A change made elsewhere while the form is open is refused with who did it; reload then apply works."""
    app = make(valkey)
    async with app.run_test(size=(120, 40)) as pilot:
        editor = await open_editor(pilot, app, "pro")
        v = app.state.quotas["pro"].version
        await store.set("pro", QuotaSpec(99, 60), actor="bob", reason="other console", expect_version=v)
        await type_into(pilot, "spec", "10/1m")
        await pilot.press("ctrl+s")
        await wait_until(
            pilot, lambda: "changed by bob" in str(editor.query_one("#conflict").render()), what="conflict"
        )
        pro = await store.get("pro")
        assert pro is not None and pro.limit == 99  # nothing overwritten
        await pilot.click("#reload")
        await wait_until(pilot, lambda: editor.quota.version == v + 1, what="reloaded")
        assert editor.query_one("#spec", Input).value == "99/1m"
        await type_into(pilot, "spec", "10/1m")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, QuotaEditor), what="applied")
        q = await store.get("pro")
        assert q is not None and q.limit == 10 and q.version == v + 2


async def test_edit_refused_by_a_full_server_says_why_and_changes_nothing(
        valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """An edit on a server out of memory says so in the form, changes nothing, and applies once memory is back."""
    app = make(valkey)
    async with app.run_test(size=(120, 40)) as pilot:
        editor = await open_editor(pilot, app, "free")
        before = await store.get("free")
        assert before is not None
        await type_into(pilot, "spec", "3/1d")
        await redis_client.config_set("maxmemory-policy", "noeviction")
        await redis_client.config_set("maxmemory", "1")
        try:
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: "out of memory" in str(editor.query_one("#conflict").render()),
                             what="refusal shown")
            assert "nothing was changed" in str(editor.query_one("#conflict").render())
            assert isinstance(app.screen, QuotaEditor)  # the form stays open with what was typed
        finally:
            await redis_client.config_set("maxmemory", "0")
        assert await store.get("free") == before
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, QuotaEditor), what="applied")
        q = await store.get("free")
        assert q is not None and q.spec == "3/1d" and q.version == before.version + 1


async def test_read_only_with_acl_viewer(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """Read-only works as a Redis user that may only read: no edit binding, no write attempted, no password shown."""
    await redis_client.execute_command(
        "ACL", "SETUSER", "viewer", "on", ">s3cret", "~*", "&*", "+@read", "+@connection", "-@write",
        "+subscribe", "+ping", "+info", "+time",
    )
    await redis_client.execute_command("ACL", "LOG", "RESET")
    url = f"redis://viewer:s3cret@127.0.0.1:{valkey.port}/0"
    app = make(valkey, url=url, read_only=True)
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: "free" in app.state.quotas and app.state.traffic is not None, what="data")
        await wait_until(pilot, lambda: "free" in screen_text(app), what="tier shown")
        assert "e" not in app.screen.active_bindings
        await pilot.press("tab", "tab", "e")  # a key press is handled before press() returns
        app.action_edit("free")  # the action itself, as the palette would call it: refused too
        assert not isinstance(app.screen, QuotaEditor) and isinstance(app.screen, type(app.overview))
        await wait_until(pilot, lambda: any("read-only console" in n for n in notes(app)), what="refusal")
        assert not isinstance(app.screen, QuotaEditor)
        text = screen_text(app)
        assert "s3cret" not in text and "viewer:***@" in text
        assert app.state.redis_error is None
    denied = await redis_client.execute_command("ACL", "LOG")
    assert denied == [], denied  # the console never even tried a command the viewer lacks
    before = await store.history("free", count=50)
    assert all(e.actor != "tester" for e in before)


async def test_external_change_appears(valkey: ValkeyProcess, store: QuotaStore) -> None:
    """A change made elsewhere (another store, as the CLI) reaches the tier panel and events by pub/sub alone."""
    app = make(valkey, sources=())  # no traffic polling: only the pub/sub path can bring the change
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: "team" in app.state.quotas, what="quotas")
        v = app.state.quotas["team"].version
        await store.set("team", QuotaSpec(7, 3600, 40), actor="carol", reason="load test", expect_version=v)
        await wait_until(pilot, lambda: app.state.quotas["team"].version == v + 1, timeout=5.0, what="change pushed")
        await wait_until(pilot, lambda: "7/1h" in screen_text(app), timeout=5.0, what="on screen")
        assert any("by carol" in t and "(load test)" in t for t in event_texts(app))


async def test_hand_edited_quota_shows_broken_until_set(valkey: ValkeyProcess, store: QuotaStore,
                                                       redis_client: aioredis.Redis) -> None:
    """A quota field changed with redis-cli turns the tier BROKEN with the reason in the events; a set repairs it."""
    app = make(valkey)
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: "team" in app.state.quotas, what="quotas")
        before = await store.get("team")  # the store's version: the console's first list may be read after the edit
        assert before is not None
        await redis_client.hset("surgewatch:{team}:quota", "limit", "5")  # no version, no audit, no event
        await wait_until(pilot, lambda: re.search(r"\bteam +BROKEN\b", screen_text(app)), timeout=5.0,
                         what="tier shown broken")
        events = event_texts(app)
        assert sum("tier team quota unreadable" in t and "edited outside surgewatch" in t for t in events) == 1
        await store.set("team", QuotaSpec(5, 3600), actor="carol", reason="the edit, done properly")
        await wait_until(pilot, lambda: re.search(r"\bteam +active\b", screen_text(app)), timeout=5.0,
                         what="tier repaired")
        assert app.state.quotas["team"].version == before.version + 1
        assert any("tier team quota readable again" in t for t in event_texts(app))


async def test_lost_change_feed_shows_in_the_banner(valkey: ValkeyProcess, store: QuotaStore) -> None:
    """With no traffic polling, losing the pub/sub link alone still raises the Redis banner, and clears on return."""
    app = make(valkey, sources=())
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: "free" in app.state.quotas, what="quotas")
        valkey.stop()
        await wait_until(pilot, lambda: "quota change feed lost" in screen_text(app), timeout=15, what="banner")
        valkey.start()
        await wait_until(pilot, lambda: "Redis unreachable" not in screen_text(app), timeout=20, what="recovered")


async def test_redis_stopped_and_started(valkey: ValkeyProcess, store: QuotaStore) -> None:
    """Redis lost: banner with retry, stale values, edit refused; back: it reconnects, resubscribes, re-reads."""
    app = make(valkey)
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: app.state.traffic is not None and "free" in app.state.quotas, what="data")
        await pilot.press("e")  # the tier list focused, a tier selected: the next `e` opens the editor...
        await wait_until(pilot, lambda: app.overview.tiers_focused and app.overview.selected_tier, what="tier list")
        valkey.stop()
        # the change feed may notice first; the traffic poll's failure then adds when it retries
        await wait_until(pilot, lambda: "Retrying in" in screen_text(app), timeout=15, what="banner")
        assert "Redis unreachable" in screen_text(app) and "Traffic and quotas shown are" in screen_text(app)
        assert app.overview.query_one(TierPanel).stale  # values dimmed, not hidden
        assert "free" in screen_text(app)
        assert app.overview.tiers_focused and app.overview.selected_tier  # ...were Redis up
        await pilot.press("e")  # handled before press() returns: an editor would be on the screen stack now
        assert not isinstance(app.screen, QuotaEditor)
        assert any(n.startswith("Edit refused: ") for n in notes(app)), notes(app)
        assert isinstance(app.screen, RefusedScreen)  # it holds what the operator types on
        await pilot.press("escape")
        assert not isinstance(app.screen, RefusedScreen)
        valkey.start()
        client = aioredis.Redis.from_url(valkey.url)
        fresh = QuotaStore(client)
        await fresh.init()  # no persistence: the restarted server is empty until seeded again
        # recovered: the traffic poll and the change feed both back (a feed still down refuses edits, and says so)
        await wait_until(pilot, lambda: not app.state.banner()[1], timeout=20, what="recovered")
        await fresh.set("free", QuotaSpec(1, 86400), actor="dave", reason="after restart", expect_version=1)
        await wait_until(pilot, lambda: app.state.quotas.get("free") and app.state.quotas["free"].limit == 1,
                         timeout=10, what="resubscribed and re-read")
        await client.aclose()
        await pilot.press("e")  # Redis back: the same key opens the editor (the refusal was the outage's)
        await wait_until(pilot, lambda: isinstance(app.screen, QuotaEditor), what="editor once Redis is back")
        texts = event_texts(app)
        back = next((i for i, t in enumerate(texts) if "Redis traffic back" in t), None)
        assert back is not None, texts
        assert not [t for t in texts[back:] if "failing" in t], texts[back:]  # back means back: no dead pooled link


async def test_refused_login_says_so_in_the_banner(valkey: ValkeyProcess) -> None:
    """A wrong password is shown as a refused login (not an outage), without the password, and edits are refused."""
    admin = aioredis.Redis.from_url(valkey.url)
    await admin.config_set("requirepass", "right-one")
    await admin.aclose()
    app = make(valkey, url=valkey.url.replace("redis://", "redis://:wrong-one@"))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: "Redis refused the login" in screen_text(app), timeout=10, what="banner")
        text = screen_text(app)
        assert "Redis unreachable" not in text and "wrong-one" not in text and "right-one" not in text
        await pilot.press("e", "e")  # the first would only focus the tier list: refused before that
        assert not isinstance(app.screen, QuotaEditor)
        assert any(n.startswith("Edit refused: ") for n in notes(app)), notes(app)
        assert not app.overview.tiers_focused


async def test_quotas_re_read_after_a_reconnect(valkey: ValkeyProcess, store: QuotaStore) -> None:
    """After a reconnect every quota is re-read: a server restarted with other data (a lower version, written
    while the console was away, so no event reached it) replaces what the console showed; no source polls."""
    app = make(valkey, sources=())  # no traffic poll: only the re-read after resubscribing can bring the data
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: "free" in app.state.quotas, what="quotas")
        for limit in (5, 6, 7):
            await store.set("free", QuotaSpec(limit, 86400), actor="erin", reason="before the restart")
        await wait_until(pilot, lambda: app.state.quotas["free"].version == 4, what="version 4 shown")
        # the data the server comes back with: version 2 of free, written where the console cannot see it
        with ValkeyProcess() as other:
            c = aioredis.Redis.from_url(other.url)
            elsewhere = QuotaStore(c)
            await elsewhere.init()
            await elsewhere.set("free", QuotaSpec(2, 3600), actor="frank", reason="restored from a backup")
            await c.save()
            await c.aclose()
            dump = (other.data_dir / "dump.rdb").read_bytes()
        valkey.stop()
        await wait_until(pilot, lambda: "quota change feed lost" in screen_text(app), timeout=15, what="feed lost")
        (valkey.data_dir / "dump.rdb").write_bytes(dump)
        valkey.start()  # loads dump.rdb at start: the data is there before any client can connect
        await wait_until(pilot, lambda: app.state.quotas["free"].version == 2, timeout=20, what="re-read")
        q = app.state.quotas["free"]
        assert (q.limit, q.window_s, q.updated_by) == (2, 3600, "frank")
        await wait_until(pilot, lambda: "2/1h" in screen_text(app), what="shown")


async def test_node_going_down_and_back(valkey: ValkeyProcess, store: QuotaStore, node: MetricsNode) -> None:
    """A node that stops answering keeps its GPUs dimmed as down with an age, an event, then comes back."""
    app = make(valkey, nodes=(node.url,), sources=("fleet",))
    label = f"127.0.0.1:{node.port}"
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: len(app.state.rows) == 2 and app.state.rows[0].status != "down", what="node up")
        await wait_until(pilot, lambda: label in screen_text(app) and "0 L4" in screen_text(app), what="rows drawn")
        node.stop()
        await wait_until(pilot, lambda: all(r.status == "down" for r in app.state.rows), timeout=10, what="down")
        events = event_texts(app)
        await wait_until(pilot, lambda: any(f"node {label} down" in t for t in events), what="down event")
        await wait_until(pilot, lambda: "down " in screen_text(app), what="status with its age")
        first = max(r.age_s or 0 for r in app.state.rows)
        await wait_until(pilot, lambda: min(r.age_s or 0 for r in app.state.rows) >= first + 2, timeout=15,
                         what="the age growing while the node stays down")
        node.start()
        await wait_until(pilot, lambda: any(f"node {label} back up" in t for t in events), timeout=10, what="up event")
        await wait_until(pilot, lambda: all(r.status != "down" for r in app.state.rows), what="rows fresh")
