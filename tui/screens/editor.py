"""The quota editor: a prefilled form, inline validation, a what-if on the last 5 minutes, CAS apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, Switch

from quotas.errors import Conflict
from quotas.model import Quota, QuotaError, QuotaSpec, parse_duration, parse_spec, parse_tier_cap, validate_reason
from quotas.outcomes import not_applied

if TYPE_CHECKING:
    from surgewatch.session import Session

PREVIEW_MINUTES = 5


@dataclass(frozen=True, slots=True)
class EditRequest:
    """A validated form: what `QuotaStore.set` gets."""

    spec: QuotaSpec
    for_s: int | None
    reason: str


def parse_form(spec_text: str, cap_text: str, shadow: bool, paused: bool, for_text: str, reason: str) -> EditRequest:
    """The CLI's rules (quotas.model), applied to the form; QuotaError says what is wrong."""
    limit, window_s = parse_spec(spec_text.strip())
    cap = parse_tier_cap(cap_text)
    for_s = parse_duration(for_text.strip(), what="override duration") if for_text.strip() else None
    spec = QuotaSpec(limit, window_s, cap, paused, "shadow" if shadow else "enforce")
    return EditRequest(spec, for_s, validate_reason(reason))


def impact_text(impact: Any, spec: QuotaSpec) -> str:
    total = impact.total_admitted
    if total == 0:
        return f"What-if: no admitted requests in the last {PREVIEW_MINUTES} min, so {spec.spec} would refuse none."
    pct = 100.0 * impact.would_refuse / total
    return (
        f"What-if on the last {PREVIEW_MINUTES} min: of {total:,} admitted requests, {impact.would_refuse:,} "
        f"({pct:.1f}%) would have been refused under {spec.spec}"
        f" ({impact.would_refuse_user:,} by the user quota, {impact.would_refuse_cap:,} by the tier cap)."
    )


