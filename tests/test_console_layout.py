"""What an operator acts on is on screen at every size: a tier's refusals and who refused them, a GPU's status,
temperature, utilization and throttling, GPUs worst first; no column of those behind horizontal scrolling."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import TabbedContent

from surgewatch.kpis import severity_key
from tui.testing import frozen_session, region_text, settle, wait_until
from tui.widgets.gpu_table import GpuTable
from tui.widgets.tiers import TierTable

SIZES = [(80, 24), (120, 40), (160, 48), (200, 60)]


async def show_tab(app: Any, pilot: Any, tab: str) -> None:
    """At small sizes the panels are tabs: bring `tab` forward (nothing to do side by side)."""
    if app.overview.query("#tabs"):
        app.overview.query_one(TabbedContent).active = tab
        await wait_until(pilot, lambda: app.overview.query_one(TabbedContent).active == tab, what=tab)
        await settle(pilot)


def cells_of(rows: list[str], first: str) -> list[str]:
    """The words of the screen row of a table that starts with `first` (its header or a row's name)."""
    return next(row.split() for row in rows if row.split() and row.split()[0] == first)


@pytest.mark.parametrize("size", SIZES)
async def test_tier_refusals_and_who_refused_are_on_screen(size: tuple[int, int]) -> None:
    """Each tier's rej/s, rej% and rejected-by with its number ("quota 160", "paused 35.0") are drawn, unscrolled."""
    async with frozen_session(size) as (app, pilot):
        await show_tab(app, pilot, "tab-tiers")
        table = app.overview.query_one(TierTable)
        assert table.max_scroll_x == 0  # nothing to the right of what is drawn
        rows = region_text(app, table)
        head = " ".join(cells_of(rows, "tier"))
        assert "rej/s" in head and "rej%" in head and ("rejected by" in head or head.endswith(" by")), rows
        free, team, pro = (" ".join(cells_of(rows, name)) for name in ("free", "team", "pro"))
        assert "188" in free and "47%" in free and "quota 160" in free, rows
        assert "35.0" in team and "100%" in team and "paused 35.0" in team, rows
        assert "1.2%" in pro and "quota 1.2" in pro, rows


def with_model(app: Any, model: str) -> None:
    """Feed the frozen fleet again with every GPU named `model` (H100s' long name is what crowded them out)."""
    from dataclasses import replace

    from collectors.samples import Source
    from tui.testing import frozen_readings, load_frozen

    readings = frozen_readings(app.clock())
    fleet = readings[Source.FLEET].sample
    assert fleet is not None
    nodes = tuple(replace(n, gpus=tuple(replace(g, name=model) for g in n.gpus)) for n in fleet.nodes)
    readings[Source.FLEET] = replace(readings[Source.FLEET], sample=replace(fleet, nodes=nodes))
    load_frozen(app, readings)


@pytest.mark.parametrize("model", ["NVIDIA L4", "NVIDIA H100 80GB HBM3"])
@pytest.mark.parametrize("size", SIZES)
async def test_gpu_status_temperature_util_and_throttle_are_on_screen(size: tuple[int, int], model: str) -> None:
    """The GPU table draws node, status, temp, util and throttle for every GPU row, unscrolled, short or long model."""
    async with frozen_session(size) as (app, pilot):
        with_model(app, model)
        await show_tab(app, pilot, "tab-gpus")
        table = app.overview.query_one(GpuTable)
        await wait_until(pilot, lambda: any("H100" in str(c) or "L4" in str(c) for c in table.get_row_at(0)),
                         what="the model shown")
        await settle(pilot)
        assert table.max_scroll_x == 0
        assert {"node", "status", "temp", "util", "throttle"} <= set(table.shown_columns)
        rows = region_text(app, table)
        head = rows[0].split()
        assert head[:5] == ["node", "gpu", "status", "temp", "util"] and head[5] in ("throttle", "thr"), rows
        throttled = [row.split("throttled")[1].split() for row in rows if " throttled " in row]
        assert len(throttled) == 2, rows
        assert all(r[0].endswith("°C") and r[1].endswith("%") and r[2] == "thermal" for r in throttled), rows


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_gpus_come_worst_first_by_default(size: tuple[int, int]) -> None:
    """Unsorted by the operator, GPU rows run from lost and down through throttled and hot to ok, hotter first."""
    async with frozen_session(size) as (app, pilot):
        await show_tab(app, pilot, "tab-gpus")
        table = app.overview.query_one(GpuTable)
        rows = {r.key: r for r in app.state.rows}
        shown = [rows[k] for k in table.shown_keys]
        assert [r.status for r in shown[:2]] == ["lost", "down"]
        assert shown == sorted(shown, key=severity_key)
        ok = [r.gpu.temp_c for r in shown if r.status == "ok"]
        assert ok == sorted(ok, reverse=True) and len(ok) > 3
        screen_rows = region_text(app, table)
        assert "lost" in screen_rows[1].split() and "down" in screen_rows[2].split()  # and so drawn, top first


async def test_columns_come_back_when_the_terminal_widens() -> None:
    """From 120x40 (half-width panels, less important columns left out) to 200x60: memory, power and clocks return."""
    async with frozen_session((120, 40)) as (app, pilot):
        table = app.overview.query_one(GpuTable)
        assert "power" not in table.shown_columns
        await pilot.resize_terminal(200, 60)
        await wait_until(pilot, lambda: "power" in table.shown_columns, what="wider table")
        await settle(pilot)
        assert table.max_scroll_x == 0 and table.row_count == len(app.state.rows)


async def test_worst_first_follows_new_temperatures() -> None:
    """When the cooler of two throttled GPUs turns the hotter one, the next reading swaps their rows on screen."""
    from dataclasses import replace

    from collectors.samples import Source
    from tui.testing import frozen_readings, load_frozen

    async with frozen_session((200, 60)) as (app, pilot):
        table = app.overview.query_one(GpuTable)

        def throttled_rows() -> list[str]:
            return [row for row in region_text(app, table) if " throttled " in row]

        before = throttled_rows()
        assert len(before) == 2 and "74°C" in before[0] and "58°C" in before[1]
        readings = frozen_readings(app.clock())
        fleet = readings[Source.FLEET].sample
        assert fleet is not None
        nodes = tuple(replace(n, gpus=tuple(replace(g, temp_c=76.0) if g.throttle and g.temp_c == 58.0 else g
                                            for g in n.gpus)) for n in fleet.nodes)
        readings[Source.FLEET] = replace(readings[Source.FLEET], sample=replace(fleet, nodes=nodes))
        load_frozen(app, readings)
        await wait_until(pilot, lambda: "76°C" in " ".join(throttled_rows()), what="the new temperature")
        after = throttled_rows()
        assert "76°C" in after[0] and "74°C" in after[1], after
