"""The tier panel: per-tier traffic, rejections by reason, the live quota, and a 15-minute sparkline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, Sparkline, Static

from collectors.samples import TierTraffic, TrafficSample
from quotas.model import Quota, quota_size, quota_text, sorted_tiers
from surgewatch.kpis import format_age
from surgewatch.thresholds import BAD, STALE, WARN, Thresholds
from tui.widgets.cells import Cell, num_cell
from tui.widgets.live_table import LiveTable

HISTORY_S = 900  # 15 minutes of per-second history
# What an operator must see first comes first: at 80 columns (SSH) the table ends inside "rejected by",
# so a paused tier, a shadow tier and the quota in force are never scrolled off to the right.
COLUMNS = (
    ("tier", "tier"), ("state", "state"), ("mode", "mode"), ("quota", "quota"), ("acc", "ok/s"),
    ("rej", "rej/s"), ("pct", "rej%"), ("why", "rejected by"), ("cap", "cap/s"), ("ver", "v"),
)
WIDTHS = {"state": 14, "acc": 7, "rej": 7, "pct": 5}  # update_cell does not widen: NO QUOTA and "override 1h30m" fit
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
    if q.paused:
        return "PAUSED", BAD
    if q.expires_at is not None:
        # the time it has left: kept short for 80 columns
        return f"override {format_age(max(0.0, q.expires_at - now))}", WARN
    return "active", ""


def tier_cells(
    t: TierTraffic | None, q: Quota | None, tier: str, th: Thresholds, stale: bool, now: float
) -> list[Cell]:
    dim = STALE if stale else None
    total = (t.accepted_rps + t.rejected_rps) if t else 0.0
    pct = (100.0 * t.rejected_rps / total if total > 0 else 0.0) if t else None
    why = ""
    if t is not None:
        why = " ".join(
            f"{SHORT_REASON.get(k, k)} {v:{'.1f' if v < 100 else '.0f'}}"
            for k, v in sorted(t.rejected_by_reason_rps.items())
            if v > 0
        )
        if t.shadow_rps > 0:
            why = (why + f" shadow {t.shadow_rps:.1f}").strip()
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
        Cell(why or "-", dim or "dim", why),
        Cell(
            str(q.tier_cap_rps) if q and q.tier_cap_rps is not None else "-", dim or "", q.tier_cap_rps if q else None
        ),
        Cell(str(q.version) if q else "-", "dim", q.version if q else None),
    ]


class TierTable(LiveTable):
    """One row per tier, keyed by tier name; cells update in place."""

    DEFAULT_CSS = "TierTable { height: auto; max-height: 12; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self._shown: dict[str, list[Cell]] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key, width=WIDTHS.get(key))

    def sync(self, rows: dict[str, list[Cell]]) -> None:
        with self.batch_updates():
            self._sync(rows)

    def _sync(self, rows: dict[str, list[Cell]]) -> None:
        for key in [k for k in self._shown if k not in rows]:
            self.remove_row(key)
            del self._shown[key]
        for key, cells in rows.items():
            old = self._shown.get(key)
            if old is None:
                self.add_row(*cells, key=key)
            else:
                diff = {col: new for (col, _), new, prev in zip(COLUMNS, cells, old, strict=False) if new != prev}
                if diff:
                    self.update_row(key, diff)
            self._shown[key] = cells

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
    """Current quotas by tier: the freshest of the traffic poll and the quota events."""
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
        quotas = {n: self.quotas.get(n) or (t.quota if (t := by_tier.get(n)) else None)
                  for n in set(by_tier) | set(self.quotas)}
        names = self.order.sort(quotas, quotas)
        rows = {}
        for name in names:
            t = by_tier.get(name)
            q = self.quotas.get(name) or (t.quota if t else None)
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
