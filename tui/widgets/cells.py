"""Table cells that render styled and sort by their value, so tables sort numerically, n/a last."""

from __future__ import annotations

from typing import Any

from rich.text import Text


class Cell:
    """A DataTable cell value: shown as `text` in `style`, sorted by `value` (None sorts last)."""

    __slots__ = ("style", "text", "value")

    def __init__(self, text: str, style: str = "", value: Any = None) -> None:
        self.text = text
        self.style = style
        self.value = value

    @property
    def sort_key(self) -> tuple[int, Any]:
        return (1, 0) if self.value is None else (0, self.value)

    def __rich__(self) -> Text:
        return Text(self.text, style=self.style, no_wrap=True, overflow="ellipsis")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and (self.text, self.style) == (other.text, other.style)

    __hash__ = None  # type: ignore[assignment]  # mutable cells compare by text and style, so they are unhashable on purpose

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
