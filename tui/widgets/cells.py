"""Table cells that render styled and sort by their value, so tables sort numerically, n/a last."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from rich.text import Text
from textual import events
from textual.geometry import Region
from textual.widgets import DataTable


class Cell:
    """A DataTable cell value: shown as `text` in `style`, sorted by `value` (None sorts last)."""

    __slots__ = ("text", "style", "value")

    def __init__(self, text: str, style: str = "", value: Any = None) -> None:
        self.text = text
        self.style = style
        self.value = value

    @property
    def sort_key(self) -> tuple[int, Any]:
        v = self.value if self.value is not None else None
        if v is None:
            return (1, 0)
        return (0, v)

    def __rich__(self) -> Text:
        return Text(self.text, style=self.style, no_wrap=True, overflow="ellipsis")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and (self.text, self.style) == (other.text, other.style)

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Cell({self.text!r})"


def num_cell(value: float | None, fmt: str, style: str = "", unit: str = "") -> Cell:
    if value is None:
        return Cell("n/a", "dim", None)
    return Cell(fmt.format(value) + unit, style, value)


def sort_key(cell: Any) -> tuple[int, Any]:
    """Key for DataTable.sort: Cells by value; anything else by its text."""
    if isinstance(cell, Cell):
        k = cell.sort_key
        # mixed str/number values in one column: compare numbers before strings
        if k[0] == 0 and isinstance(k[1], str):
            return (0, (1, k[1]))
        if k[0] == 0:
            return (0, (0, k[1]))
        return k
    return (0, (1, str(cell)))


class LiveTable(DataTable[Cell]):
    """A DataTable for live rows. Textual measures new rows' widths when idle but may keep serving
    lines rendered with the old widths (seen as `127…` for a whole row); redraw once widths are known.

    `batch()` groups many `update_cell` calls into one refresh: each call otherwise marks the widget
    dirty on its own (~45 µs), which is most of the cost when a sweep changes a thousand GPUs."""

    _batching = False
    _pending_layout: bool | None = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        self._batching, self._pending_layout = True, None
        try:
            yield
        finally:
            self._batching = False
            if self._pending_layout is not None:
                super().refresh(layout=self._pending_layout)

    def refresh(self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False) -> Self:
        if self._batching and not recompose:
            self._pending_layout = bool(self._pending_layout) or layout
            return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    async def _on_idle(self, event: events.Idle) -> None:
        measured = self._require_update_dimensions
        await super()._on_idle(event)
        if measured:
            self._clear_caches()
            self.refresh()
