"""Pure view models: what the widgets show, computed from the collectors' readings.

No Textual here, so the rules (what is stale, what is hot, what counts as throttled) are unit-tested
without an app, and widgets stay render-only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from collectors.reasons import BENIGN_THROTTLE
from collectors.runner import Reading
from collectors.samples import (
    FleetSample,
    FleetSummary,
    GpuSample,
    GpusSample,
    MigInstance,
    NodeSample,
    TrafficSample,
)
from collectors.serving_samples import ServingSample
from surgewatch.thresholds import Thresholds


def format_age(seconds: float | None) -> str:
    """'4s', '2m05s', '3h10m': short enough for a table cell."""
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def node_label(url: str) -> str:
    """A node's short name: `host:port` of its URL, or `local`."""
    if url == "local":
        return "local"
    try:
        parts = urlsplit(url)
    except ValueError:
        return url[:24]
    return parts.netloc.rsplit("@", 1)[-1] or url[:24]


MIG_MEM_NEAR_PCT = 95.0  # a GPU instance this full of its memory is flagged (its jobs fail at 100 %)
NO_GPU_SERIES = "up, no GPU series"


def short_model(name: str | None) -> str:
    """The model without the vendor prefix: "Tesla T4" -> "T4", "NVIDIA RTX 2000 Ada Generation" ->
    "RTX 2000 Ada", "GRID A100-8C" kept (GRID says it is a vGPU)."""
    s = (name or "").strip()
    for prefix in ("NVIDIA ", "Tesla "):
        if s.startswith(prefix):
            s = s[len(prefix):]
    return s.removesuffix(" Generation")


def mig_summary(mig: tuple[MigInstance, ...] | None) -> str:
    """`MIG 3x2g.20gb`, or `MIG 1x3g.40gb+2x2g.20gb` for mixed profiles; "" for a GPU not in MIG mode."""
    if mig is None:
        return ""
    if not mig:
        return "MIG, no instances"  # MIG enabled before any GPU instance was created
    counts: dict[str, int] = {}
    for m in mig:
        counts[m.profile or "?"] = counts.get(m.profile or "?", 0) + 1
    return "MIG " + "+".join(f"{n}\u00d7{p}" for p, n in counts.items())


def mem_pct(used: float | None, total: float | None) -> float | None:
    return None if used is None or not total else 100.0 * used / total


def near_full(m: MigInstance) -> bool:
    pct = mem_pct(m.mem_used_mib, m.mem_total_mib)
    return pct is not None and pct >= MIG_MEM_NEAR_PCT


def throttled_reasons(reasons: tuple[str, ...]) -> bool:
    """Whether these clock-event reasons make a GPU throttled (any reason that is not benign)."""
    return any(r not in BENIGN_THROTTLE for r in reasons)


def is_throttled(gpu: GpuSample) -> bool:
    # most GPUs most of the time have no reason at all: skip the generator (called per GPU per second)
    return bool(gpu.throttle) and throttled_reasons(gpu.throttle)


@dataclass(frozen=True, slots=True)
class GpuRow:
    """One GPU as the table and the heat map show it."""

    key: str  # stable row key: node URL + index
    node: str  # short label
    gpu: GpuSample
    stale: bool  # its source is failing: values are last-known
    age_s: float | None  # age of the values when stale, else None
    status: str  # ok, hot, throttled, mig-full, xid, lost, down, stale; no-gpus for a node row
    placeholder: bool = False  # a node with no GPU to show (up with no GPU series, or down and never seen)
    note: str = ""  # what a placeholder row says ("up, no GPU series", the node's error)


def gpu_status(gpu: GpuSample, stale: bool, node_down: bool, th: Thresholds) -> str:
    """The one word the status column shows, worst first."""
    if gpu.status == "lost":
        return "lost"
    if node_down:
        return "down"
    if stale or gpu.status == "stale":
        return "stale"
    if gpu.xid is not None:
        return "xid"
    if gpu.mig is not None and any(near_full(m) for m in gpu.mig):
        return "mig-full"
    if is_throttled(gpu):
        return "throttled"
    if gpu.temp_c is not None and gpu.temp_c >= th.temp_hot_c:
        return "hot"
    return "ok"


# Worst first (the console's default GPU order, the summary's too); a status not listed (ok) sorts last.
STATUS_RANK = {"lost": 0, "down": 1, "stale": 2, "xid": 3, "throttled": 4, "hot": 5, "mig-full": 6, "no-gpus": 7}


def severity_key(row: GpuRow) -> tuple[int, float, str, int, str]:
    """The one GPU order, worst first: by status severity, then hotter first, by the whole degrees shown (a
    tenth of a degree does not move rows under the operator's eyes, nor re-sort a thousand of them). The GPUs
    of a down or stale node keep together in index order (their temperatures are last-known, not news)."""
    rank = STATUS_RANK.get(row.status, len(STATUS_RANK))
    grouped = row.placeholder or row.status in ("down", "stale")
    return (rank, 0.0 if grouped else -float(round(row.gpu.temp_c or 0.0)), row.node, row.gpu.index, row.key)


