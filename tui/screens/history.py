"""The audit history: who changed which quota, when, from what to what, and why (newest first)."""

from __future__ import annotations

import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from surgewatch.alerts import quota_text

HISTORY_COUNT = 50


def entry_row(e: Any) -> tuple[str, ...]:
    return (
        time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(e.at)),
        e.tier,
        str(e.version),
        e.actor,
        f"{quota_text(e.old)} -> {quota_text(e.new)}",
        getattr(e, "kind", "set"),
        e.reason or "-",
    )


class HistoryScreen(ModalScreen[None]):
    """Audit entries of one tier (or all tiers), loaded in a worker."""

    DEFAULT_CSS = """
    HistoryScreen { align: center middle; }
    HistoryScreen > Vertical { width: 95%; height: 90%; border: thick $accent; background: $surface; }
    HistoryScreen #status { height: auto; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [Binding("escape,q,h", "close", "Close")]

    def __init__(self, store: Any, tier: str | None) -> None:
        super().__init__()
        self.store = store
        self.tier = tier

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"Audit history of {'tier ' + self.tier if self.tier else 'all tiers'} (newest first)"
            box.border_subtitle = "esc close"
            yield Static("loading...", id="status")
            yield DataTable(cursor_type="row", id="history")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("at", "tier", "v", "who", "change", "kind", "why")
        table.focus()
        self.run_worker(self._load(), group="history", exclusive=True, exit_on_error=False)

    async def _load(self) -> None:
        status = self.query_one("#status", Static)
        try:
            entries = await self.store.history(self.tier, count=HISTORY_COUNT)
        except Exception as exc:
            status.update(f"cannot read the history: {exc}")
            return
        table = self.query_one(DataTable)
        for e in entries:
            table.add_row(*entry_row(e), key=e.id)
        status.update(f"{len(entries)} entries" if entries else "no changes recorded yet")

    def action_close(self) -> None:
        self.dismiss(None)
