"""What the Service panel shows: one row per model (and per replica that serves none), from a ServingSample.

Plain Python, no Textual: each cell is its text and a style (surgewatch.thresholds' colours), so the rules
(which figure breaches which SLO, what an absent figure is called) are tested without an app and the widget
only draws. An absent figure is a named state ("no requests", "reset", "down"), never a zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.runner import Reading
from collectors.serving_parse import NOT_A_SERVER
from collectors.serving_samples import Missing, ModelServing, ReplicaSample, ServingSample
from surgewatch.kpis import format_age, node_label
from surgewatch.thresholds import BAD, DIM, OK, STALE, WARN, Thresholds

COLUMNS = ("model", "repl", "queue", "run", "KV%", "ttft99", "e2e99", "err/s", "state")
# an absent figure's reason in a table cell's few characters (Missing's full words are in snapshot --json)
MISSING_SHORT = {
    Missing.NO_REQUESTS: "no req", Missing.RESET: "reset", Missing.WARMING_UP: "wait",
    Missing.NOT_EXPORTED: "n/e", Missing.MEAN_ONLY: "mean", Missing.DOWN: "down",
    Missing.NOT_FINITE: "bad", Missing.OUT_OF_RANGE: "range",
}
# a server whose page says what cannot be (NaN, a negative queue, a KV percent as a fraction) is broken: not dimmed
BAD_READING = frozenset({Missing.NOT_FINITE, Missing.OUT_OF_RANGE})


def _absent(missing: Missing | None) -> Cell:
    why = missing or Missing.NOT_EXPORTED
    return Cell(MISSING_SHORT.get(why, "n/a"), WARN if why in BAD_READING else DIM)
NO_SERVERS = "no inference server reported yet"


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    style: str = ""


@dataclass(frozen=True, slots=True)
class ServiceRow:
    """One line of the panel: the cells in COLUMNS' order; `state` names what is wrong ("" when live)."""

    key: str
    cells: tuple[Cell, ...]
    state: str = ""
    breach: bool = False  # a latency SLO is breached (what the KPI strip and the incidents pick up)


def seconds_text(s: float) -> str:
    """`850ms`, `4.2s`, `95s`: a latency in at most five characters."""
    if s < 1.0:
        return f"{s * 1000:.0f}ms"
    return f"{s:.1f}s" if s < 10.0 else f"{s:.0f}s"


def _latency(m: ModelServing, name: str, slo_s: float) -> Cell:
    f = m.figures
    v = getattr(f, name)
    if v is None:
        mean = f.request_mean_s if name == "e2e_p99_s" else None
        if f.missing.get(name) == Missing.MEAN_ONLY and mean is not None:
            return Cell(f"~{seconds_text(mean)}", BAD if mean > slo_s else OK)  # Triton: a mean, said as one
        return _absent(f.missing.get(name))
    return Cell(seconds_text(v), BAD if v > slo_s else OK)


def _count(v: float | None, missing: Missing | None, warn: bool = False) -> Cell:
    if v is None:
        return _absent(missing)
    return Cell(f"{v:,.0f}" if v >= 10 or v == int(v) else f"{v:.1f}", WARN if warn else "")


def model_state(m: ModelServing) -> str:
    """What is wrong with a model's figures in a few words ("" when they are live)."""
    if m.replicas_up == 0:
        return "down"
    why = m.figures.missing.get("e2e_p99_s") or m.figures.missing.get("requests_per_s")
    if why in (Missing.RESET, Missing.NO_REQUESTS, Missing.WARMING_UP):
        return str(why)
    if any(w in BAD_READING for w in m.figures.missing.values()):
        return "page says what cannot be"  # the replica's warnings (snapshot --json) name the family
    if m.replicas_up < m.replicas_total:
        return f"{m.replicas_total - m.replicas_up} down"
    return ""


def model_row(m: ModelServing, th: Thresholds) -> ServiceRow:
    f = m.figures
    qpr = m.queue_per_replica
    kv = m.kv_cache_max_pct
    err = f.failures_per_s
    e2e, ttft = _latency(m, "e2e_p99_s", th.e2e_p99_slo_s), _latency(m, "ttft_p99_s", th.ttft_p99_slo_s)
    state = model_state(m)
    cells = (
        Cell(m.model),
        Cell(f"{m.replicas_up}/{m.replicas_total}", OK if m.replicas_up == m.replicas_total else
             (BAD if m.replicas_up == 0 else WARN)),
        _count(f.waiting, f.missing.get("waiting"), qpr is not None and qpr > th.queue_per_replica_warn),
        _count(f.running, f.missing.get("running")),
        Cell(f"{kv:.0f}", WARN if kv > th.kv_cache_warn_pct else OK) if kv is not None else
        _absent(f.missing.get("kv_cache_pct")),
        ttft,
        e2e,
        _absent(f.missing.get("failures_per_s")) if err is None
        else Cell(f"{err:.1f}" if err < 10 else f"{err:.0f}", WARN if err > 0 else OK),
        Cell(state, BAD if state == "down" else WARN if state else ""),
    )
    return ServiceRow(m.model, cells, state, breach=e2e.style == BAD or ttft.style == BAD)


def replica_row(r: ReplicaSample) -> ServiceRow:
    """A replica in no model: never read, or answering without any inference server's families."""
    state = "not an inference server" if r.error == NOT_A_SERVER else f"down: {r.error or 'no answer'}"
    cells = (Cell(node_label(r.url), DIM), Cell("-", DIM), *(Cell("-", DIM) for _ in COLUMNS[2:-1]),
             Cell(state, BAD))
    return ServiceRow(r.url, cells, state.split(":", 1)[0])


def service_rows(reading: Reading[ServingSample] | None, now: float, th: Thresholds) -> tuple[ServiceRow, ...]:
    """The panel's rows: models (worst e2e p99 first is the operator's question, but a fixed name order
    keeps rows from jumping: sorted by name), then replicas with no model. Stale figures are dimmed and
    their row's state says how old they are."""
    sample = reading.sample if reading is not None else None
    if not isinstance(sample, ServingSample):
        return ()
    age = reading.age_s(now) if reading is not None else None
    stale = reading is not None and (reading.error is not None or (age is not None and age > th.stale_after_s))
    rows = [model_row(m, th) for m in sample.models] + [replica_row(r) for r in sample.unassigned]
    if stale:
        shown = f"stale {format_age(age)}" if age is not None else "stale"
        rows = [ServiceRow(r.key, (*(Cell(c.text, STALE) for c in r.cells[:-1]),
                                   Cell(f"{shown}{', ' + r.state if r.state else ''}", WARN)), r.state or shown)
                for r in rows]
    return tuple(rows)


def empty_text(reading: Reading[ServingSample] | None) -> str:
    """What the panel says when it has no row: why there is nothing to show."""
    if reading is None:
        return NO_SERVERS
    if reading.error is not None:
        return f"inference servers failing: {reading.error.message}"
    sample = reading.sample
    if isinstance(sample, ServingSample) and sample.source == "prometheus":
        return "Prometheus scrapes no inference server (no vLLM, SGLang, TGI or Triton families)"
    return NO_SERVERS


__all__ = ["COLUMNS", "Cell", "ServiceRow", "empty_text", "seconds_text", "service_rows"]
