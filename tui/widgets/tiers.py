"""The tier panel: per-tier traffic, rejections by reason, the live quota, and a 15-minute sparkline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, Sparkline, Static

from collectors.samples import TierTraffic, TrafficSample
from quotas.model import Quota, quota_size, quota_text, sorted_tiers
from surgewatch.kpis import format_age
from surgewatch.thresholds import BAD, STALE, WARN, Thresholds
from tui.widgets.cells import Cell, num_cell
from tui.widgets.columns import Column, Shown
from tui.widgets.fitted_table import FittedTable

HISTORY_S = 900  # 15 minutes of per-second history
# In display order. What an operator acts on stays on screen at any size (keep 0-3): a tier's refusals per
# second, their share and who refused them with how many ("quota 5"); then its state (PAUSED, NO QUOTA,
# an override), its mode (shadow), the quota in force and the accepted rate; the rest as room allows
# (tui.widgets.columns). The rejected-by column is narrowed (whole pairs, then "+N") before any is dropped.
COLUMN_SPECS = (
    Column("tier", "tier", keep=0, most=16, least=4),
    Column("state", "state", keep=4, most=14),
    Column("mode", "mode", keep=5, most=7),
    Column("quota", "quota", keep=6, most=12),
    Column("acc", "ok/s", keep=7, most=7),
    Column("rej", "rej/s", keep=1, most=7),
    Column("pct", "rej%", keep=2, most=5),
    Column("why", "rejected by", keep=3, most=24, short="by", least=12, shrinks=True),
    Column("cap", "cap/s", keep=8, most=6, short="cap"),
    Column("ver", "v", keep=9, most=4),
)
COLUMNS = tuple((c.key, c.label) for c in COLUMN_SPECS)
WHY_MOST = 24  # the rejected-by text holds whole "reason rate" pairs up to this many cells, then "+N"
SHORT_REASON = {"user_quota": "quota", "tier_cap": "cap", "paused": "paused"}


class TierOrder:
    """A fixed, meaningful order of tiers: by quota size (requests per second the quota allows), as each
    tier was first seen, so `free, plus, pro, team, enterprise` read smallest to largest and a quota cut
    during a surge never moves rows under the operator's cursor. Tiers never seen with a quota go last."""

    def __init__(self) -> None:
        self._rank: dict[str, float] = {}

    def sort(self, names: Iterable[str], quotas: Mapping[str, Quota | None]) -> list[str]:
        for name in names:
            q = quotas.get(name)
            if name not in self._rank and q is not None:
                self._rank[name] = quota_size(q)
        inf = float("inf")
        return sorted_tiers(names, lambda n: self._rank.get(n, inf))


def rate_fmt(rps: float) -> str:
    """One decimal while it matters, whole numbers from 100/s: the column stays narrow and exact enough."""
    return "{:,.1f}" if rps < 100 else "{:,.0f}"


def state_text(q: Quota | None, now: float, error: str = "") -> tuple[str, str]:
    if error:
        return "BROKEN", BAD  # junk in Redis or a hand edit: the events panel has the reason
    if q is None:
        return "NO QUOTA", BAD  # every gateway request is refused as unknown_tier: the banner says how to fix
    if q.state == "paused":
        return "PAUSED", BAD
    if q.state == "override" and q.expires_at is not None:
        # the time it has left: kept short for 80 columns
        return f"override {format_age(max(0.0, q.expires_at - now))}", WARN
    return "active", ""


def why_pairs(t: TierTraffic) -> tuple[str, ...]:
    """Who refused how much, the most first: ("quota 160", "cap 28.2"), then what shadow mode let through."""
    pairs = [f"{SHORT_REASON.get(k, k)} {v:{'.1f' if v < 100 else '.0f'}}"
             for k, v in sorted(t.rejected_by_reason_rps.items(), key=lambda kv: (-kv[1], kv[0])) if v > 0]
    if t.shadow_rps > 0:
        pairs.append(f"shadow {t.shadow_rps:.1f}")
    return tuple(pairs)


def fit_pairs(pairs: Sequence[str], most: int = WHY_MOST) -> str:
    """Whole "reason rate" pairs up to `most` cells, then "+N" for the pairs left out: never a reason cut
    from its number. The first pair is always whole (the biggest reason)."""
    shown: list[str] = []
    for i, pair in enumerate(pairs):
        rest = len(pairs) - i - 1
        if shown and len(" ".join([*shown, pair])) + (len(f" +{rest}") if rest else 0) > most:
            return " ".join([*shown, f"+{len(pairs) - i}"])
        shown.append(pair)
    return " ".join(shown)


