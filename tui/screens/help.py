"""`?`: the keys that work where it was pressed (ours only: not Textual's generic ones), and the terminal
habits that always work, laid out to fit an 80x24 terminal whole: two key columns, descriptions wrapped at
word boundaries, never cut."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

ALWAYS = (
    ("tab ⇧tab", "move focus between panels"),
    ("ctrl+p", "command palette: every action by name"),
    ("mouse", "click rows, headers (sort), tabs; the wheel scrolls"),
    ("enter ↑ ↓", "select a row"),
)
OUR_PACKAGES = ("tui.", "surgewatch.")
TWO_COLUMNS_MIN_WIDTH = 76  # below this the keys are listed in one column


def declared_here(node: Any, binding: Binding) -> bool:
    """Is `binding` declared by one of our classes (not inherited from a Textual widget: Page Left, super+c,
    Focus Next are Textual's own and say nothing about this console)?"""
    for cls in type(node).__mro__:
        for b in cls.__dict__.get("BINDINGS", ()):
            key, action = (b.key, b.action) if isinstance(b, Binding) else (b[0], b[1])
            if action == binding.action and binding.key in key.split(","):
                return cls.__module__.startswith(OUR_PACKAGES)
    return False


def help_keys(screen: Any, app: Any) -> list[tuple[str, str]]:
    """(key, what it does) of our bindings active on `screen`: the footer's first, then the focused widget's."""
    shown: list[tuple[str, str]] = []
    rest: list[tuple[str, str]] = []
    for node, b, _enabled, _ in screen.active_bindings.values():
        if (b.show or b.description) and declared_here(node, b):
            (shown if b.show else rest).append((b.key_display or app.get_key_display(b), b.description or b.action))
    return shown + rest


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; }
    HelpScreen Static { padding: 0 1; }
    HelpScreen #note { color: $text-muted; }
    """

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, bindings: list[tuple[str, str]], mode_note: str = "") -> None:
        super().__init__()
        seen: set[tuple[str, str]] = set()
        self.keys: list[tuple[str, str]] = []  # what is listed, in order (also read by tests)
        for pair in [*bindings, *ALWAYS]:
            if pair not in seen:
                seen.add(pair)
                self.keys.append(pair)
        self.mode_note = mode_note

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "Keys"
            box.border_subtitle = "esc close"
            if self.mode_note:
                yield Static(self.mode_note, id="note")
            yield Static(id="keys")

    def on_mount(self) -> None:
        self._layout()

    def on_resize(self) -> None:
        self._layout()

    def _layout(self) -> None:
        columns = 2 if self.app.size.width >= TWO_COLUMNS_MIN_WIDTH else 1
        grid = Table.grid(padding=(0, 1), expand=True)
        for _ in range(columns):
            grid.add_column(no_wrap=True, style="bold")
            grid.add_column(ratio=1, overflow="fold")
        rows = -(-len(self.keys) // columns)
        for r in range(rows):
            cells: list[Text | str] = []
            for c in range(columns):
                i = c * rows + r  # down the first column, then the second: reads like a list
                key, desc = self.keys[i] if i < len(self.keys) else ("", "")
                cells += [key, Text(desc)]
            grid.add_row(*cells)
        self.query_one("#keys", Static).update(grid)

    def action_close(self) -> None:
        self.dismiss(None)
