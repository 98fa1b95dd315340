"""The overview tab at small sizes (80x24 over SSH): every tier, the worst GPUs that fit, the latest events.

One screen with what an operator acts on, whatever the sources: tiers first (all of them up to 8), then
the GPUs worst first (lost, down or stale, XID, throttled, hot: a down node is one line), then the
ongoing incidents and the latest events. Every line is cut to the width at a word, never wrapped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rich.text import Text
from textual.widget import Widget

from collectors.samples import TrafficSample
from quotas.model import Quota
from surgewatch.alerts import Event
from surgewatch.kpis import GpuRow, format_age, severity_key, short_model
from surgewatch.thresholds import BAD, DIM, STALE, WARN, Thresholds
from tui.widgets.events_log import event_line
from tui.widgets.gpu_table import STATUS_STYLE
from tui.widgets.tiers import TierOrder, fit_pairs, tier_cells

MAX_TIERS = 8
TIER_COLS = (("tier", 10), ("state", 14), ("mode", 7), ("quota", 10), ("ok/s", 7), ("rej/s", 7), ("rej%", 5))
TIER_CELLS = (0, 1, 2, 3, 4, 5, 6)  # tier_cells' columns shown, in TIER_COLS order; 7 (rejected by) fills the rest
RIGHT = {"ok/s", "rej/s", "rej%"}


def fit(text: str, width: int) -> str:
    """`text` cut to `width` at a word boundary (with …), never mid-word unless one word is wider."""
    if len(text) <= width:
        return text
    cut = text[: max(0, width - 1)]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


def worst_gpus(rows: Iterable[GpuRow]) -> list[GpuRow | tuple[str, list[GpuRow]]]:
    """Rows worst first (surgewatch.kpis.severity_key); the GPUs of a node that is down or stale as one
    (node, rows) item, where its first GPU would be."""
    out: list[GpuRow | tuple[str, list[GpuRow]]] = []
    groups: dict[str, list[GpuRow]] = {}
    for r in sorted(rows, key=severity_key):
        if r.status in ("down", "stale") or r.placeholder:
            if r.node not in groups:
                groups[r.node] = []
                out.append((r.node, groups[r.node]))
            groups[r.node].append(r)
        else:
            out.append(r)
    return out


@dataclass
class SummaryData:
    """What the summary renders, set by the overview screen after each reading."""

    rows: tuple[GpuRow, ...] = ()
    quotas: dict[str, Quota] = field(default_factory=dict)
    traffic: TrafficSample | None = None
    traffic_stale: bool = False
    redis_configured: bool = True
    gpu_note: str = ""
    events: Sequence[Event] = ()
    now: float = 0.0


class Summary(Widget):
    """Renders SummaryData into the lines that fit its size (render-only, no focus)."""

    DEFAULT_CSS = "Summary { height: 1fr; padding: 0 1; }"

    def __init__(self, thresholds: Thresholds, order: TierOrder, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.thresholds = thresholds
        self.order = order
        self.data = SummaryData()

    def show(self, data: SummaryData) -> None:
        self.data = data
        self.refresh()

    def render(self) -> Text:
        width, height = max(20, self.content_size.width), max(1, self.content_size.height)
        return Text("\n").join(summary_lines(self.data, self.thresholds, self.order, width, height))


def summary_lines(d: SummaryData, th: Thresholds, order: TierOrder, width: int, height: int) -> list[Text]:
    """The tiers, then the events (ongoing first, at most 3 lines), then GPUs in the lines left."""
    tiers = tier_lines(d, th, order, width)
    events = event_lines(d.events, width)
    gpu_room = max(2, height - len(tiers) - len(events))
    gpus = gpu_lines(d, th, width, gpu_room)
    events = events[: max(0, height - len(tiers) - len(gpus))]
    return tiers + gpus + events


def _head(text: str, note: str = "") -> Text:
    t = Text(text, style="bold underline")
    if note:
        t.append(f"  {note}", style="dim")
    return t


def tier_lines(d: SummaryData, th: Thresholds, order: TierOrder, width: int) -> list[Text]:
    if not d.redis_configured:
        return [Text(fit("Tiers: no Redis configured: --redis URL (or REDIS_URL) shows tiers and quotas", width),
                     style="dim")]
    by_tier = {t.tier: t for t in d.traffic.tiers} if d.traffic else {}
    quotas = {n: d.quotas.get(n) for n in set(by_tier) | set(d.quotas)}  # the state's quotas, the one route
    names = order.sort(quotas, quotas)
    if not names:
        return [Text("Tiers: waiting for the first traffic poll", style=WARN if d.traffic_stale else DIM)]
    name_w = min(16, max(10, *(len(n) for n in names)))
    cols = ((TIER_COLS[0][0], name_w), *TIER_COLS[1:])
    shown = names
    if len(names) > MAX_TIERS:  # the worst rejection first, then the rest in order
        def pct(n: str) -> float:
            t = by_tier.get(n)
            total = (t.accepted_rps + t.rejected_rps) if t else 0.0
            return t.rejected_rps / total if t and total else 0.0
        worst = set(sorted(names, key=pct, reverse=True)[: MAX_TIERS - 1])
        shown = [n for n in names if n in worst]
    used = sum(w + 1 for _, w in cols)
    head = Text(" ".join(f"{c:>{w}}" if c in RIGHT else f"{c:<{w}}" for c, w in cols), style="bold")
    head.append(" rejected by" if width - used >= 11 else "")
    out = [head]
    for n in shown:
        cells = tier_cells(by_tier.get(n), quotas.get(n), n, th, d.traffic_stale, d.now)
        line = Text()
        for (col, w), i in zip(cols, TIER_CELLS, strict=True):
            c = cells[i]
            text = fit(c.text, w)
            line.append(f"{text:>{w}}" if col in RIGHT else f"{text:<{w}}", style=c.style)
            line.append(" ")
        why = cells[7]
        if width - used >= 4 and why.text != "-":
            # whole "reason rate" pairs that fit, then "+N": never a reason without its number
            line.append(fit(fit_pairs(why.value, width - used), width - used), style=why.style)
        line.rstrip()
        out.append(line)
    if len(shown) < len(names):
        out.append(Text(f"… {len(names) - len(shown)} more tiers in the Tiers tab", style="dim"))
    return out


def gpu_lines(d: SummaryData, th: Thresholds, width: int, room: int) -> list[Text]:
    if not d.rows:
        note = d.gpu_note or "no GPUs reported yet"
        return [Text(fit(f"GPUs: {note}", width), style="dim")]
    items = worst_gpus(d.rows)
    bad = sum(1 for r in d.rows if r.status != "ok")
    head = _head("GPUs, worst first", f"{bad} of {len(d.rows)} not ok")
    out = [Text(fit(head.plain, width), style="bold")] if head.cell_len > width else [head]
    for item in items[: max(0, room - 1)]:
        if isinstance(item, tuple):
            node, group = item
            r = group[0]
            age = f" {format_age(r.age_s)}" if r.age_s is not None else ""
            what = r.note if r.placeholder else f"{len(group)} GPU{'s' if len(group) != 1 else ''}, values last-known"
            line = Text(f"{fit(node, 21):<21} ", style=STALE)
            line.append(f"{r.status}{age}", style=STATUS_STYLE.get(r.status, BAD))
            line.append(f"  {fit(what, max(1, width - 24 - len(r.status + age)))}", style="dim")
        else:
            g = item.gpu
            line = Text(f"{fit(item.node, 21):<21} ")
            line.append(f"{fit(f'{g.index} {short_model(g.name)}', 12):<12} ")
            status = item.status + (f" {','.join(g.throttle)}" if item.status == "throttled" and g.throttle else "")
            status += f" {g.xid}" if item.status == "xid" and g.xid is not None else ""
            line.append(f"{fit(status, 22):<22} ", style=STATUS_STYLE.get(item.status, ""))
            line.append(f"{'n/a' if g.temp_c is None else f'{g.temp_c:.0f}°C':>5} ", style=th.temp_style(g.temp_c))
            line.append(f"{'n/a' if g.util_pct is None else f'{g.util_pct:.0f}%':>4} ", style=th.util_style(g.util_pct))
            line.append(f"{'' if g.power_w is None else f'{g.power_w:.0f} W':>6}")
        out.append(line)
    if len(items) > room - 1 and room > 1:
        more = len(items) - (room - 2)
        out[-1] = Text(f"… {more} more in the GPUs tab", style="dim")
    return out


def event_lines(events: Sequence[Event], width: int, most: int = 3) -> list[Text]:
    """A heading, then the ongoing incidents and the newest events (newest last), `most` lines of them."""
    ongoing = [e for e in events if e.ongoing][:most]
    latest = [e for e in events if not e.ongoing][-(most - len(ongoing)):] if len(ongoing) < most else []
    out = []
    for e in ongoing + latest:
        t = event_line(e)
        if t.cell_len > width:
            plain = fit(t.plain, width)  # cut at a word, keeping the styles of what stays
            t = t[: len(plain) - 1]
            t.append("…")
        out.append(t)
    return [_head("Events", "all: Events tab"), *out] if out else []


__all__ = ["Summary", "SummaryData", "fit", "summary_lines", "worst_gpus"]
