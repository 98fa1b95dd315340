"""A wall read from across a room, at the sizes a wall has (a terminal at 160x48 or 200x60, `serve --size`):
the GPU count reads as a ratio, and the heat map and the tiers' sparklines fill their panels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import pytest
from textual.widgets import Sparkline, TabbedContent

from collectors.samples import Source
from tui.testing import frozen_app, frozen_readings, load_frozen, region_text, settle, wait_until
from tui.widgets.heatmap import HeatMap
from tui.widgets.tiers import TierPanel, TierSpark
from tui.widgets.wall import TALL_SLASH

WALL_SIZES = [(160, 48), (200, 60)]
BASELINE_MARKS = set(",./;:'`\u201a")  # on the digits' bottom row alone, a character reads as punctuation


@asynccontextmanager
async def wall_of(size: tuple[int, int], gpus: int = 128) -> AsyncIterator[tuple[Any, Any]]:
    """A wall console showing nodes of 8 GPUs (`gpus` of them, no local ones), its panel cycle stopped."""
    app = frozen_app(wall=True, read_only=True, wall_cycle_s=3600)
    async with app.run_test(size=size) as pilot:
        readings = frozen_readings(app.clock(), nodes=gpus // 8, gpus_per_node=8)
        del readings[Source.GPUS]
        load_frozen(app, readings)
        await settle(pilot)
        await wait_until(pilot, lambda: app.overview._ready_tabs() is not None, what="the wall's tabs")
        yield app, pilot


async def show_tab(app: Any, pilot: Any, tab: str) -> None:
    app.overview.query_one(TabbedContent).active = tab
    await wait_until(pilot, lambda: app.overview.query_one(TabbedContent).active == tab, what=tab)
    await settle(pilot, 6)


@pytest.mark.parametrize("size", WALL_SIZES)
async def test_the_gpu_count_reads_as_ok_slash_total_never_as_a_comma(size: tuple[int, int]) -> None:
    """The GPUs OK / TOTAL box draws 88/128 with a slash as tall as its digits, nothing on the baseline alone."""
    async with wall_of(size) as (app, pilot):
        count = app.overview.query_one("#wall-ok-gpus")
        await wait_until(pilot, lambda: count.value == f"{app.state.kpis().healthy}/128", what="the count")
        await settle(pilot)
        top, middle, bottom = region_text(app, count)[:3]
        assert not BASELINE_MARKS & set(bottom), (top, middle, bottom)
        # the separator: one diagonal stroke across the three rows, rising to the right
        stroke = TALL_SLASH[0].strip()
        assert stroke in top and stroke in middle and stroke in bottom, (top, middle, bottom)
        assert bottom.index(stroke) < middle.index(stroke) < top.index(stroke)


@pytest.mark.parametrize(("size", "gpus"), [((160, 48), 128), ((200, 60), 128), ((160, 48), 1024)])
async def test_the_heat_map_fills_its_panel(size: tuple[int, int], gpus: int) -> None:
    """On a wall, the GPUs are blocks (128) or cells (1,024) covering the heat map's panel, with no scrolling."""
    async with wall_of(size, gpus) as (app, pilot):
        await show_tab(app, pilot, "tab-heat")
        heat = app.overview.query_one(HeatMap)
        rows = region_text(app, heat)
        inked = [y for y, row in enumerate(rows) if row.strip()]
        assert inked and inked[0] == 0, rows
        assert len(rows) - 1 - inked[-1] <= len(rows) // 4, rows  # at most a quarter left blank below
        assert all(b - a <= 2 for a, b in pairwise(inked)), rows  # one blank row between lines of blocks at most
        assert max(len(row) for row in rows) >= heat.content_region.width * 0.8, rows  # and across
        cells = sum(row.count("█") + row.count("░") + row.count("x") for row in rows)
        assert cells >= (gpus * 4 if gpus <= 128 else gpus), rows  # 128 GPUs: each a block, not one character
        assert heat.max_scroll_y == 0 and heat.max_scroll_x == 0


@pytest.mark.parametrize("size", WALL_SIZES)
async def test_the_tiers_sparklines_fill_the_tier_panel(size: tuple[int, int]) -> None:
    """On a wall, under the tier table each tier's 15 minutes are bars several rows tall down to the panel's foot."""
    async with wall_of(size) as (app, pilot):
        await show_tab(app, pilot, "tab-tiers")
        panel = app.overview.query_one(TierPanel)
        rows = region_text(app, panel)
        inked = [y for y, row in enumerate(rows) if row.strip()]
        assert len(rows) - 1 - inked[-1] <= 2, rows  # a blank foot of at most a margin
        sparks = panel.query(TierSpark)
        assert len(sparks) == 5
        for spark in sparks:
            bars = spark.query_one(Sparkline)
            assert bars.size.height >= 3, (spark.tier, bars.size)
            drawn = region_text(app, bars)
            assert sum(1 for row in drawn if row.strip()) >= 3, (spark.tier, drawn)
