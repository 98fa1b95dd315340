"""The GPU instances of one MIG GPU, over the overview: GI, profile, memory, utilization, and a flag on
an instance near its memory limit (one full instance fails its jobs while the GPU looks half empty)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static


class MigInstancesScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    MigInstancesScreen { align: center middle; }
    MigInstancesScreen > Vertical { width: auto; max-width: 100%; height: auto; border: round $accent;
        padding: 0 1; background: $surface; }
    /* a line per instance, never wrapped: the box is as wide as the longest line */
    MigInstancesScreen #mig-lines { width: auto; }
    """
    BINDINGS = [Binding("escape,m,q", "dismiss", "Close")]

    def __init__(self, title: str, lines: list[str]) -> None:
        super().__init__()
        self.title_text = title
        self.lines = lines

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield Static("\n".join(self.lines) or "no instances reported", id="mig-lines", markup=False)
