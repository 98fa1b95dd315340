"""What the operator asks of a console, done: restore lost quotas, answer the guard's proposal.

Screens and widgets only post the request (`GuardPanel.AcceptRequested`, the `r` binding); this object checks
that it may be done here and now, runs the write through the app's `Session` (the only writer) in a worker,
and hands the outcome back as a message. It also reads the guard's board for the panel, so no widget reaches
Redis itself.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from collectors.runner import classify
from quotas.errors import Conflict
from quotas.model import format_duration
from quotas.outcomes import not_applied
from surgewatch.guard.board import Board, Proposal
from surgewatch.guard.cap import label
from tui.messages import QuotasRestored
from tui.widgets.guard_panel import GuardPanel, GuardRead, ProposalAnswered

if TYPE_CHECKING:
    from tui.app import SurgewatchApp


class OperatorRequests:
    """The operator's requests of one console (`app`), each refused up front in a reader or while Redis is in a
    state where the write would fail anyway."""

    def __init__(self, app: SurgewatchApp) -> None:
        self.app = app

    # ----- restore the last-known quotas
    def restore(self) -> None:
        """Offer to write back the quotas this console last saw (Redis came back empty, or tiers lost theirs)."""
        app = self.app
        if app.read_only or not app.session.configured:
            app.notify("read-only console: restore with `surgewatch quota import FILE`", severity="warning")
            return
        why = app.session.missing("restore quotas")
        if why is not None:
            app.notify(why, severity="warning")
            return
        quotas = app.state.restorable()
        if not quotas:
            app.notify("Nothing to restore: every tier this console knows has its quota.")
            return
        refusal = app.state.edit_refusal()
        if refusal:
            app.notify(f"Restore refused: {refusal}.", severity="error")
            return
        from tui.screens.restore import RestoreScreen, restore_reason

        reason = restore_reason(app.session.actor, app.state.last_known_at)

        def confirmed(ok: bool | None) -> None:
            if ok:
                app.run_worker(self._restore(quotas, reason), name="restore", group="restore", exit_on_error=False)

        app.push_screen(RestoreScreen(quotas, app.session.actor, reason), confirmed)

    async def _restore(self, quotas: list[Any], reason: str) -> None:
        try:
            outcomes = await self.app.session.restore(quotas, reason=reason)
        except Exception as e:
            self.app.post_message(QuotasRestored([], classify(e)))
            return
        self.app.post_message(QuotasRestored(outcomes, None))

    def restored(self, message: QuotasRestored) -> None:
        """The restore's outcome: the state takes what was written, the operator is told what was not."""
        app = self.app
        if message.error is not None:
            app.notify(f"Not restored: {message.error}; nothing was changed.", severity="error")
            return
        # what was written reaches the state by the change feed, as any change does (one route)
        done = [o for o in message.outcomes if o.action == "written"]
        left = [f"{o.tier} ({o.action})" for o in message.outcomes if o.action != "written"]
        text = f"restored {len(done)} tier(s)" + (f"; not written: {', '.join(left)}" if left else "")
        app.notify(text, severity="warning" if left else "information")

    # ----- the guard
    async def watch_guard(self) -> None:
        """Read the guard's board once per console interval (two round trips) and hand it to the panel."""
        app = self.app
        while True:
            try:
                board = Board(await app.session.redis(), app.settings.prefix)
                status = await board.status()
                read = GuardRead(status, await board.proposals(sorted(app.state.quotas)))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis trouble is the banner's business; the panel says it cannot see
                read = GuardRead(None, {}, classify(e).message)
            for panel in app.overview.query(GuardPanel):
                panel.post_message(read)
            await asyncio.sleep(app.settings.interval_s)

    def answer_guard(self, proposal: Proposal, *, accept: bool, panel: GuardPanel) -> None:
        """Accept (the operator's own change, under their name) or dismiss the guard's proposal."""
        app = self.app
        what = "accepted" if accept else "dismissed"
        if app.read_only or not app.session.configured:
            app.notify(f"read-only console: proposals cannot be {what} here", severity="warning")
            return
        refusal = app.state.edit_refusal()
        if refusal:
            app.notify(f"Not {what}: {refusal}.", severity="error")
            return

        async def work() -> None:
            panel.post_message(await (self._accept(proposal) if accept else self._dismiss(proposal)))

        app.run_worker(work(), group="guard-answer", exit_on_error=False)

    async def _accept(self, p: Proposal) -> ProposalAnswered:
        try:
            q = await self.app.session.accept(p)
        except Conflict as e:
            return ProposalAnswered(f"Not applied: {e}; the proposal is withdrawn.", False)
        except Exception as e:
            return ProposalAnswered(not_applied(e), False)
        return ProposalAnswered(f"tier {q.tier} is now {label(q)} for {format_duration(p.for_s)} "
                                f"(version {q.version}, as {self.app.session.actor})", True)

    async def _dismiss(self, p: Proposal) -> ProposalAnswered:
        try:
            await self.app.session.dismiss(p)
        except Exception as e:
            return ProposalAnswered(f"Not dismissed: {classify(e).message}", False)
        return ProposalAnswered(f"proposal {p.id} for {p.tier} dismissed", True)
