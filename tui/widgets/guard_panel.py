"""The Guard panel: what `surgewatch guard` is doing and the proposal it makes, in every console.

Hidden while no guard runs (its status key has lapsed) and nothing is proposed. The console reads the
board once per interval (tui.operator; surgewatch.guard.board: two round trips) and hands it here as a
past-tense message: the panel only renders. What the operator asks is posted as a nested message
(`AcceptRequested`: `a`, the operator's own change under their name, compare-and-set on the version the
guard read; `DismissRequested`: `x`); the app answers it through its session and tells the panel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.widgets import Static

from quotas.model import format_duration
from surgewatch.guard.board import Proposal
from surgewatch.guard.cap import label


@dataclass(eq=False)
class GuardRead(Message):
    """The guard's board was read: its status (None: no guard running) and the tiers' proposals."""

    status: dict[str, Any] | None
    proposals: dict[str, Proposal]
    error: str | None = None


@dataclass(eq=False)
class ProposalAnswered(Message):
    """An operator accepted or dismissed a proposal here; `text` says what happened, `ok` if it did."""

    text: str
    ok: bool


class GuardPanel(Static):
    DEFAULT_CSS = """
    GuardPanel { height: auto; display: none; padding: 0 1; border: round $warning; }
    GuardPanel.-shown { display: block; }
    """

    def __init__(self, *, read_only: bool = True, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.read_only = read_only  # says which keys to offer; the app refuses a reader's request anyway
        self.status: dict[str, Any] | None = None
        self.proposals: dict[str, Proposal] = {}
        self.error: str | None = None

    @dataclass(eq=False)
    class AcceptRequested(Message):
        """The operator asks to accept `proposal` as their own change."""

        panel: GuardPanel
        proposal: Proposal

    @dataclass(eq=False)
    class DismissRequested(Message):
        """The operator asks to dismiss `proposal`."""

        panel: GuardPanel
        proposal: Proposal

    def request_answer(self, *, accept: bool) -> None:
        """`a` / `x`: ask for the open proposal to be accepted or dismissed (the app decides whether it may be)."""
        p = self.open_proposal
        if p is None:
            self.app.notify("No guard proposal is open.", severity="warning")
            return
        self.post_message(self.AcceptRequested(self, p) if accept else self.DismissRequested(self, p))

    @property
    def open_proposal(self) -> Proposal | None:
        opened = [p for p in self.proposals.values() if p.state == "open"]
        return min(opened, key=lambda p: p.at) if opened else None

    def on_guard_read(self, message: GuardRead) -> None:
        self.status, self.proposals, self.error = message.status, message.proposals, message.error
        self._show()

    def on_proposal_answered(self, message: ProposalAnswered) -> None:
        self.app.notify(message.text, severity="information" if message.ok else "error")

    def _show(self) -> None:
        st, p = self.status, self.open_proposal
        shown = st is not None or p is not None
        self.set_class(shown, "-shown")
        if not shown:
            return
        t = Text()
        t.append("Guard ", style="bold")
        if st is None:
            t.append("(no guard running now) ", style="dim")
        else:
            state = str(st.get("state", "?"))
            style = "bold red" if state == "frozen" else "bold yellow" if state in ("acted", "proposed") else ""
            mode = "dry run" if st.get("dry_run") else str(st.get("mode", "?"))
            t.append(f"{st.get('actor', '?')} · {mode} · ")
            t.append(state.upper() if state == "frozen" else state, style=style)
            if st.get("why"):
                t.append(f": {st['why']}")
        if p is not None:
            t.append("\n")
            t.append(f"PROPOSAL {p.id}: ", style="bold yellow")
            t.append(f"{p.tier} {label(p.old_spec)} -> {label(p.spec)} for {format_duration(p.for_s)}", style="bold")
            read_only = self.read_only
            t.append("  (read-only console)" if read_only else "  a: accept as yours · x: dismiss", style="dim")
            t.append(f"\n{p.reason}")
        self.update(t)
