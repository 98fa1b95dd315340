"""The KPI strip: the fleet and the traffic in one glance (one line of text, or big Digits on a wall)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Digits, Label, Static

from surgewatch.kpis import Kpis, format_age
from surgewatch.service import seconds_text
from surgewatch.thresholds import BAD, DIM, OK, WARN, Thresholds
from tui.widgets.wall import WallDigits


def _num(v: float | None, fmt: str = "{:.0f}", unit: str = "") -> str:
    return "n/a" if v is None else fmt.format(v) + unit


def kpi_groups(k: Kpis, th: Thresholds) -> list[Text]:
    """The strip's groups, each kept whole on screen: GPUs, temperatures and power, traffic, data age."""
    groups: list[Text] = []

    def group() -> Text:
        groups.append(Text())
        return groups[-1]

    def add(t: Text, label: str, value: str, style: str = "") -> None:
        if t:
            t.append("  ")
        t.append(f"{label} ", style="dim")
        t.append(value, style=style or "bold")

    g = group()
    add(g, "GPUs", str(k.gpus))
    add(g, "ok", str(k.healthy), OK if k.gpus and k.healthy == k.gpus else "bold")
    add(g, "hot", str(k.hot), BAD if k.hot else DIM)
    add(g, "throttled", str(k.throttled), WARN if k.throttled else DIM)
    add(g, "lost", str(k.lost), BAD if k.lost else DIM)
    if k.gpuless_nodes:
        add(g, "no-GPU nodes", str(k.gpuless_nodes), WARN)
    if k.ignored_values:
        add(g, "ignored values", str(k.ignored_values), WARN)
    g = group()
    add(
        g,
        "util",
        "n/a" if k.util_max_pct is None else f"{_num(k.util_mean_pct)}/{_num(k.util_max_pct)}%",
        th.util_style(k.util_max_pct),
    )
    add(
        g,
        "temp",
        "n/a" if k.temp_max_c is None else f"{_num(k.temp_mean_c)}/{_num(k.temp_max_c)}°C",
        th.temp_style(k.temp_max_c),
    )
    add(g, "power", _power(k.power_w))
    g = group()
    add(g, "req/s", _num(k.rps, "{:,.0f}"))
    add(g, "rejected", _num(k.reject_pct, "{:.1f}", "%"), th.reject_style(k.reject_pct))
    g = group()
    age_style = WARN if k.oldest_age_s is not None and k.oldest_age_s > th.stale_after_s else DIM
    add(g, "oldest data", format_age(k.oldest_age_s) if k.oldest_age_s is not None else "n/a", age_style)
    if k.e2e_p99_worst_s is not None or k.serving_note:  # inference servers watched (surgewatch.kpis.serving_kpis)
        g = group()
        add(g, "e2e p99", _e2e(k), DIM if k.e2e_p99_worst_s is None else
            BAD if k.e2e_p99_worst_s > th.e2e_p99_slo_s else OK)
        add(g, "queue", _num(k.serving_queue, "{:,.0f}"))
        if k.serving_down:  # the figures above come from the replicas that answer: never calm beside a dead one
            add(g, "down", f"{k.serving_down}/{k.serving_replicas}", BAD)
    return groups


def _e2e(k: Kpis) -> str:
    """`14.2s img-gen`: the worst model's e2e p99 and its name, or why there is none."""
    if k.e2e_p99_worst_s is None:
        return k.serving_note or "n/a"
    return f"{seconds_text(k.e2e_p99_worst_s)} {k.e2e_model[:24]}"


PACK_ORDER = (0, 2, 4, 1, 3)  # when the strip needs two lines: the GPUs, the traffic, the service first
SEP = " │ "


def kpi_text(k: Kpis, th: Thresholds, width: int | None = None) -> Text:
    """The strip as styled text: one line when it fits `width`, else whole groups packed into lines
    (the GPUs and the traffic first), so no group is ever wrapped by the terminal."""
    groups = kpi_groups(k, th)
    one = Text(SEP, style="dim").join(groups)
    if width is None or one.cell_len <= width:
        return one
    lines: list[list[Text]] = []
    for i in (i for i in PACK_ORDER if i < len(groups)):
        g = groups[i]
        for line in lines:
            if sum(x.cell_len for x in line) + len(SEP) * len(line) + g.cell_len <= width:
                line.append(g)
                break
        else:
            lines.append([g])
    return Text("\n").join(Text(SEP, style="dim").join(line) for line in lines)


