"""A compact heat map: one character per GPU, grouped by node, coloured by temperature or utilization.

1,024 GPUs fit in a few lines at 200 columns. It is a ScrollView rendering line by line: only the
visible lines are ever built, and the layout is recomputed only when the fleet or the size changes.
On a wall (`fill`) each GPU is a block as large as the panel allows (`fit_cells`): read across a room, one
row of 1x1 cells under a blank panel says little.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Cells:
    """How a GPU is drawn: `w` x `h` character cells, `gap` blank columns between a node's GPUs, `node_gap`
    between nodes and `row_gap` blank rows between lines (gaps only once a cell is big enough to spare them,
    so neighbours of one colour still read as two GPUs)."""

    w: int = 1
    h: int = 1
    gap: int = 0
    node_gap: int = 1
    row_gap: int = 0

    def span(self, n: int) -> int:
        """Columns taken by a node of `n` GPUs."""
        return n * self.w + (n - 1) * self.gap

    @property
    def pitch(self) -> int:
        """Screen rows per line of cells, its gap included."""
        return self.h + self.row_gap

    def rows(self, lines: int) -> int:
        return max(0, lines * self.pitch - self.row_gap)


DENSE = Cells()  # one character per GPU: the console's panel
MAX_CELL_H = 8  # beyond this a bigger block adds nothing a viewer reads


def sized(w: int, h: int) -> Cells:
    wide = w >= 3
    return Cells(w, h, gap=1 if wide else 0, node_gap=3 if wide else 1, row_gap=1 if h >= 2 else 0)


def pack(groups: list[list[T]], width: int, cells: Cells = DENSE) -> list[list[list[T]]]:
    """Greedy line packing: a node's GPUs stay together, nodes separated by `cells.node_gap` blank columns."""
    lines: list[list[list[T]]] = []
    line: list[list[T]] = []
    used = 0
    for g in groups:
        need = cells.span(len(g)) + (cells.node_gap if line else 0)
        if line and used + need > width:
            lines.append(line)
            line, used = [], 0
            need = cells.span(len(g))
        line.append(g)
        used += need
    if line:
        lines.append(line)
    return lines


def line_width(line: list[list[T]], cells: Cells) -> int:
    return sum(cells.span(len(g)) for g in line) + cells.node_gap * (len(line) - 1)


def fit_cells(sizes: list[int], width: int, height: int) -> Cells:
    """The largest GPU block with which nodes of `sizes` GPUs fit `width` x `height`: by area, then by the share
    of the panel the blocks span (a large fleet's small blocks spread down the panel rather than leave half of it
    blank), then the squarest on screen (a character is about twice as tall as wide); DENSE when nothing fits."""
    groups = [[0] * n for n in sizes if n > 0]
    best, best_key = DENSE, (0, 0, 0)
    if not groups:
        return best
    for h in range(1, min(MAX_CELL_H, height) + 1):
        # for each height the widest block that fits, from twice as wide as tall (square) down to as wide
        for w in range(min(3 * h, width), max(1, h // 2) - 1, -1):
            cells = sized(w, h)
            lines = pack(groups, width, cells)
            if cells.rows(len(lines)) <= height and all(line_width(ln, cells) <= width for ln in lines):
                spans = cells.rows(len(lines)) * max(line_width(ln, cells) for ln in lines)
                key = (w * h, spans, -abs(w - 2 * h))
                if key > best_key:
                    best, best_key = cells, key
                break
    return best


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

    def __init__(self, thresholds: Thresholds, *, fill: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.thresholds = thresholds
        self.fill = fill  # a wall: GPUs as blocks that fill the panel, not one character each
        self._lines: list[list[list[int]]] = []
        self._line_of: list[int] = []
        self._cache: dict[int, Strip] = {}
        self._cells = DENSE
        self._pad = 0  # blank columns left of every line: a wall's blocks are centred in the panel
        self._drawn: tuple[GpuRow, ...] = ()

    def _relayout(self) -> None:
        width = max(8, self.scrollable_content_region.width or self.size.width or 80)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(self._drawn):
            groups.setdefault(r.node, []).append(i)
        nodes = list(groups.values())  # positions in self._drawn, by node
        cells = DENSE
        if self.fill:
            cells = fit_cells([len(g) for g in nodes], width, self.scrollable_content_region.height or self.size.height)
        self._cells = cells
        self._lines = pack(nodes, width, cells)
        widest = max((line_width(ln, cells) for ln in self._lines), default=width)
        self._pad = max(0, width - widest) // 2 if self.fill else 0
        self._line_of = [0] * len(self._drawn)
        for line_no, line in enumerate(self._lines):
            for group in line:
                for i in group:
                    self._line_of[i] = line_no
        self._cache.clear()
        self.virtual_size = Size(width, cells.rows(len(self._lines)))
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
            pitch, h = self._cells.pitch, self._cells.h
            for line_no in sorted(dirty):
                self._cache.pop(line_no, None)
                self.refresh_lines(line_no * pitch, h)
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
        row = self.scroll_offset.y + y
        cells = self._cells
        line_no, within = divmod(row, cells.pitch)
        if line_no >= len(self._lines) or within >= cells.h:  # past the GPUs, or the gap between lines
            return Strip.blank(self.size.width, _PLAIN)
        strip = self._cache.get(line_no)  # a line of cells is `h` screen rows of the same strip
        if strip is None:
            # runs of one glyph and colour become one segment; styles are built once per colour
            segs: list[Segment] = [Segment(" " * self._pad, _PLAIN)] if self._pad else []
            run, run_style, drawn, styles, w = "", None, self._drawn, _STYLES, cells.w
            for n, group in enumerate(self._lines[line_no]):
                for k, i in enumerate(group):
                    glyph, colour = self.colour(drawn[i])
                    style = styles.get(colour) or styles.setdefault(colour, Style(color=colour))
                    blank = cells.gap if k else cells.node_gap if n else 0
                    if blank:  # blank, unstyled columns between GPUs (big cells) and between nodes
                        if run:
                            segs.append(Segment(run, run_style))
                        segs.append(Segment(" " * blank, _PLAIN))
                        run, run_style = "", None
                    if style is run_style:
                        run += glyph * w
                    else:
                        if run:
                            segs.append(Segment(run, run_style))
                        run, run_style = glyph * w, style
            if run:
                segs.append(Segment(run, run_style))
            strip = Strip(segs)
            self._cache[line_no] = strip
        return strip.crop_extend(self.scroll_offset.x, self.scroll_offset.x + self.size.width, _PLAIN)

    @property
    def line_count(self) -> int:
        """Screen rows the GPUs take (gaps between lines of cells included)."""
        return self._cells.rows(len(self._lines))
