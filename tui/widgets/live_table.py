"""`LiveTable`: a DataTable for live rows. The one module that uses DataTable's private internals.

Textual's DataTable re-renders every visible cell after any `update_cell` (its render caches are keyed
on a table-wide update counter). `LiveTable` re-renders only the row it changed, and renders one-line
`Cell`s to segments directly. Both need DataTable internals, named in `DATATABLE_INTERNALS`; they were
written against Textual 0.86 to 8.x (`pyproject.toml` bounds the version). Where a Textual release lacks
one, `LiveTable` falls back to DataTable's public updates (slower, never wrong) and logs which is missing;
`tests/test_seams.py` fails naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Self

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.cache import LRUCache
from textual.geometry import Region
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

from tui.widgets.cells import Cell

log = logging.getLogger(__name__)

# What LiveTable reads, overrides or replaces of DataTable that is not public API.
DATATABLE_INTERNALS = (
    "_render_cell", "_get_styles_to_render_cell", "_on_idle", "_clear_caches",  # methods
    "_row_locations", "_column_locations", "_data", "_update_count", "_pseudo_class_state",
    "_show_hover_cursor", "_require_update_dimensions",  # state
    "_cell_render_cache", "_row_render_cache", "_row_renderable_cache", "_line_cache",  # caches
)


def missing_internals(table: DataTable[Any] | None = None) -> list[str]:
    """The names of `DATATABLE_INTERNALS` this Textual's DataTable lacks (empty: the fast path works)."""
    table = DataTable() if table is None else table
    return [name for name in DATATABLE_INTERNALS if not hasattr(table, name)]


PRUNE_MIN = 64  # a row's index is pruned of dropped keys no sooner than at this size


class RowIndexedLRU(LRUCache[Any, Any]):
    """An LRUCache that also knows which keys belong to which row, so one row can be evicted alone."""

    def __init__(self, maxsize: int, row_of: Any) -> None:
        self._rows: dict[Any, set[Any]] = {}
        self._prune_at: dict[Any, int] = {}  # row -> index size at which its dropped keys are forgotten
        self._row_of = row_of
        super().__init__(maxsize)

    def set(self, key: Any, value: Any) -> None:
        super().set(key, value)
        row = self._row_of(key)
        keys = self._rows.setdefault(row, set())
        keys.add(key)
        if len(keys) > self._prune_at.get(row, PRUNE_MIN):
            # keys the LRU dropped on its own: forget them, looking at this row's keys only (never the
            # whole cache: that walk, on every set once a row held 64 live keys, was most of a console's
            # CPU); the next prune waits until the index has doubled, so each set costs O(1) amortized
            keys.difference_update([k for k in keys if k not in self])
            self._prune_at[row] = max(PRUNE_MIN, 2 * len(keys))

    __setitem__ = set

    def indexed(self, row: Any) -> int:
        """How many keys the index holds for `row` (live ones and some the LRU dropped since the last prune)."""
        return len(self._rows.get(row, ()))

    def clear(self) -> None:
        super().clear()
        self._rows.clear()
        self._prune_at.clear()

    def evict(self, row: Any) -> None:
        self._prune_at.pop(row, None)
        for key in self._rows.pop(row, ()):
            self.discard(key)


