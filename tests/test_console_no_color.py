"""NO_COLOR: every screen and panel starts and renders in greys only, every text reads at WCAG AA contrast or in
reverse video, and the alarms ("hot 7", "rejected 38.3%", "ongoing crit", a GPU's status "hot") stand out
in reverse video, at 80x24, 120x40 and 200x60."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rich.segment import Segment
from rich.style import Style
from textual.command import CommandPalette
from textual.widgets import TabbedContent

from tui.no_color import AlarmGreys, contrast, is_text
from tui.screens.editor import QuotaEditor
from tui.screens.help import HelpScreen
from tui.screens.history import HistoryScreen
from tui.testing import frozen_session, settle, wait_until

SIZES = [(80, 24), (120, 40), (200, 60)]


def screen_segments(app: Any) -> Iterator[tuple[int, Segment]]:
    """Every segment the terminal gets for the screen now (after the app's filters), with its row."""
    for y, strip in enumerate(app.screen._compositor.render_strips()):
        for seg in strip:
            yield y, seg


def rgb(colour: Any) -> tuple[int, int, int]:
    t = colour.get_truecolor()
    return (t.red, t.green, t.blue)


def assert_legible_greys(app: Any, where: str) -> None:
    """Every colour on screen is a grey; every text reads at 4.5:1 against its background or is reversed."""
    colours: set[tuple[int, int, int]] = set()
    unreadable: list[tuple[object, ...]] = []
    for y, seg in screen_segments(app):
        style = seg.style or Style()
        for c in (style.color, style.bgcolor):
            if c is not None and not c.is_default:
                colours.add(rgb(c))
        if not is_text(seg.text):
            continue
        if style.color is None or style.bgcolor is None:
            unreadable.append((y, seg.text, "no colour"))
        elif not style.reverse and contrast(rgb(style.color), rgb(style.bgcolor)) < 4.5:
            unreadable.append((y, seg.text, rgb(style.color), rgb(style.bgcolor)))
    assert colours, where
    assert all(r == g == b for r, g, b in colours), (where, sorted(c for c in colours if len(set(c)) > 1))
    assert not unreadable, (where, unreadable[:10])


def styles_of(app: Any, before: str, needle: str) -> list[Style]:
    """The styles of `needle`'s characters where it first follows `before` on a row of the screen."""
    rows: dict[int, list[tuple[str, Style]]] = {}
    for y, seg in screen_segments(app):
        rows.setdefault(y, []).extend((ch, seg.style or Style()) for ch in seg.text)
    for chars in rows.values():
        line = "".join(ch for ch, _ in chars)
        at = line.find(before + needle)
        if at >= 0:
            start = at + len(before)
            return [style for _, style in chars[start: start + len(needle)]]
    raise AssertionError(f"{before + needle!r} is not on screen")


def assert_marked(app: Any, before: str, needle: str) -> None:
    """`needle` (after `before`) is drawn in reverse video, the alarm mark."""
    styles = styles_of(app, before, needle)
    assert all(s.reverse for s in styles), (before, needle, styles)


async def assert_every_tab(app: Any, pilot: Any, where: str) -> None:
    for tab in ("tab-summary", "tab-gpus", "tab-heat", "tab-tiers", "tab-events"):
        tabs = app.overview.query_one(TabbedContent)
        if tab in {p.id for p in tabs.query("TabPane")}:
            tabs.active = tab
            await settle(pilot)
            assert_legible_greys(app, f"{where} {tab}")


@pytest.mark.parametrize("size", SIZES)
async def test_alarms_stand_out_and_every_screen_reads_under_no_color(monkeypatch: Any, store: Any,
                                                                      size: tuple[int, int]) -> None:
    """NO_COLOR=1: the overview (each panel or tab), the heat map by both metrics, help, the palette, the quota
    editor with its what-if and the history render in legible greys, with the alarms in reverse video."""
    monkeypatch.setenv("NO_COLOR", "1")
    url = f"redis://127.0.0.1:{store.client.connection_pool.connection_kwargs['port']}/0"  # a real, seeded Valkey
    async with frozen_session(size, redis_url=url) as (app, pilot):
        assert app.no_color and any(isinstance(f, AlarmGreys) for f in app.get_line_filters())
        assert_legible_greys(app, f"overview {size}")
        assert_marked(app, "hot ", "7")  # the KPI: GPUs at or above the hot threshold
        assert_marked(app, "rejected ", "38.3%")
        assert_marked(app, "▶ ", "ongoing crit")
        if app.overview.query("#tabs"):
            await assert_every_tab(app, pilot, f"{size}")
            app.overview.query_one(TabbedContent).active = "tab-gpus"
            await settle(pilot)
        assert_marked(app, "L4  ", "hot")  # a GPU's status in the table
        await pilot.press("t")
        await settle(pilot)
        assert_legible_greys(app, f"heat map by utilization {size}")
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        assert_legible_greys(app, f"help {size}")
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await settle(pilot)
        assert_legible_greys(app, f"palette {size}")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, CommandPalette), what="palette closed")
        app.action_edit("free")
        editor = await wait_until(pilot, lambda: isinstance(app.screen, QuotaEditor) and app.screen, what="editor")
        await wait_until(pilot, lambda: editor.query("#impact") and str(editor.query_one("#impact").render()).strip(),
                         what="what-if")
        assert_legible_greys(app, f"editor {size}")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, QuotaEditor), what="editor closed")
        app.action_history()
        await wait_until(pilot, lambda: isinstance(app.screen, HistoryScreen), what="history")
        await settle(pilot)
        assert_legible_greys(app, f"history {size}")