def tier_cells(
    t: TierTraffic | None, q: Quota | None, tier: str, th: Thresholds, stale: bool, now: float
) -> list[Cell]:
    dim = STALE if stale else None
    total = (t.accepted_rps + t.rejected_rps) if t else 0.0
    pct = (100.0 * t.rejected_rps / total if total > 0 else 0.0) if t else None
    why = why_pairs(t) if t is not None else ()
    state, state_style = state_text(q, now, t.quota_error if t else "")
    return [  # in COLUMNS order
        Cell(tier, dim or "bold", tier),
        Cell(state, dim or state_style, state),
        Cell(q.mode if q else "n/a", dim or (WARN if q and q.mode == "shadow" else ""), q.mode if q else None),
        Cell(
            quota_text(q.limit, q.window_s) if q else "n/a",
            dim or "bold",
            q.limit / q.window_s if q else None,
        ),
        num_cell(t.accepted_rps if t else None, rate_fmt(t.accepted_rps if t else 0), dim or ""),
        num_cell(
            t.rejected_rps if t else None,
            rate_fmt(t.rejected_rps if t else 0),
            dim or ("" if not t or not t.rejected_rps else WARN),
        ),
        num_cell(pct, "{:.1f}" if pct is not None and pct < 10 else "{:.0f}", dim or th.reject_style(pct), "%"),
        Cell(fit_pairs(why) or "-", dim or "dim", why),  # the pairs: written again for a narrower column
        Cell(
            str(q.tier_cap_rps) if q and q.tier_cap_rps is not None else "-", dim or "", q.tier_cap_rps if q else None
        ),
        Cell(str(q.version) if q else "-", "dim", q.version if q else None),
    ]


class TierTable(FittedTable):
    """One row per tier, keyed by tier name; cells update in place."""

    DEFAULT_CSS = "TierTable { height: auto; max-height: 12; scrollbar-size-vertical: 1; }"
    COLUMN_SPECS = COLUMN_SPECS
    ESSENTIAL = 6  # through the quota: the rejected-by pairs are written shorter ("+N") to keep them

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", **kwargs)

    def fit_cell(self, column: Shown, cell: Cell) -> Cell:
        if column.key == "why" and isinstance(cell.value, tuple) and cell.value and cell_len(cell.text) > column.width:
            return Cell(fit_pairs(cell.value, column.width), cell.style, cell.value)
        return cell

    def sync(self, rows: dict[str, list[Cell]]) -> None:
        with self.batch_updates():
            self._sync(rows)

    def _sync(self, rows: dict[str, list[Cell]]) -> None:
        for key in [k for k in self._shown if k not in rows]:
            self.remove_row(key)
            del self._shown[key]
        for key, cells in rows.items():
            old = self._shown.get(key)
            self._shown[key] = cells
            if old is None:
                self.add_row(*self.shown_cells(cells), key=key)
            elif diff := self.changed(cells, old):
                self.update_row(key, diff)
        self.refit()

    @property
    def selected_tier(self) -> str | None:
        if not self._shown or self.cursor_row < 0:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except Exception:
            return None


