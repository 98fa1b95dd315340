"""Rendering cost rules on frozen data: a changed GPU re-renders its own row and heat-map line, nothing else."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.style import Style

from collectors.runner import Reading
from collectors.samples import Source
from tui.testing import frozen_readings, frozen_session, load_frozen, screen_text, settle
from tui.widgets.gpu_table import GpuTable
from tui.widgets.heatmap import HeatMap


def hotter(readings: dict[Source, Reading[Any]], node: int, gpu: int, temp: float) -> dict[Source, Reading[Any]]:
    """The frozen readings with one fleet GPU at `temp` (a new node sample, as a new scrape gives)."""
    fleet = readings[Source.FLEET]
    assert fleet.sample is not None
    nodes = list(fleet.sample.nodes)
    gpus = list(nodes[node].gpus)
    gpus[gpu] = dataclasses.replace(gpus[gpu], temp_c=temp)
    nodes[node] = dataclasses.replace(nodes[node], gpus=tuple(gpus))
    sample = dataclasses.replace(fleet.sample, nodes=tuple(nodes))
    return {Source.FLEET: dataclasses.replace(fleet, sample=sample)}


async def test_changed_gpu_rerenders_only_its_row() -> None:
    """One GPU's new temperature re-renders that table row only (DataTable alone would redo every row)."""
    async with frozen_session((200, 60)) as (app, pilot):
        table = app.overview.query_one(GpuTable)
        rendered: list[str] = []
        render_row = table._render_line_in_row

        def spy(row_key: Any, *args: Any, **kwargs: Any) -> Any:
            rendered.append(str(row_key.value))
            return render_row(row_key, *args, **kwargs)

        table._render_line_in_row = spy
        load_frozen(app, hotter(frozen_readings(), 0, 3, 97.0))
        await settle(pilot)
        key = app.state.rows[[r.gpu.temp_c for r in app.state.rows].index(97.0)].key
        assert set(rendered) == {key}
        assert "97°C" in screen_text(app)


async def test_heat_map_recolours_changed_gpu() -> None:
    """A GPU that heats up is re-coloured on its heat-map line (same fleet, new values: no relayout): the line
    drawn before (cached) is redrawn with one more cell of the hot colour and one fewer of the GPU's old one."""
    async with frozen_session((200, 60)) as (app, pilot):
        heat = app.overview.query_one(HeatMap)
        node, gpu = 2, 5
        i = next(k for k, r in enumerate(heat._drawn) if r.gpu.uuid == f"GPU-{100 + node * 8 + gpu:04d}")
        line = heat._line_of[i]
        _, old_colour = heat.colour(heat._drawn[i])
        hot = dataclasses.replace(heat._drawn[i], gpu=dataclasses.replace(heat._drawn[i].gpu, temp_c=99.0))
        _, new_colour = heat.colour(hot)
        assert old_colour != new_colour  # otherwise there is nothing to redraw and the test proves nothing
        before = heat.render_line(line)
        assert line in heat._cache  # drawn once already: only an invalidated cache line can show the change
        load_frozen(app, hotter(frozen_readings(), node, gpu, 99.0))
        await settle(pilot)
        assert heat._drawn[i].gpu.temp_c == 99.0
        after = heat.render_line(line)

        def cells(strip: Any, colour: str) -> int:
            return sum(len(seg.text) for seg in strip if seg.style == Style(color=colour))

        assert cells(after, new_colour) == cells(before, new_colour) + 1
        assert cells(after, old_colour) == cells(before, old_colour) - 1


def test_sparkline_columns_are_pinned_to_the_clock() -> None:
    """A new second of traffic changes only a sparkline's last column; the others move every k seconds."""
    from tui.widgets.tiers import bucket_max

    history = tuple(float(s % 97) for s in range(1_000, 1_900))  # 900 s, the value of second s is s % 97
    now = bucket_max(history, 100, end_s=1_899)
    later = bucket_max((*history[1:], 96.0), 100, end_s=1_900)
    assert len(now) == len(later) == 100
    assert now[:-1] == later[:-1] and later[-1] == 96.0
    k = 9  # ceil(900 / 100) seconds per column, each column one span of the clock
    assert now[-2] == max(s % 97 for s in range(1_899 // k * k - k, 1_899 // k * k))
    assert bucket_max(history, 100) != now  # without the clock the split slides with the history
