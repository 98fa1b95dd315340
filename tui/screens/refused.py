"""Why an edit was refused, in a modal that holds the keys an operator goes on typing.

Under pressure an operator presses `e`, types `3/1d` and Enter without looking: when the edit is
refused (Redis down, out of memory...), those keys must not land on the main screen (`/` opens the
GPU filter, `q` quits). The modal takes every key until Esc or Enter closes it.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

CLOSE_KEYS = ("escape", "enter")


class RefusedScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    RefusedScreen { align: center middle; }
    RefusedScreen > Vertical { width: 72; max-width: 100%; height: auto; border: thick $error;
        background: $surface; padding: 0 1; }
    """

    # keys the app or the screen below would act on: held here instead
    BINDINGS = [Binding("escape,enter", "close", "Close"), Binding("q,slash,e,h,s,t,r,question_mark", "hold",
                                                                   show=False)]

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Edit refused"
            box.border_subtitle = "esc / enter close"
            yield Static(f"{self.why}\n\nNothing was changed. Keys typed now are ignored until you close this.")

    def on_key(self, event: events.Key) -> None:
        if event.key not in CLOSE_KEYS:
            event.stop()
            event.prevent_default()

    def action_hold(self) -> None:
        """A key that would act below: ignored."""

    def action_close(self) -> None:
        self.dismiss(None)