class GpuRowCache:
    """Reuses a node's GpuRow objects while its GPU samples, staleness and shown age are unchanged.

    A node scraped every 5 s is re-reported every second with the same GPU samples, and a re-scraped
    page that did not change gives the same GPU samples again (collectors.fleet); reusing its rows
    lets the table, the heat map and the event rules skip it with an identity check instead of
    comparing 10 cells per GPU."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[object, bool, int | None, bool, tuple[GpuRow, ...]]] = {}

    def rows(
        self,
        key: str,
        gpus: tuple[GpuSample, ...],
        label: str,
        stale: bool,
        age: float | None,
        down: bool,
        th: Thresholds,
    ) -> tuple[GpuRow, ...]:
        shown_age = int(age) if age is not None else None  # ages are shown in whole seconds
        hit = self._rows.get(key)
        if hit is not None and hit[0] is gpus and hit[1] == stale and hit[2] == shown_age and hit[3] == down:
            return hit[4]
        rows = tuple(
            GpuRow(f"{key}#{g.index}", label, g, stale, shown_age, gpu_status(g, stale, down, th)) for g in gpus
        )
        self._rows[key] = (gpus, stale, shown_age, down, rows)
        return rows


def build_gpu_rows(
    local: Reading[Any] | None, fleet: Reading[Any] | None, now: float, th: Thresholds, cache: GpuRowCache | None = None
) -> tuple[GpuRow, ...]:
    """Local GPUs first, then each node's GPUs in configuration order."""
    cache = cache or GpuRowCache()
    rows: list[GpuRow] = []
    if local is not None and isinstance(local.sample, GpusSample):
        stale = local.error is not None or (now - local.sample.taken_at) > th.stale_after_s
        age = now - local.sample.taken_at if stale else None
        rows.extend(cache.rows("local", local.sample.gpus, "local", stale, age, False, th))
    if fleet is not None and isinstance(fleet.sample, FleetSample):
        source_failing = fleet.error is not None
        for n in fleet.sample.nodes:
            down = n.status == "down"
            stale = down or source_failing or (now - n.taken_at) > th.stale_after_s
            age = now - n.taken_at if stale else None
            if n.gpus:
                rows.extend(cache.rows(n.url, n.gpus, node_label(n.url), stale, age, down, th))
            else:
                rows.append(node_row(n, source_failing))
    return tuple(rows)


def node_row(n: NodeSample, source_failing: bool) -> GpuRow:
    """The row of a node with no GPU to show: "lost its GPUs" must not look like "not configured"."""
    down = n.status == "down"
    note = f"down: {n.error or 'no answer'}" if down else NO_GPU_SERIES
    return GpuRow(f"{n.url}#node", node_label(n.url), GpuSample(n.url, -1), down or source_failing, None,
                  "down" if down else "no-gpus", placeholder=True, note=note)


@dataclass(frozen=True, slots=True)
class Kpis:
    """The numbers of the KPI strip. None means "no data", shown as n/a."""

    gpus: int = 0
    healthy: int = 0
    gpuless_nodes: int = 0  # nodes that answer (or not) with no GPU to show
    ignored_values: int = 0  # fields ignored across the fleet (out of range, unreadable, duplicated)
    hot: int = 0
    throttled: int = 0
    lost: int = 0
    util_mean_pct: float | None = None
    util_max_pct: float | None = None
    temp_mean_c: float | None = None
    temp_max_c: float | None = None
    power_w: float | None = None
    rps: float | None = None
    reject_pct: float | None = None
    oldest_age_s: float | None = None
    # inference servers (collectors.serving): the worst model's e2e p99 and every model's queue;
    # serving_note names why e2e p99 is None ("no requests", "down", ...; "" when no server is configured)
    e2e_p99_worst_s: float | None = None
    e2e_model: str = ""
    serving_queue: float | None = None
    serving_note: str = ""
    serving_down: int = 0  # replicas not up (down or not serving) of serving_replicas: the queue and p99 leave them out
    serving_replicas: int = 0


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


@dataclass(frozen=True, slots=True)
class FleetFigures:
    """The fleet's figures over a set of live GPUs, with a Prometheus summary merged in: the one
    computation behind the console's KPI strip and what the guard sees. None: no GPU reports it."""

    gpus: int = 0
    hot: int = 0
    throttled: int = 0
    util_n: int = 0
    util_mean_pct: float | None = None
    util_max_pct: float | None = None
    temp_n: int = 0
    temp_mean_c: float | None = None
    temp_max_c: float | None = None
    power_w: float | None = None


def fleet_figures(live: list[GpuSample], hot_c: float, summary: FleetSummary | None = None) -> FleetFigures:
    """Figures of `live` GPUs, merged with `summary` (Prometheus' figures of every GPU that is up, which
    `live` must then leave out: the local GPUs and the last-known GPUs of down nodes are not in it)."""
    utils = [g.util_pct for g in live if g.util_pct is not None]
    temps = [g.temp_c for g in live if g.temp_c is not None]
    powers = [g.power_w for g in live if g.power_w is not None]
    f = FleetFigures(
        gpus=len(live), hot=sum(1 for t in temps if t >= hot_c), throttled=sum(1 for g in live if is_throttled(g)),
        util_n=len(utils), util_mean_pct=_mean(utils), util_max_pct=max(utils) if utils else None,
        temp_n=len(temps), temp_mean_c=_mean(temps), temp_max_c=max(temps) if temps else None,
        power_w=sum(powers) if powers else None,
    )
    return f if summary is None else _with_summary(f, summary)


