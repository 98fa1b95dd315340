"""The Guard panel: what `surgewatch guard` is doing and the proposal it makes, in every console.

Hidden while no guard runs (its status key has lapsed) and nothing is proposed. The board is read by
a worker once per console interval (surgewatch.guard.board: two round trips); results arrive as
past-tense messages and the panel only renders them. `a` accepts the open proposal as the operator's
own change (their name, compare-and-set on the version the guard read), `x` dismisses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.widgets import Static

from collectors.runner import classify
from quotas.model import format_duration
from quotas.outcomes import not_applied
from surgewatch.guard.board import Board, Proposal
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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.status: dict[str, Any] | None = None
        self.proposals: dict[str, Proposal] = {}
        self.error: str | None = None

    def on_mount(self) -> None:
        app: Any = self.app
        if app.settings.redis_url and getattr(app, "replay", None) is None:
            self.run_worker(self._watch(app), group="guard-board", exclusive=True, exit_on_error=False)

    async def _watch(self, app: Any) -> None:
        while True:
            try:
                board = Board(await app.session.redis(), app.settings.prefix)
                status = await board.status()
                tiers = sorted(app.state.quotas)
                self.post_message(GuardRead(status, await board.proposals(tiers)))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis trouble is the banner's business; the panel says it cannot see
                self.post_message(GuardRead(None, {}, classify(e).message))
            await asyncio.sleep(app.settings.interval_s)

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
            read_only = getattr(self.app, "read_only", True)
            t.append("  (read-only console)" if read_only else "  a: accept as yours · x: dismiss", style="dim")
            t.append(f"\n{p.reason}")
        self.update(t)


def _panel(app: Any) -> GuardPanel | None:
    found = app.screen.query(GuardPanel)
    return found.first() if found else None


def _refused(app: Any, what: str) -> Proposal | None:
    """The open proposal, or None after telling the operator why it cannot be answered here."""
    if app.read_only or not app.settings.redis_url:
        app.notify(f"read-only console: proposals cannot be {what} here", severity="warning")
        return None
    panel = _panel(app)
    p = panel.open_proposal if panel is not None else None
    if p is None:
        app.notify("No guard proposal is open.", severity="warning")
        return None
    refusal = app.state.edit_refusal()
    if refusal:
        app.notify(f"Not {what}: {refusal}.", severity="error")
        return None
    return p


def _answer(app: Any, what: str, answer: Callable[[Proposal, str], Awaitable[ProposalAnswered]]) -> None:
    """Answer the open proposal as the console's operator, in a worker; the panel gets the outcome."""
    p = _refused(app, what)
    if p is None:
        return
    actor = app.session.actor
    panel = _panel(app)

    async def work() -> None:
        msg = await answer(p, actor)
        if panel is not None:
            panel.post_message(msg)

    app.run_worker(work(), group="guard-answer", exit_on_error=False)


def accept(app: Any) -> None:
    """`a`: write the open proposal as the console's operator (their change: the guard leaves the tier be)."""

    async def write(p: Proposal, actor: str) -> ProposalAnswered:
        from quotas.errors import Conflict

        try:
            q = await app.session.accept(p)
        except Conflict as e:
            return ProposalAnswered(f"Not applied: {e}; the proposal is withdrawn.", False)
        except Exception as e:
            return ProposalAnswered(not_applied(e), False)
        return ProposalAnswered(f"tier {q.tier} is now {label(q)} for {format_duration(p.for_s)} "
                                f"(version {q.version}, as {actor})", True)

    _answer(app, "accepted", write)


def dismiss(app: Any) -> None:
    """`x`: dismiss the open proposal (the guard leaves that tier alone for its cool-down)."""

    async def drop(p: Proposal, actor: str) -> ProposalAnswered:
        try:
            await app.session.dismiss(p)
        except Exception as e:
            return ProposalAnswered(f"Not dismissed: {classify(e).message}", False)
        return ProposalAnswered(f"proposal {p.id} for {p.tier} dismissed", True)

    _answer(app, "dismissed", drop)
