"""Which columns of a table fit the width it has: the important ones always, the rest as room allows.

A table that is wider than its panel hides its right-hand columns behind horizontal scrolling, and what an
operator acts on (a tier's refusals, a GPU's status, temperature and throttling) was scrolled off at 120x40.
Each column says how much it matters (`keep`, 0 first) and how wide its values can be; the plan keeps the
display order and, when the columns do not all fit, shortens the headers and takes the columns in order of
importance, each if it fits in what is left (a narrow, less important one may still fit where a wide one did
not); a column whose values can be written shorter is narrowed to make room for an essential one. Widths
follow the values shown (between the header and `most` cells), so short values do not waste the room another
column needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rich.cells import cell_len


@dataclass(frozen=True, slots=True)
class Column:
    """One column a table may show."""

    key: str
    label: str  # the header when there is room
    keep: int  # 0 is kept longest: the column that matters most
    most: int  # the widest a value is shown (wider ones are cut with …)
    short: str = ""  # the header when room is short ("" keeps `label`)
    least: int = 1  # the narrowest the column is drawn, whatever its values
    shrinks: bool = False  # its values can be written shorter (down to `least`): narrowed before a column is dropped


@dataclass(frozen=True, slots=True)
class Shown:
    """A column as a plan shows it: its key, header and width in cells (without the table's padding)."""

    key: str
    label: str
    width: int


def value_widths(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> dict[str, int]:
    """The widest value of each column over `rows` (texts in `columns` order), capped at the column's `most`."""
    widths = dict.fromkeys((c.key for c in columns), 0)
    for texts in rows:
        for c, text in zip(columns, texts, strict=False):
            n = cell_len(text)
            if n > widths[c.key]:
                widths[c.key] = n
    return {c.key: min(c.most, widths[c.key]) for c in columns}


def plan_columns(
    columns: Sequence[Column], room: int, values: Mapping[str, int], padding: int = 1, essential: int = 0
) -> tuple[Shown, ...]:
    """The columns that fit `room` cells, in display order, with their headers and widths.

    `values` is each column's widest value (value_widths). All columns with full headers when they fit; else
    short headers, and the columns taken in order of importance, each if it fits in what is left. Columns
    whose values can be written shorter are narrowed only to make room for an essential column (`keep` up to
    `essential`), never for a lesser one. The column that matters most is always shown."""
    def width(c: Column, label: str) -> int:
        return max(c.least, cell_len(label), min(c.most, values.get(c.key, c.most)))

    def label(c: Column, short: bool) -> str:
        # a short header only where the full one is wider than the column's values
        return c.short if short and c.short and cell_len(c.label) > width(c, c.short) else c.label

    def total(cols: Sequence[Column], short: bool) -> int:
        return sum(width(c, label(c, short)) + 2 * padding for c in cols)

    def slack(cols: Sequence[Column], short: bool) -> int:
        return sum(width(c, label(c, short)) - max(c.least, cell_len(label(c, short))) for c in cols if c.shrinks)

    short = total(columns, short=False) > room
    kept: list[Column] = []
    for c in sorted(columns, key=lambda c: c.keep):
        trial = [k for k in columns if k in kept or k is c]
        need = total(trial, short) - (slack(trial, short) if c.keep <= essential else 0)
        if need <= room or not kept:
            kept = trial
    over = total(kept, short) - room
    shown = []
    for c in kept:
        lab = label(c, short)
        w = width(c, lab)
        if over > 0 and c.shrinks:
            cut = min(over, w - max(c.least, cell_len(lab)))
            w, over = w - cut, over - cut
        shown.append(Shown(c.key, lab, w))
    return tuple(shown)


__all__ = ["Column", "Shown", "plan_columns", "value_widths"]