def compute_kpis(
    rows: tuple[GpuRow, ...], traffic: Reading[Any] | None, readings: list[Reading[Any]], now: float, th: Thresholds
) -> Kpis:
    placeholders = sum(1 for r in rows if r.placeholder)
    if placeholders:
        rows = tuple(r for r in rows if not r.placeholder)
    fleet = next((r.sample for r in readings if isinstance(r.sample, FleetSample)), None)
    ignored = sum(len(n.warnings) for n in fleet.nodes) if fleet is not None else 0
    summary = fleet.summary if fleet is not None else None
    if summary is not None:
        # Prometheus computed the figures of every GPU that is up: the rows of up nodes are a few of
        # those; local GPUs and down nodes' last-known GPUs are not in it
        rows = tuple(r for r in rows if r.key.startswith("local#") or r.status == "down")
    live = [r.gpu for r in rows if r.gpu.status != "lost"]
    f = fleet_figures(live, th.temp_hot_c, summary)
    rps = reject = None
    if traffic is not None and isinstance(traffic.sample, TrafficSample):
        acc = sum(t.accepted_rps for t in traffic.sample.tiers)
        rej = sum(t.rejected_rps for t in traffic.sample.tiers)
        rps = acc + rej
        reject = 100.0 * rej / rps if rps > 0 else 0.0
    ages = [a for a in (r.age_s(now) for r in readings if r.sample is not None) if a is not None]
    serving = next((r.sample for r in readings if isinstance(r.sample, ServingSample)), None)
    return Kpis(
        **serving_kpis(serving),
        gpus=len(rows) + (summary.gpus if summary is not None else 0),
        healthy=sum(1 for r in rows if r.status == "ok") + (summary.healthy if summary is not None else 0),
        gpuless_nodes=placeholders,
        ignored_values=ignored,
        hot=f.hot,
        throttled=f.throttled,
        lost=sum(1 for r in rows if r.status == "lost"),
        util_mean_pct=f.util_mean_pct,
        util_max_pct=f.util_max_pct,
        temp_mean_c=f.temp_mean_c,
        temp_max_c=f.temp_max_c,
        power_w=f.power_w,
        rps=rps,
        reject_pct=reject,
        oldest_age_s=max(ages) if ages else None,
    )


def serving_kpis(sample: ServingSample | None) -> dict[str, Any]:
    """The KPI strip's serving figures: the worst model's e2e p99 (ServingSample.worst) with its name, or why
    there is none, the waiting requests summed over every model (None when no model reports a queue), and how
    many replicas those figures leave out (down or not serving)."""
    if sample is None:
        return {}
    worst = sample.worst()
    queues = [m.figures.waiting for m in sample.models if m.figures.waiting is not None]
    note = ""
    if worst is None:
        note = "no model"
    elif worst.figures.e2e_p99_s is None:
        why = worst.figures.missing.get("e2e_p99_s")
        note = "down" if worst.replicas_up == 0 else str(why) if why is not None else "n/a"
    return {"e2e_p99_worst_s": worst.figures.e2e_p99_s if worst else None, "e2e_model": worst.model if worst else "",
            "serving_queue": sum(queues) if queues else None, "serving_note": note,
            "serving_down": sum(1 for r in sample.replicas if r.status != "up"),
            "serving_replicas": len(sample.replicas)}


def _with_summary(f: FleetFigures, s: FleetSummary) -> FleetFigures:
    """The figures of the GPUs outside a Prometheus summary (local GPUs, down nodes) merged with it."""
    def mean(a: float | None, na: int, b: float | None, nb: int) -> float | None:
        na, nb = (na if a is not None else 0), (nb if b is not None else 0)
        return ((a or 0.0) * na + (b or 0.0) * nb) / (na + nb) if na + nb else None

    def top(a: float | None, b: float | None) -> float | None:
        return max((v for v in (a, b) if v is not None), default=None)

    return replace(
        f, gpus=f.gpus + s.gpus, hot=f.hot + s.hot, throttled=f.throttled + s.throttled,
        util_n=f.util_n + s.util_n, util_mean_pct=mean(f.util_mean_pct, f.util_n, s.util_mean_pct, s.util_n),
        util_max_pct=top(f.util_max_pct, s.util_max_pct),
        temp_n=f.temp_n + s.temp_n, temp_mean_c=mean(f.temp_mean_c, f.temp_n, s.temp_mean_c, s.temp_n),
        temp_max_c=top(f.temp_max_c, s.temp_max_c),
        power_w=None if f.power_w is None and s.power_w is None else (f.power_w or 0.0) + (s.power_w or 0.0),
    )