@pytest.mark.parametrize("size", SIZES)
async def test_wall_reads_under_no_color(monkeypatch: Any, size: tuple[int, int]) -> None:
    """NO_COLOR=1 on a wall: its big figures and every panel it cycles through read in legible greys."""
    monkeypatch.setenv("NO_COLOR", "1")
    async with frozen_session(size, wall=True, read_only=True, wall_cycle_s=3600) as (app, pilot):
        assert app.no_color
        assert_legible_greys(app, f"wall {size}")
        await assert_every_tab(app, pilot, f"wall {size}")


async def test_colour_is_kept_without_no_color(in_colour: None) -> None:
    """Without NO_COLOR the console keeps its colours: the alarm red is red, not a reversed grey."""
    async with frozen_session((120, 40)) as (app, _pilot):
        assert not app.no_color
        (style,) = set(styles_of(app, "rejected ", "38.3%"))
        assert style.color is not None and not style.reverse
        r, g, b = rgb(style.color)
        assert r > 2 * max(g, b)


@pytest.mark.parametrize("size", SIZES)
async def test_dialogs_read_under_no_color(monkeypatch: Any, size: tuple[int, int]) -> None:
    """NO_COLOR=1: the refused-edit, restore and MIG-instances dialogs read in legible greys."""
    from tui.screens.mig import MigInstancesScreen
    from tui.screens.refused import RefusedScreen
    from tui.screens.restore import RestoreScreen

    monkeypatch.setenv("NO_COLOR", "1")
    async with frozen_session(size) as (app, pilot):
        dialogs = [
            RefusedScreen("Edit refused: Redis unreachable (connection refused)."),
            RestoreScreen(list(app.state.quotas.values()), "alice", "Redis came back empty"),
            MigInstancesScreen("node-7 GPU 0 H100: 3 of 7 slices",
                               ["GI 1   1g.10gb    mem 9800/10240 MiB   95.7%  util 88%  NEAR ITS MEMORY LIMIT"]),
        ]
        for dialog in dialogs:
            await app.push_screen(dialog)  # waits until the dialog is mounted
            assert app.screen is dialog
            await settle(pilot)
            assert_legible_greys(app, f"{type(dialog).__name__} {size}")
            app.pop_screen()
            await settle(pilot)
