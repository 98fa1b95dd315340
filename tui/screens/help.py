"""`?`: every key binding active where it was pressed, and the terminal habits that always work."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

ALWAYS = (
    ("tab / shift+tab", "move focus between panels"),
    ("ctrl+p", "command palette (every action by name)"),
    ("mouse", "click rows, headers (sort), tabs; scroll with the wheel"),
    ("enter / ↑ ↓", "select a row"),
)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 72; max-width: 100%; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; }
    HelpScreen DataTable { height: auto; max-height: 100%; }
    HelpScreen Static { padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, bindings: list[tuple[str, str]], mode_note: str = "") -> None:
        super().__init__()
        self.bindings_list = bindings
        self.mode_note = mode_note

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Keys"
            box.border_subtitle = "esc close"
            if self.mode_note:
                yield Static(self.mode_note)
            yield DataTable(cursor_type="none", show_header=False, id="keys")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("key", "action")
        seen = set()
        for key, desc in list(self.bindings_list) + list(ALWAYS):
            if (key, desc) in seen:
                continue
            seen.add((key, desc))
            table.add_row(key, desc)

    def action_close(self) -> None:
        self.dismiss(None)
