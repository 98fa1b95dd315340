"""The Service panel: what users of the inference servers feel, one row per model (surgewatch.service).

Render-only: the rows and their colours come from the core; an empty panel says why it is empty.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from surgewatch.service import COLUMNS, ServiceRow

RIGHT = frozenset(COLUMNS[1:-1])  # figures right-aligned; names and states left
MAX_WIDTH = {"model": 20, "state": 24}


def service_table(rows: tuple[ServiceRow, ...], empty: str) -> Table | Text:
    """The rows as a Rich table (the model and state columns give way first when narrow), or why none."""
    if not rows:
        return Text(empty, style="dim italic")
    table = Table(box=None, padding=(0, 1), expand=False, show_edge=False, header_style="bold dim")
    for name in COLUMNS:
        # a long model name or error is cut (ellipsis), never the figures
        table.add_column(name, justify="right" if name in RIGHT else "left", no_wrap=True,
                         overflow="ellipsis", max_width=MAX_WIDTH.get(name))
    for row in rows:
        table.add_row(*(Text(c.text, style=c.style) for c in row.cells))
    return table


class ServicePanel(Static):
    """One row per model: replicas up/total, queue, running, KV %, TTFT and e2e p99, errors/s, state."""

    DEFAULT_CSS = """
    ServicePanel { height: auto; padding: 0 1; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self._shown: tuple[tuple[ServiceRow, ...], str] | None = None

    def show(self, rows: tuple[ServiceRow, ...], empty: str) -> None:
        if self._shown == (rows, empty):
            return  # frozen rows compare by value: an unchanged panel is not redrawn
        self._shown = (rows, empty)
        self.update(service_table(rows, empty))


__all__ = ["ServicePanel", "service_table"]
