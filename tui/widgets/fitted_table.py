"""`FittedTable`: a LiveTable that shows the columns that fit its width (tui.widgets.columns), never more.

Rows are kept whole (every column's Cell, in `COLUMN_SPECS` order) and the table shows the planned ones; a
resize, or values wider than their column, plans again and rebuilds the columns, keeping the rows' order
and the cursor. Updates between plans touch only the cells shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.cells import cell_len
from textual import events

from tui.widgets.cells import Cell
from tui.widgets.columns import Column, Shown, plan_columns, value_widths
from tui.widgets.live_table import LiveTable


class FittedTable(LiveTable):
    """A live table whose columns are planned for its width. Subclasses set `COLUMN_SPECS`."""

    COLUMN_SPECS: ClassVar[tuple[Column, ...]] = ()
    ESSENTIAL: ClassVar[int] = 0  # columns with `keep` up to this are worth narrowing a shrinkable column for

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._shown: dict[str, list[Cell]] = {}  # every column's cell of each row, by row key
        self.plan: tuple[Shown, ...] = ()
        self._index: list[int] = []  # where each planned column's cell is in a row's cells
        self._widths: dict[str, int] = {}  # the widest values planned for (grows until the next resize)

    @property
    def room(self) -> int:
        """The cells the columns may take: the width less the vertical scrollbar's."""
        return max(0, self.size.width - self.styles.scrollbar_size_vertical)

    def on_mount(self) -> None:
        self.refit(force=True)

    def on_resize(self, event: events.Resize) -> None:
        self.refit(force=True)

    def shown_cells(self, cells: Sequence[Cell]) -> list[Cell]:
        """The planned columns' cells of a row (written to their column's width where it shrinks)."""
        return [self.fit_cell(s, cells[i]) for s, i in zip(self.plan, self._index, strict=True)]

    def changed(self, cells: Sequence[Cell], old: Sequence[Cell]) -> dict[str, Cell]:
        """The planned columns whose cell differs from what is shown: column key -> new cell."""
        return {s.key: self.fit_cell(s, cells[i]) for s, i in zip(self.plan, self._index, strict=True)
                if cells[i] != old[i]}

    def fit_cell(self, column: Shown, cell: Cell) -> Cell:
        """`cell` written for `column`'s width: as it is, unless a subclass can say it shorter (Column.shrinks)."""
        return cell

    def outgrown(self, cells: Sequence[Cell]) -> bool:
        """True if a shown value of this row is wider than its column and the column may grow: plan again."""
        specs = self.COLUMN_SPECS
        return any(cell_len(cells[i].text) > s.width and s.width < specs[i].most
                   for s, i in zip(self.plan, self._index, strict=True))

    def refit(self, *, force: bool = False) -> bool:
        """Plan the columns again (`force`: widths from the values now, as after a resize; else widths only
        grow, so a value that shrinks and grows back does not rebuild the table twice). True if rebuilt."""
        specs = self.COLUMN_SPECS
        values = value_widths(specs, ([c.text for c in cells] for cells in self._shown.values()))
        if not force:
            values = {k: max(v, self._widths.get(k, 0)) for k, v in values.items()}
        self._widths = values
        room = self.room if self.size.width else 10_000  # not laid out yet: all of them, planned again on resize
        plan = plan_columns(specs, room, values, self.cell_padding, self.ESSENTIAL)
        if plan == self.plan:
            return False
        self._rebuild(plan)
        return True

    def _rebuild(self, plan: tuple[Shown, ...]) -> None:
        keys = [k.key for k in self.COLUMN_SPECS]
        order = [str(r.key.value) for r in self.ordered_rows] if self.plan else list(self._shown)
        cursor = self.cursor_row
        self.plan, self._index = plan, [keys.index(s.key) for s in plan]
        with self.batch_updates():
            self.clear(columns=True)
            for s in plan:
                # update_cell does not widen a column: each gets the width its values were planned for
                self.add_column(s.label, key=s.key, width=s.width)
            for key in order:
                self.add_row(*self.shown_cells(self._shown[key]), key=key)
        if 0 <= cursor < self.row_count:
            self.move_cursor(row=cursor, animate=False)

    @property
    def shown_columns(self) -> list[str]:
        """The keys of the columns on screen, left to right."""
        return [s.key for s in self.plan]


__all__ = ["FittedTable"]
