"""The first screen at 80x24 (SSH), whatever the sources: tiers, worst GPUs and events on the first frame."""

from __future__ import annotations

from typing import Any

import pytest

from collectors.samples import Source
from tui.testing import frozen_app, frozen_readings, load_frozen, screen_text, settle

pytestmark = pytest.mark.usefixtures("in_colour")  # snapshots are of the coloured screen

COMBOS = {
    "gpus-and-redis": (True, True),
    "gpus-no-redis": (True, False),
    "redis-no-gpus": (False, True),
    "neither": (False, False),
}


def app_for(gpus: bool, redis: bool) -> Any:
    return frozen_app("redis://:hunter2@10.0.0.9:6379/0" if redis else None, wall_cycle_s=3600)


def readings_for(gpus: bool, redis: bool) -> dict[Source, Any]:
    r = frozen_readings()
    if not gpus:
        r.pop(Source.FLEET)
        r.pop(Source.GPUS)
    if not redis:
        r.pop(Source.TRAFFIC)
    return r


async def fill(pilot: Any, gpus: bool, redis: bool) -> None:
    load_frozen(pilot.app, readings_for(gpus, redis))
    await settle(pilot)


@pytest.mark.parametrize("combo", list(COMBOS))
def test_overview_at_80x24(snap_compare: Any, combo: str) -> None:
    """The overview tab at 80x24 looks the same every time for each combination of sources."""
    gpus, redis = COMBOS[combo]
    assert snap_compare(app_for(gpus, redis), terminal_size=(80, 24), run_before=lambda p: fill(p, gpus, redis))


@pytest.mark.parametrize("combo", list(COMBOS))
async def test_first_frame_holds_what_the_operator_acts_on(combo: str) -> None:
    """Every tier with its quota and rejection %, the worst GPUs first, q Quit and ? Help; no line wraps."""
    gpus, redis = COMBOS[combo]
    app = app_for(gpus, redis)
    async with app.run_test(size=(80, 24)) as pilot:
        await fill(pilot, gpus, redis)
        text = screen_text(app)
        lines = text.splitlines()
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        assert "q Quit" in lines[-1] and "? Help" in lines[-1]
        assert app.overview.query_one("#tabs").active == "tab-summary"
        tier_rows = {ln.split()[0]: ln for ln in lines if ln.split() and ln.split()[0] in
                     ("free", "plus", "pro", "team", "enterprise")}
        if redis:
            # the tiers in order of quota size, each with its state, quota and rejection %
            assert list(tier_rows) == ["free", "plus", "team", "enterprise", "pro"]
            assert "PAUSED" in tier_rows["team"] and "100%" in tier_rows["team"]
            assert "3/1d" in tier_rows["free"] and "47%" in tier_rows["free"]
        else:
            assert not tier_rows and "no Redis configured" in text
        if gpus:
            gpu_lines = [ln for ln in lines if ln.startswith(" 10.0.0.") or ln.startswith(" local")]
            # lost first, then the down node as one line, then throttled, then hot
            assert "lost" in gpu_lines[0] and "down" in gpu_lines[1] and "8 GPUs" in gpu_lines[1]
            assert "throttled" in gpu_lines[2] and "hot" in gpu_lines[4]
        else:
            assert "GPUs: no GPUs reported yet" in text
        assert "enterpri " not in text  # no label cut mid-word


async def test_the_header_keeps_whole_parts_and_help_shows_all_of_it() -> None:
    """A long subtitle (the demo's join command) shows only whole parts at 80 columns; `?` shows all of it."""
    from textual.widgets import Static

    from tui.screens.help import HelpScreen

    join = "demo · Redis redis://127.0.0.1:40123/0 · join: surgewatch --redis redis://127.0.0.1:40123/0 · cut: x"
    app = frozen_app(wall_cycle_s=3600)
    app.sub_title = join
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        header = screen_text(app).splitlines()[0]
        assert "join: su" not in header or "join: surgewatch --redis redis://127.0.0.1:40123/0" in header
        assert "? shows all" in header
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        assert join in str(app.screen.query_one(Static).render())
