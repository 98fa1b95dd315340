"""Snapshots of the main screens with frozen data (no live sources, a frozen clock, no cursor blink)."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import Input

from collectors.samples import Source
from tui.app import SurgewatchApp
from tui.testing import frozen_app as _frozen_app
from tui.testing import frozen_readings, load_frozen, settle

pytestmark = pytest.mark.usefixtures("in_colour")  # snapshots are of the coloured screen


def frozen_app(redis_url: str | None = "redis://:hunter2@10.0.0.9:6379/0", **settings: Any) -> SurgewatchApp:
    """The frozen app as the snapshots show it: a password in the URL (never shown) and no panel cycling."""
    return _frozen_app(redis_url, wall_cycle_s=3600, **settings)


async def fill(pilot: Any) -> None:
    readings = frozen_readings()
    if not pilot.app.settings.redis_url:
        del readings[Source.TRAFFIC]  # no Redis, no traffic source
    load_frozen(pilot.app, readings)
    await settle(pilot)
    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    await settle(pilot)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
def test_overview(snap_compare: Any, size: tuple[int, int]) -> None:
    """The overview renders KPIs, GPUs, heat map, tiers and events the same way every time."""
    assert snap_compare(frozen_app(), terminal_size=size, run_before=fill)


def test_overview_without_redis(snap_compare: Any) -> None:
    """Without Redis the banner says how to get traffic and that `surgewatch demo` shows everything."""

    async def run(pilot: Any) -> None:
        await fill(pilot)
        pilot.app.overview.query_one("#tabs").active = "tab-tiers"
        await settle(pilot)

    assert snap_compare(frozen_app(redis_url=None), terminal_size=(80, 24), run_before=run)


def test_tiers_tab_at_80x24(snap_compare: Any) -> None:
    """At 80x24 the tier panel is a tab with quotas, rejections by reason and sparklines."""

    async def run(pilot: Any) -> None:
        await fill(pilot)
        pilot.app.overview.focus_tiers()
        await settle(pilot)

    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=run)


def test_help_lists_bindings(snap_compare: Any) -> None:
    """`?` lists every binding of the overview, including edit, history, filter and sort."""

    async def run(pilot: Any) -> None:
        await fill(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(frozen_app(), terminal_size=(80, 24), run_before=run)


def test_wall_mode(snap_compare: Any) -> None:
    """The wall screen shows large Digits KPIs and no edit binding."""
    assert snap_compare(frozen_app(wall=True, read_only=True), terminal_size=(200, 60), run_before=fill)
