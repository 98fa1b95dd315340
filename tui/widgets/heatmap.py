"""A compact heat map: one character per GPU, grouped by node, coloured by temperature or utilization.

1,024 GPUs fit in a few lines at 200 columns. It is a ScrollView rendering line by line: only the
visible lines are ever built, and the layout is recomputed only when the fleet or the width changes.
"""

from __future__ import annotations

from typing import TypeVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from surgewatch.kpis import GpuRow
from surgewatch.thresholds import LOST_COLOUR, NA_COLOUR, TEMP_RAMP, UTIL_RAMP, Thresholds, ramp_colour

T = TypeVar("T")
_STYLES: dict[str, Style] = {}
_PLAIN = Style.null()  # every segment carries a style: NO_COLOR's monochrome filter reads each one
GLYPH = "█"
LOST_GLYPH = "x"
STALE_GLYPH = "░"


def pack(groups: list[list[T]], width: int) -> list[list[list[T]]]:
    """Greedy line packing: a node's GPUs stay together, nodes separated by one blank column."""
    lines: list[list[list[T]]] = []
    line: list[list[T]] = []
    used = 0
    for g in groups:
        need = len(g) + (1 if line else 0)
        if line and used + need > width:
            lines.append(line)
            line, used = [], 0
            need = len(g)
        line.append(g)
        used += need
    if line:
        lines.append(line)
    return lines


class HeatLegend(Static):
    """What the colours mean, and how to switch the metric."""

    DEFAULT_CSS = "HeatLegend { height: 1; padding: 0 1; }"

    _shown: tuple[str, float] | None = None

    def show(self, metric: str, th: Thresholds) -> None:
        if self._shown == (metric, th.temp_hot_c):
            return  # unchanged: no repaint
        self._shown = (metric, th.temp_hot_c)
        t = Text()
        ramp = TEMP_RAMP if metric == "temp" else UTIL_RAMP
        t.append("by temperature " if metric == "temp" else "by utilization ", style="bold")
        t.append("30°C " if metric == "temp" else "0% ", style="dim")
        for c in ramp:
            t.append(GLYPH, style=c)
        t.append(f" {th.temp_hot_c + 10:.0f}°C" if metric == "temp" else " 100%", style="dim")
        t.append("  lost ", style="dim")
        t.append(LOST_GLYPH, style=LOST_COLOUR)
        t.append("  stale ", style="dim")
        t.append(STALE_GLYPH)
        t.append("  n/a ", style="dim")
        t.append(GLYPH, style=NA_COLOUR)
        t.append("  (t: switch)", style="dim")
        self.update(t)


class HeatMap(ScrollView):
    """The heat-map grid of every GPU."""

    DEFAULT_CSS = """
    HeatMap { height: 1fr; padding: 0 1; }
    """

    gpu_rows: reactive[tuple[GpuRow, ...]] = reactive((), always_update=True, repaint=False)
    """The GPUs to colour, in fleet order."""
    metric: reactive[str] = reactive("temp")
    """`temp` or `util`: what the colour means."""

    def __init__(self, thresholds: Thresholds, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.thresholds = thresholds
        self._lines: list[list[list[int]]] = []
        self._line_of: list[int] = []
        self._cache: dict[int, Strip] = {}
        self._layout_width = -1
        self._drawn: tuple[GpuRow, ...] = ()

    def _relayout(self) -> None:
        width = max(8, self.scrollable_content_region.width or self.size.width or 80)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(self._drawn):
            groups.setdefault(r.node, []).append(i)
        self._lines = pack(list(groups.values()), width)  # positions in self._drawn, packed by node
        self._line_of = [0] * len(self._drawn)
        for line_no, line in enumerate(self._lines):
            for group in line:
                for i in group:
                    self._line_of[i] = line_no
        self._layout_width = width
        self._cache.clear()
        self.virtual_size = Size(width, len(self._lines))
        self.refresh()

    def watch_gpu_rows(self, rows: tuple[GpuRow, ...]) -> None:
        if any(r.placeholder for r in rows):  # a node without GPUs has no cell here (the table names it)
            rows = tuple(r for r in rows if not r.placeholder)
        old, self._drawn = self._drawn, rows
        if len(old) == len(rows) and all(a.key == b.key for a, b in zip(old, rows, strict=False)):
            # same GPUs in the same places: redraw only the lines where a new row object shows another
            # glyph or colour (colours are steps of a ramp: most new values keep theirs)
            colour = self.colour
            dirty = {
                self._line_of[i]
                for i, (a, b) in enumerate(zip(old, rows, strict=False))
                if a is not b and colour(a) != colour(b)
            }
            for line_no in sorted(dirty):
                self._cache.pop(line_no, None)
                self.refresh_line(line_no)
            return
        self._relayout()

    def watch_metric(self) -> None:
        self._cache.clear()
        self.refresh()

    def on_resize(self) -> None:
        self._relayout()

    def colour(self, row: GpuRow) -> tuple[str, str]:
        g = row.gpu
        if g.status == "lost":
            return LOST_GLYPH, LOST_COLOUR
        if self.metric == "temp":
            c = ramp_colour(g.temp_c, 30.0, self.thresholds.temp_hot_c + 10, TEMP_RAMP)
        else:
            c = ramp_colour(g.util_pct, 0.0, 100.0, UTIL_RAMP)
        return (STALE_GLYPH if row.stale else GLYPH), c

    def render_line(self, y: int) -> Strip:
        line_no = self.scroll_offset.y + y
        if line_no >= len(self._lines):
            return Strip.blank(self.size.width, _PLAIN)
        strip = self._cache.get(line_no)
        if strip is None:
            # runs of one glyph and colour become one segment; styles are built once per colour
            segs: list[Segment] = []
            run, run_style, drawn, styles = "", None, self._drawn, _STYLES
            for n, group in enumerate(self._lines[line_no]):
                for k, i in enumerate(group):
                    glyph, colour = self.colour(drawn[i])
                    style = styles.get(colour) or styles.setdefault(colour, Style(color=colour))
                    if n and not k:  # one blank, unstyled column between nodes
                        if run:
                            segs.append(Segment(run, run_style))
                        segs.append(Segment(" ", _PLAIN))
                        run, run_style = "", None
                    if style is run_style:
                        run += glyph
                    else:
                        if run:
                            segs.append(Segment(run, run_style))
                        run, run_style = glyph, style
            if run:
                segs.append(Segment(run, run_style))
            strip = Strip(segs)
            self._cache[line_no] = strip
        return strip.crop_extend(self.scroll_offset.x, self.scroll_offset.x + self.size.width, _PLAIN)

    @property
    def line_count(self) -> int:
        return len(self._lines)
