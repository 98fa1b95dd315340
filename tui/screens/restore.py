"""`r`: restore the quotas the console last saw, after Redis came back empty or tiers lost theirs.

The operator sees exactly what will be written before anything is (tier, quota, the version it had),
confirms with `y` (or the button), and each tier is written through the store like any change:
compare-and-set against what is there now, one audit entry per tier, with a reason saying where the
values came from. A tier someone fixed meanwhile is left as they made it.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from quotas.model import Quota, iso


def restore_reason(actor: str, seen_at: float) -> str:
    """The audit reason of a console restore (a contract: the README quotes it)."""
    return f"restored by {actor} from the console's last-known quotas at {iso(seen_at)}"


class RestoreScreen(ModalScreen[bool]):
    """Show what a restore will write; dismisses with True to write it, False to cancel."""

    DEFAULT_CSS = """
    RestoreScreen { align: center middle; }
    RestoreScreen > Vertical { width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: thick $error; background: $surface; padding: 0 1; }
    RestoreScreen DataTable { height: auto; max-height: 12; }
    RestoreScreen #buttons { height: 3; align-horizontal: right; }
    """

    BINDINGS = [Binding("escape,n", "cancel", "Cancel"), Binding("y", "confirm", "Restore")]

    def __init__(self, quotas: list[Quota], actor: str, reason: str) -> None:
        super().__init__()
        self.quotas = quotas
        self.actor = actor
        self.reason = reason

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Restore the last-known quotas"
            box.border_subtitle = "y restore · esc cancel"
            yield Static(f"These quotas will be written, audited as {self.actor!r}: \"{self.reason}\".")
            yield DataTable(cursor_type="none", id="plan")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Restore", id="restore", variant="error")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("tier", "quota", "cap/s", "mode", "paused", "until", "was version")
        for q in self.quotas:
            table.add_row(q.tier, q.spec, str(q.tier_cap_rps or "-"), q.mode, "yes" if q.paused else "no",
                          iso(q.expires_at) or "-", str(q.version))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#restore")
    def action_confirm(self) -> None:
        self.dismiss(True)