class TierSpark(Horizontal):
    """A tier's requests per second over the last 15 minutes."""

    DEFAULT_CSS = """
    TierSpark { height: 1; }
    TierSpark > Label { width: 20; }
    TierSpark > Sparkline { width: 1fr; }
    TierSpark > Sparkline > .sparkline--max-color { color: $error; }
    TierSpark > Sparkline > .sparkline--min-color { color: $success; }
    """

    history: reactive[tuple[float, ...]] = reactive((), repaint=False)
    """Requests per second (accepted + rejected), oldest first, at most 15 minutes."""

    def __init__(self, tier: str, label_width: int = 20, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.tier = tier
        self.label_width = label_width
        self._label = ""
        self.source: TierTraffic | None = None  # the traffic the history was taken from
        self.end_s = 0  # epoch second of the history's last value (0: unknown, buckets slide)

    def compose(self) -> ComposeResult:
        label = Label(self.tier, classes="tier-name")
        label.styles.width = self.label_width
        yield label
        yield Sparkline([], summary_function=max)

    def watch_history(self, history: tuple[float, ...]) -> None:
        sparks = self.query(Sparkline)
        if sparks:
            spark = sparks.first()
            # bucket to one value per column here (max per bucket, plain floats): Sparkline would do
            # it with Fractions on every repaint; the leading zero makes bars scale from zero
            data = [0.0, *bucket_max(history, max(1, spark.size.width - 1), self.end_s)]
            if data != spark.data:  # the same bars: no repaint
                spark.data = data
            peak = max(history) if history else 0.0
            label = f"{self.tier} {peak:,.0f}/s"  # the whole name: the panel sizes the labels to the longest
            if label != self._label:
                self._label = label
                self.query_one(Label).update(label, layout=False)  # fixed width

    def on_mount(self) -> None:
        self.watch_history(self.history)

    def on_resize(self) -> None:
        self.watch_history(self.history)


def bucket_max(values: tuple[float, ...], buckets: int, end_s: int = 0) -> list[float]:
    """`values` (one per second, the last at epoch second `end_s`) reduced to at most `buckets` maxima
    of consecutive runs, oldest first.

    With `end_s` known, each column covers a fixed span of the clock (multiples of k seconds): a new
    second changes only the last column, and the bars move one column every k seconds instead of
    every value shifting under a sliding split each second (which reads as jitter, and redraws
    every sparkline every second)."""
    n = len(values)
    if n <= buckets:
        return list(values)
    if end_s <= 0:
        return [max(values[i * n // buckets : (i + 1) * n // buckets]) for i in range(buckets)]
    k = -(-n // buckets)  # seconds per column
    start_s = end_s - n + 1
    out = []
    for col in range(end_s // k - buckets + 1, end_s // k + 1):
        lo, hi = max(col * k, start_s) - start_s, min(col * k + k - 1, end_s) - start_s
        out.append(max(values[lo : hi + 1]) if lo <= hi else 0.0)
    return out


def request_history(t: TierTraffic) -> tuple[float, ...]:
    acc, rej = t.accepted_history[-HISTORY_S:], t.rejected_history[-HISTORY_S:]
    n = max(len(acc), len(rej))
    acc = (0,) * (n - len(acc)) + tuple(acc)
    rej = (0,) * (n - len(rej)) + tuple(rej)
    return tuple(float(a + r) for a, r in zip(acc, rej, strict=False))


class TierPanel(Widget):
    """Tiers table above per-tier sparklines."""

    DEFAULT_CSS = """
    TierPanel { height: 1fr; layout: vertical; }
    TierPanel > #sparks { height: 1fr; }
    TierPanel > #tiers-note { color: $text-muted; padding: 0 1; height: auto; }
    """

    traffic: reactive[TrafficSample | None] = reactive(None, always_update=True, repaint=False)
    """The latest traffic sample (may be last-known when Redis is failing)."""
    quotas: reactive[dict[str, Quota]] = reactive(dict, always_update=True, repaint=False)
    """Current quotas by tier, as the state holds them (surgewatch.state: the one route a quota takes)."""
    stale: reactive[bool] = reactive(False, repaint=False)
    """True when the traffic source is failing: every value is dimmed."""
    note: reactive[str] = reactive("")
    """A line under the table, e.g. how to get traffic when no Redis is configured."""

    def __init__(
        self, thresholds: Thresholds, clock: Callable[[], float] = time.time, order: TierOrder | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.thresholds = thresholds
        self.clock = clock
        self.order = order or TierOrder()

    def compose(self) -> ComposeResult:
        yield TierTable(id="tier-table")
        yield Static("", id="tiers-note")
        yield VerticalScroll(id="sparks")

    def on_mount(self) -> None:
        self._redraw()
        self.watch_note(self.note)

    def watch_traffic(self) -> None:
        self._redraw()

    def watch_quotas(self) -> None:
        self._redraw()

    def watch_stale(self) -> None:
        self._redraw()

    def watch_note(self, note: str) -> None:
        if self.is_mounted:
            self.query_one("#tiers-note", Static).update(note)

    def show(self, *, quotas: dict[str, Quota], traffic: TrafficSample | None, stale: bool, note: str) -> None:
        """Set everything at once: one redraw instead of one per changed reactive."""
        self.set_reactive(TierPanel.quotas, quotas)
        self.set_reactive(TierPanel.traffic, traffic)
        self.set_reactive(TierPanel.stale, stale)
        self.note = note
        self._redraw()

    def _redraw(self) -> None:
        if not self.is_mounted:
            return
        now = self.clock()
        by_tier = {t.tier: t for t in self.traffic.tiers} if self.traffic else {}
        quotas = {n: self.quotas.get(n) for n in set(by_tier) | set(self.quotas)}
        names = self.order.sort(quotas, quotas)
        rows = {}
        for name in names:
            t = by_tier.get(name)
            q = self.quotas.get(name)  # the state's: a quota it dropped (gone, older) is not shown
            rows[name] = tier_cells(t, q, name, self.thresholds, self.stale, now)
        self.query_one(TierTable).sync(rows)
        sparks = self.query_one("#sparks", VerticalScroll)
        if not sparks.is_attached:
            return  # being built or torn down (a quit, a resize into tabs): on_mount draws them
        have = {s.tier: s for s in sparks.query(TierSpark)}
        label_w = max((len(n) for n in names), default=0) + 9  # " 12,345/s": no name cut mid-word
        for name in names:
            if name not in have:
                have[name] = TierSpark(name, label_w)
                sparks.mount(have[name])
            for label in have[name].query(Label):
                if label.styles.width is None or label.styles.width.value != label_w:
                    label.styles.width = label_w
            t = by_tier.get(name)
            if t is not None and have[name].source is not t:
                have[name].source = t
                have[name].end_s = t.history_end_s
                have[name].history = request_history(t)
        for name, spark in have.items():
            if name not in names:
                spark.remove()

    @property
    def selected_tier(self) -> str | None:
        return self.query_one(TierTable).selected_tier

    @dataclass(eq=False)
    class EditRequested(Message):
        """The operator asks to edit a tier's quota: the row chosen in the focused table, else None (the app
        never guesses: it takes them to the table first)."""

        tier: str | None

    def request_edit(self) -> None:
        """`e`: ask for the chosen tier's editor (the app decides whether it may open, and opens it)."""
        table = self.query_one(TierTable)
        self.post_message(self.EditRequested(table.selected_tier if table.has_focus else None))