def _power(w: float | None) -> str:
    # bounded width whatever the fleet: every GPU's power is within 0..5000 W (collectors.metrics)
    if w is None:
        return "n/a"
    if w >= 10_000_000:
        return f"{w / 1e6:.1f} MW"
    return f"{w / 1000:.1f} kW" if w >= 10_000 else f"{w:.0f} W"


class KpiStrip(Static):
    """One or two lines of KPIs at the top of the overview."""

    DEFAULT_CSS = """
    KpiStrip { height: auto; padding: 0 1; background: $boost; }
    """

    kpis: reactive[Kpis] = reactive(Kpis)
    """The numbers shown; set by the app after each reading."""
    _lines = 0

    def __init__(self, thresholds: Thresholds, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.thresholds = thresholds

    def render(self) -> Text:
        return kpi_text(self.kpis, self.thresholds, max(1, self.size.width - 2))

    def watch_kpis(self, kpis: Kpis) -> None:
        # a layout pass costs far more than a repaint: ask for one only when the strip packs differently
        lines = len(kpi_text(kpis, self.thresholds, max(1, self.size.width - 2)).split())
        if lines != self._lines:
            self._lines = lines
            self.refresh(layout=True)

    def on_resize(self) -> None:
        self.watch_kpis(self.kpis)


class WallKpis(Widget):
    """Large Digits for a wall screen: GPUs ok/total, max temperature, requests/s, rejection %."""

    DEFAULT_CSS = """
    WallKpis { height: auto; layout: horizontal; }
    WallKpis > Vertical { width: 1fr; height: auto; border: heavy $primary; padding: 0 1; }
    WallKpis Label { color: $text; text-style: bold; }
    WallKpis Digits { width: auto; }
    WallKpis .bad { color: red; }
    """

    kpis: reactive[Kpis] = reactive(Kpis)
    """The numbers shown; set by the app after each reading."""

    FIELDS = (("ok-gpus", "GPUs OK / TOTAL"), ("temp", "MAX TEMP °C"), ("rps", "REQUESTS/S"), ("reject", "REJECTED %"))

    SERVING_FIELDS = (("e2e", "WORST E2E P99 S"), ("queue", "QUEUED REQUESTS"))

    def __init__(self, thresholds: Thresholds, *, serving: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.thresholds = thresholds
        self.fields = self.FIELDS + (self.SERVING_FIELDS if serving else ())  # inference servers watched

    def compose(self) -> ComposeResult:
        for key, label in self.fields:
            with Vertical():
                yield Label(label)
                yield WallDigits("-", id=f"wall-{key}")  # "88/128" with a slash, never what reads as a comma

    def watch_kpis(self, k: Kpis) -> None:
        if not self.is_mounted:
            return
        th = self.thresholds
        values = {
            "ok-gpus": (f"{k.healthy}/{k.gpus}", k.healthy < k.gpus),
            "temp": (_num(k.temp_max_c), k.temp_max_c is not None and k.temp_max_c >= th.temp_hot_c),
            "rps": (_num(k.rps), False),
            "reject": (_num(k.reject_pct, "{:.1f}"), k.reject_pct is not None and k.reject_pct >= th.reject_spike_pct),
            "e2e": ("-" if k.e2e_p99_worst_s is None else _num(k.e2e_p99_worst_s, "{:.1f}"),
                    k.e2e_p99_worst_s is None or k.e2e_p99_worst_s > th.e2e_p99_slo_s),
            "queue": (_num(k.serving_queue), False),
        }
        for key, (text, bad) in values.items():
            if key not in dict(self.fields):
                continue
            d = self.query_one(f"#wall-{key}", Digits)
            d.update(text)
            d.set_class(bad, "bad")

    def on_mount(self) -> None:
        self.watch_kpis(self.kpis)


__all__ = ["KpiStrip", "WallKpis", "kpi_text"]
