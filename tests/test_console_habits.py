"""Terminal habits on frozen data: sort, filter, resize into tabs, heat-map metric, help, palette (NO_COLOR has
tests/test_console_no_color.py)."""

from __future__ import annotations

from textual.command import CommandPalette

from tui.screens.help import HelpScreen
from tui.testing import frozen_app as frozen
from tui.testing import frozen_session, load_frozen, screen_text, settle, wait_until
from tui.widgets.gpu_table import GpuTable
from tui.widgets.heatmap import HeatMap


async def test_sort_cycles_columns_and_reverses() -> None:
    """`s` sorts the GPU table by node, then node descending, then by gpu; values, not text, decide order."""
    async with frozen_session((200, 60)) as (app, pilot):
        table = app.overview.query_one(GpuTable)
        await pilot.press("s")
        assert table.shown_keys[0].startswith("10.0.0.1") or table.shown_keys[0].startswith("http://10.0.0.1")
        await pilot.press("s")
        assert table.shown_keys[0].startswith("local")  # descending: "local" after "http://..."
        table.sort_column, table.sort_reverse = "temp", True
        await settle(pilot)
        temps = [app.state.rows[[r.key for r in app.state.rows].index(k)].gpu.temp_c for k in table.shown_keys]
        assert temps == sorted(temps, reverse=True)


async def test_filter_shows_only_matching_gpus() -> None:
    """`/` then text keeps only matching rows (here: the down node's GPUs); clearing brings all back."""
    async with frozen_session((200, 60)) as (app, pilot):
        table = app.overview.query_one(GpuTable)
        total = table.row_count
        await pilot.press("slash", *"down")
        await settle(pilot)
        assert table.row_count == 8 and all("10.0.0.2" in k for k in table.shown_keys)
        await pilot.press("backspace", "backspace", "backspace", "backspace", "escape")
        await settle(pilot)
        assert table.row_count == total


async def test_resize_turns_panels_into_tabs_and_back() -> None:
    """At 80x24 the panels become tabs; back at 200x60 side by side again; data, sort and filter kept."""
    async with frozen_session((200, 60)) as (app, pilot):
        assert not app.overview.query("#tabs")
        table = app.overview.query_one(GpuTable)
        table.sort_column, table.sort_reverse, table.filter_text = "temp", True, "10.0.0.3"
        await pilot.resize_terminal(80, 24)
        await wait_until(pilot, lambda: app.overview.query("#tabs"), what="tabs")
        await settle(pilot)
        assert "GPUs  Heat map  Tiers  Events" in screen_text(app)
        table = app.overview.query_one(GpuTable)
        assert (table.sort_column, table.sort_reverse, table.row_count) == ("temp", True, 8)
        temps = [next(r.gpu.temp_c for r in app.state.rows if r.key == k) for k in table.shown_keys]
        assert temps == sorted(temps, reverse=True)
        table.filter_text = ""
        await settle(pilot)
        assert table.row_count == len(app.state.rows)
        await pilot.resize_terminal(200, 60)
        await wait_until(pilot, lambda: not app.overview.query("#tabs"), what="grid")
        await settle(pilot)
        assert "Tiers (15 min)" in screen_text(app) and "free" in screen_text(app)


async def test_heat_map_switches_metric_and_fits_1024_gpus() -> None:
    """`t` switches the heat map between temperature and utilization; 1,024 GPUs fit in a few lines at 200x60."""
    from tui.testing import frozen_readings

    app = frozen()
    async with app.run_test(size=(200, 60)) as pilot:
        load_frozen(app, frozen_readings(nodes=128, gpus_per_node=8))
        await settle(pilot)
        heat = app.overview.query_one(HeatMap)
        assert len(app.state.rows) == 2 + 1024
        assert heat.line_count <= heat.size.height  # everything visible without scrolling
        await pilot.press("t")
        assert heat.metric == "util" and "by utilization" in screen_text(app)
        await pilot.press("t")
        assert heat.metric == "temp"


async def test_help_lists_every_footer_binding() -> None:
    """`?` opens a list holding quit, edit, history, filter, sort and the palette."""
    app = frozen()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        assert isinstance(app.screen, HelpScreen)
        rows = app.screen.keys
        descs = {d for _, d in rows}
        assert {"Quit", "Edit quota", "History", "Filter", "Sort"} <= descs
        assert any(k == "ctrl+p" for k, _ in rows)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_palette_offers_edit_only_when_writable() -> None:
    """The command palette lists per-tier edit commands, and none in read-only mode."""
    for read_only in (False, True):
        async with frozen_session((120, 40), read_only=read_only) as (app, pilot):
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert ("Edit quota of free" in titles) is not read_only
            await pilot.press("ctrl+p")
            await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
            await pilot.press("escape")


async def test_wall_mode_cycles_panels_without_edit() -> None:
    """--wall: big Digits KPIs, the panels cycle by themselves, and there is no edit binding."""
    from textual.widgets import TabbedContent

    async with frozen_session((200, 60), wall=True, read_only=True, wall_cycle_s=0.2) as (app, pilot):
        assert len(app.overview.query("WallKpis Digits")) == 4
        assert len(app.overview.query("WallTiers Digits")) == 5  # every tier's rejection %
        seen: set[str] = set()

        def cycled() -> bool:
            # queried afresh each time: a recompose (a late resize) replaces the TabbedContent
            seen.add(app.overview.query_one(TabbedContent).active)
            return len(seen) >= 3

        await wait_until(pilot, cycled, what="cycling")
        # (no key presses here: Pilot waits for the screen to settle, and a 0.2 s cycle never lets it)
        assert "e" not in app.screen.active_bindings and app.read_only


async def test_wall_cycle_faster_than_startup_does_not_crash() -> None:
    """A wall cycle that fires before the tabs have mounted waits for them instead of killing the console."""
    from textual.widgets import TabbedContent

    app = frozen(wall=True, read_only=True, wall_cycle_s=0.001)
    async with app.run_test(size=(200, 60)) as pilot:
        panels = {"tab-gpus", "tab-heat", "tab-tiers", "tab-events"}
        for round_ in ("first", "second"):  # a second round: the cycle goes on after the tabs mounted
            seen: set[str] = set()

            def all_seen(seen: set[str] = seen) -> bool:
                seen.add(app.overview.query_one(TabbedContent).active)
                return panels <= seen

            await wait_until(pilot, all_seen, what=f"the {round_} round through every panel")
        assert app.return_code is None and app.is_running


async def test_tier_state_and_mode_fit_80x24() -> None:
    """Over SSH at 80x24 the Tiers tab shows a paused tier, a shadow tier and an override without scrolling sideways."""
    async with frozen_session((80, 24)) as (app, pilot):
        app.overview.focus_tiers()
        await settle(pilot)
        rows = {line.split()[0]: line for line in screen_text(app).splitlines() if "/1" in line or "/3h" in line}
        assert "PAUSED" in rows["team"] and "2000/1h" in rows["team"]
        assert "shadow" in rows["plus"].split("50/3h")[0]  # the mode, not the "rejected by" text after it
        assert "override 1h30m" in rows["pro"]
        assert all(len(line) <= 80 for line in rows.values())
