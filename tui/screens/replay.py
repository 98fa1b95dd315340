"""The overview in replay mode: the REPLAY banner with the recorded time and a timeline bar, the
replay keys (priority bindings: the GPU table's own arrows never take them), and the `g` prompt."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Header, Input, Label, Static

from tui.screens.overview import OverviewScreen

TIMES = "\u00d7"  # the multiplication sign of "10x" (spelt out: ruff flags the literal as ambiguous)


def clock_text(at: float) -> str:
    """The recorded wall-clock time as the events panel writes it (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def span_text(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bar_text(player: Any, width: int) -> Text:
    """`REPLAY 2026-11-25 14:32:05Z ▶ 10x  ━━━━●────  0:12:34 / 1:00:00` (with a multiplication sign)."""
    t = Text()
    t.append(" REPLAY ", style="bold reverse")
    t.append(f" {clock_text(player.position)} ", style="bold")
    t.append(f"{'▶' if player.playing else '⏸'} {player.speed}{TIMES}  ")
    right = f"  {span_text(player.position - player.start)} / {span_text(player.end - player.start)}"
    room = max(10, width - t.cell_len - len(right) - 2)
    span = max(1e-9, player.end - player.start)
    at = round((player.position - player.start) / span * (room - 1))
    t.append("━" * at, style="bold")
    t.append("●", style="bold")
    t.append("─" * (room - 1 - at), style="dim")
    t.append(right)
    return t


class ReplayBar(Static):
    DEFAULT_CSS = "ReplayBar { height: 1; background: $warning 40%; color: $text; }"


class GotoPrompt(ModalScreen[str | None]):
    """`g`: type a time; enter goes there, esc cancels."""

    DEFAULT_CSS = """
    GotoPrompt { align: center middle; }
    GotoPrompt > Vertical { width: 64; height: auto; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Go to: 14:32:05 (UTC), +10m or -30s from here, or 2026-11-25T14:32:05Z")
            yield Input(placeholder="time", id="goto")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReplayOverviewScreen(OverviewScreen):
    """Read-only overview with the replay controls."""

    BINDINGS = [
        # the quota history is read from Redis, which a replay has none of: h is taken off (the recording's
        # quota changes are in the events panel, at their time) instead of answering "No Redis configured"
        Binding("h", "history", "History", show=False),
        Binding("space", "replay_toggle", "Play/pause", priority=True),
        Binding("left", "replay_step(-1)", "-1s", key_display="←", priority=True),
        Binding("right", "replay_step(1)", "+1s", key_display="→", priority=True),
        Binding("shift+left", "replay_step(-60)", "-1m", key_display="⇧←", priority=True),
        Binding("shift+right", "replay_step(60)", "+1m", key_display="⇧→", priority=True),
        Binding("g", "replay_goto", "Go to"),
        Binding("1", "replay_speed(1)", f"1{TIMES}", show=False),
        Binding("2", "replay_speed(10)", f"10{TIMES}", show=False),
        Binding("3", "replay_speed(60)", f"60{TIMES}", show=False),
    ]

    NOT_IN_REPLAY = ("history",)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.NOT_IN_REPLAY:
            return False  # neither in the footer nor run
        return super().check_action(action, parameters)

    def __init__(self, state: Any, player: Any) -> None:
        super().__init__(state)
        self.player = player

    def compose(self) -> ComposeResult:
        for widget in super().compose():
            yield widget
            if isinstance(widget, Header):
                yield ReplayBar(id="replay-bar")

    def show_replay(self, player: Any) -> None:
        bars = self.query(ReplayBar)
        if bars:
            bars.first().update(bar_text(player, self.size.width or 120))

    def on_resize(self) -> None:
        super().on_resize()
        self.show_replay(self.player)

    def action_replay_toggle(self) -> None:
        self.player.toggle()

    def action_replay_step(self, seconds: int) -> None:
        self.player.step(float(seconds))

    def action_replay_speed(self, speed: int) -> None:
        self.player.set_speed(speed)
        self.notify(f"replay speed {speed}{TIMES}")

    def action_replay_goto(self) -> None:
        def done(text: str | None) -> None:
            if text:
                error = self.player.goto(text)
                if error:
                    self.notify(error, severity="error")

        self.app.push_screen(GotoPrompt(), done)