class QuotaEditor(ModalScreen[Quota | None]):
    """Edit one tier's quota. Dismisses with the stored Quota on success, None on cancel."""

    DEFAULT_CSS = """
    QuotaEditor { align: center middle; }
    QuotaEditor > Vertical { width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1; overflow-y: auto; }
    QuotaEditor .row { height: 3; }
    QuotaEditor .row > Label { width: 16; padding: 1 0 0 0; }
    QuotaEditor .row > Input { width: 1fr; }
    QuotaEditor .switches { height: 3; }
    QuotaEditor .switches > Label { padding: 1 1 0 0; }
    QuotaEditor #error { color: $error; text-style: bold; height: auto; }
    QuotaEditor #impact { color: $text; height: auto; }
    QuotaEditor #conflict { color: $warning; text-style: bold; height: auto; }
    QuotaEditor #buttons { height: 3; align-horizontal: right; }
    QuotaEditor #reload { display: none; }
    QuotaEditor #reload.-shown { display: block; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "apply", "Apply"),
    ]

    def __init__(self, session: Session, quota: Quota, *, preview_delay_s: float = 0.3) -> None:
        super().__init__()
        self.session = session  # the one writer: this screen only asks it
        self.quota = quota
        self.preview_delay_s = preview_delay_s
        self.request: EditRequest | None = None
        self._preview_timer: Any = None

    def compose(self) -> ComposeResult:
        q = self.quota
        with Vertical() as box:
            box.border_title = f"Edit quota of tier {q.tier} (version {q.version})"
            box.border_subtitle = "ctrl+s apply · esc cancel"
            with Horizontal(classes="row"):
                yield Label("LIMIT/WINDOW")
                yield Input(q.spec, id="spec", placeholder="e.g. 3/1d, 50/3h, 600/1m")
            with Horizontal(classes="row"):
                yield Label("tier cap req/s")
                yield Input(
                    str(q.tier_cap_rps) if q.tier_cap_rps else "none", id="cap", placeholder="none, or requests/s"
                )
            with Horizontal(classes="switches"):
                yield Label("shadow")
                yield Switch(q.mode == "shadow", id="shadow")
                yield Label("paused")
                yield Switch(q.paused, id="paused")
            with Horizontal(classes="row"):
                yield Label("for")
                yield Input("", id="for", placeholder="permanent; or a temporary override, e.g. 2h")
            with Horizontal(classes="row"):
                yield Label("reason")
                yield Input("", id="reason", placeholder="why (kept in the audit history)")
            yield Static("", id="error")
            yield Static("", id="impact")
            yield Static("", id="conflict")
            with Horizontal(id="buttons"):
                yield Button("Reload current", id="reload", variant="warning")
                yield Button("Cancel", id="cancel")
                yield Button("Apply", id="apply", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#spec", Input).focus()
        self.validate()

    # ----- validation and what-if
    def _values(self) -> tuple[str, str, bool, bool, str, str]:
        return (
            self.query_one("#spec", Input).value,
            self.query_one("#cap", Input).value,
            self.query_one("#shadow", Switch).value,
            self.query_one("#paused", Switch).value,
            self.query_one("#for", Input).value,
            self.query_one("#reason", Input).value,
        )

    def validate(self) -> EditRequest | None:
        """Check the form now; show the error inline and schedule a what-if when it is valid."""
        try:
            self.request = parse_form(*self._values())
        except QuotaError as e:
            self.request = None
            self.query_one("#error", Static).update(str(e))
            self.query_one("#apply", Button).disabled = True
            return None
        self.query_one("#error", Static).update("")
        self.query_one("#apply", Button).disabled = False
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(self.preview_delay_s, self._start_preview)
        return self.request

    @on(Input.Changed)
    @on(Switch.Changed)
    def _changed(self) -> None:
        self.validate()

    def _start_preview(self) -> None:
        if self.request is not None:
            self.run_worker(self._preview(self.request.spec), group="preview", exclusive=True, exit_on_error=False)

    async def _preview(self, spec: QuotaSpec) -> None:
        label = self.query_one("#impact", Static)
        try:
            impact = await self.session.preview(self.quota.tier, spec, minutes=PREVIEW_MINUTES)
        except Exception as e:
            label.update(f"What-if unavailable: {e}")
            return
        if self.request is not None and self.request.spec == spec:
            label.update(impact_text(impact, spec))

    # ----- apply
    def action_apply(self) -> None:
        req = self.validate()
        if req is None:
            self.notify("Fix the form first: " + str(self.query_one("#error", Static).render()), severity="error")
            return
        self.query_one("#apply", Button).disabled = True
        self.run_worker(self._apply(req), group="apply", exclusive=True, exit_on_error=False)

    async def _apply(self, req: EditRequest) -> None:
        conflict = self.query_one("#conflict", Static)
        try:
            q = await self.session.set_quota(
                self.quota.tier,
                req.spec,
                reason=req.reason,
                expect_version=self.quota.version,
                for_s=req.for_s,
            )
        except Conflict as e:
            self.conflict = e
            conflict.update(f"Not applied: {e}. Press 'Reload current' to start again from its quota.")
            self.query_one("#reload").add_class("-shown")
            return
        except Exception as e:  # the one mapping (quotas.outcomes): the same words as the CLI and the guard panel
            conflict.update(not_applied(e))
        else:
            self.dismiss(q)
            return
        self.query_one("#apply", Button).disabled = False

    def reload(self, current: Quota) -> None:
        """Start over from the quota someone else stored."""
        self.quota = current
        self.query_one("#spec", Input).value = current.spec
        self.query_one("#cap", Input).value = str(current.tier_cap_rps) if current.tier_cap_rps else "none"
        self.query_one("#shadow", Switch).value = current.mode == "shadow"
        self.query_one("#paused", Switch).value = current.paused
        self.query_one(Vertical).border_title = f"Edit quota of tier {current.tier} (version {current.version})"
        self.query_one("#conflict", Static).update(f"Reloaded version {current.version} by {current.updated_by}.")
        self.query_one("#reload").remove_class("-shown")
        self.validate()

    @on(Button.Pressed, "#reload")
    def _reload_pressed(self) -> None:
        current = getattr(getattr(self, "conflict", None), "current", None)
        if current is not None:
            self.reload(current)

    @on(Button.Pressed, "#apply")
    def _apply_pressed(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        # enter in the last field applies; elsewhere it moves on, as forms do
        if self.focused is not None and self.focused.id == "reason":
            self.action_apply()
        else:
            self.focus_next()