class LiveTable(DataTable[Cell]):
    """A DataTable for live rows, whose `update_cell` re-renders only the row it changed.

    DataTable keys every render cache on a table-wide update counter, so one `update_cell` makes it
    re-render every visible cell on the next frame (bench/README.md measures what that costs). Here
    `update_cell` leaves the counter alone: it evicts only that row's entries from the caches (which
    are indexed by row) and refreshes only that row's line. Anything that changes the structure (add,
    remove, sort, columns, resize) still goes through DataTable's own invalidation.

    `batch_updates()` groups many updates into one refresh: each call otherwise marks the widget dirty on its
    own, which is most of the cost when a sweep changes a thousand GPUs.

    Textual measures new rows' widths when idle but may keep serving lines rendered with the old
    widths (seen as `127…` for a whole row); the table redraws once widths are known."""

    _batching = False
    _pending_layout: bool | None = None
    fast: ClassVar[bool | None] = None  # None: not checked yet; False: DataTable's public updates only

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dirty_rows: dict[RowKey, None] = {}
        if LiveTable.fast is None:
            missing = missing_internals(self)
            LiveTable.fast = not missing
            if missing:
                log.warning("Textual's DataTable lacks %s: LiveTable uses its public updates", ", ".join(missing))
        if not LiveTable.fast:
            return
        # the same sizes as DataTable's, indexed by row (cell and row caches by row key, the
        # renderables by row index, the lines by y: one line per row below the header)
        self._cell_render_cache = RowIndexedLRU(10000, lambda k: k[0])
        self._row_render_cache = RowIndexedLRU(1000, lambda k: k[0])
        self._row_renderable_cache = RowIndexedLRU(1000, lambda k: k[1])
        self._line_cache = RowIndexedLRU(1000, lambda k: k[0])

    @contextmanager
    def batch_updates(self) -> Iterator[None]:
        """Group updates into one refresh (named so as not to shadow Textual's async `Widget.batch`)."""
        if not LiveTable.fast:
            with self.app.batch_update():
                yield
            return
        self._batching, self._pending_layout = True, None
        self._dirty_rows.clear()
        try:
            yield
        finally:
            self._batching = False
            if self._pending_layout is not None:
                super().refresh(layout=self._pending_layout)
            else:
                self._invalidate_rows(self._dirty_rows)
            self._dirty_rows.clear()

    def refresh(self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False) -> Self:
        if self._batching and not recompose:
            self._pending_layout = bool(self._pending_layout) or layout
            return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def update_cell(
        self, row_key: RowKey | str, column_key: ColumnKey | str, value: Cell, *, update_width: bool = False
    ) -> None:
        if update_width:
            return super().update_cell(row_key, column_key, value, update_width=True)
        self.update_row(row_key, {column_key: value})

    def update_row(self, row_key: RowKey | str, cells: dict[Any, Any]) -> None:
        """Set several cells of one row (column key -> value); the row is re-rendered once."""
        if not LiveTable.fast:
            for column_key, value in cells.items():
                super().update_cell(row_key, column_key, value)
            return
        rk = RowKey(row_key) if isinstance(row_key, str) else row_key
        if rk not in self._row_locations:
            raise CellDoesNotExist(f"No row exists for row_key={rk!r}.")
        row = self._data[rk]
        for column_key, value in cells.items():
            ck = ColumnKey(column_key) if isinstance(column_key, str) else column_key
            if ck not in self._column_locations:
                raise CellDoesNotExist(f"No cell exists for row_key={rk!r}, column_key={ck!r}.")
            row[ck] = value
        if self.rows[rk].height != 1:  # only one-line rows map to one line: otherwise the old way
            self._update_count += 1
            self.refresh()
        elif self._batching:
            self._dirty_rows[rk] = None
        else:
            self._invalidate_rows((rk,))

    def _invalidate_rows(self, keys: Iterable[RowKey]) -> None:
        """Drop the cached renders of these rows and repaint the lines of those on screen."""
        header = self.header_height if self.show_header else 0
        top = self.scroll_offset.y + header
        bottom = self.scroll_offset.y + self.size.height
        width = max(self.size.width, self.virtual_size.width)
        for rk in keys:
            index = self._row_locations.get(rk)
            if index is None:
                continue
            y = index + header
            self._cell_render_cache.evict(rk)  # type: ignore[attr-defined]  # RowIndexedLRU replaced DataTable's cache in __init__ (DATATABLE_INTERNALS)
            self._row_render_cache.evict(rk)  # type: ignore[attr-defined]  # RowIndexedLRU replaced DataTable's cache in __init__ (DATATABLE_INTERNALS)
            self._row_renderable_cache.evict(index)  # type: ignore[attr-defined]  # RowIndexedLRU replaced DataTable's cache in __init__ (DATATABLE_INTERNALS)
            self._line_cache.evict(y)  # type: ignore[attr-defined]  # RowIndexedLRU replaced DataTable's cache in __init__ (DATATABLE_INTERNALS)
            if top <= y < bottom:
                self.refresh(Region(0, y - self.scroll_offset.y, width, 1))

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        """A one-line `Cell` as segments directly: what DataTable gets from Rich's Padding, Styled and
        Text, at a tenth of the cost (headers, labels and anything else go the usual way)."""
        if not LiveTable.fast or row_index < self.fixed_rows or column_index < self.fixed_columns:  # header, labels: -1
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        cell = self._data[row_key].get(column_key)
        if not isinstance(cell, Cell) or self.rows[row_key].height != 1:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        key = (
            row_key,
            column_key,
            base_style,
            cursor,
            hover,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        lines = self._cell_render_cache.get(key)
        if lines is None:
            component_style, post_style = self._get_styles_to_render_cell(
                False,
                False,
                False,
                hover,
                cursor,
                self.show_cursor,
                self._show_hover_cursor,
                self.cursor_foreground_priority == "css",
                self.cursor_background_priority == "css",
            )
            pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
            blank = pre + post_style
            pad = self.cell_padding
            inner = max(0, width - 2 * pad)
            text = cell.text
            if cell_len(text) > inner:  # Text's overflow="ellipsis"
                text = set_cell_size(text, inner - 1) + "…" if inner > 1 else set_cell_size(text, inner)
            segs = [Segment(" " * pad, blank)] if pad else []
            if text:
                segs.append(Segment(text, pre + (Style.parse(cell.style) if cell.style else Style.null()) + post_style))
            if inner - cell_len(text) + pad:
                segs.append(Segment(" " * (inner - cell_len(text) + pad), blank))
            lines = [segs]
            self._cell_render_cache[key] = lines
        return lines

    async def _on_idle(self, event: events.Idle) -> None:
        measured = LiveTable.fast and self._require_update_dimensions
        await super()._on_idle(event)
        if measured:
            self._clear_caches()
            self.refresh()
