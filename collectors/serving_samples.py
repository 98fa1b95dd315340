"""Immutable, timestamped readings of inference servers: what the serving collectors return.

A figure that is None is never a zero: its reason is in the reading's `missing` (field name ->
a Missing value), e.g. `e2e_p99_s` None with `missing["e2e_p99_s"] == Missing.NO_REQUESTS`.
Rates are per second and quantiles in seconds over the reading's `window_s` (about the last minute:
two scrapes' difference, or Prometheus' `rate(...[1m])`). Timestamps are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

ReplicaStatus = Literal["up", "down", "not_serving"]


class Missing(StrEnum):
    """Why a figure is absent."""

    NOT_EXPORTED = "not exported by this server"
    NO_REQUESTS = "no requests"  # a histogram that saw no request in the window: not 0 s
    WARMING_UP = "one scrape so far"  # rates and quantiles need two
    RESET = "counter reset (server restarted)"  # a counter went down: never a negative rate
    MEAN_ONLY = "this server exports means, not quantiles"  # Triton without summaries
    DOWN = "no replica up"
    # what a page said is impossible: the figure is not shown, and the replica's warnings name the family
    NOT_FINITE = "not a finite number"  # NaN or +-Inf
    OUT_OF_RANGE = "out of range"  # a negative count or gauge, a KV-cache fraction above 1


def bad_value(value: float) -> Missing:
    """Why a value no server can mean makes no figure: NaN and +-Inf are NOT_FINITE, the rest OUT_OF_RANGE."""
    return Missing.NOT_FINITE if value - value != 0.0 else Missing.OUT_OF_RANGE


# The per-window figures of a model (on one replica, or summed over its replicas); the rest are gauges.
RATE_FIELDS = ("requests_per_s", "failures_per_s", "preemptions_per_s")
QUANTILE_FIELDS = ("ttft_p50_s", "ttft_p99_s", "e2e_p50_s", "e2e_p99_s", "queue_p50_s", "queue_p99_s")
MEAN_FIELDS = ("queue_mean_s", "request_mean_s")
GAUGE_FIELDS = ("waiting", "running", "kv_cache_pct")  # read from the newest page, not over a window


@dataclass(frozen=True, slots=True)
class ServingFigures:
    """One model's figures on one replica (ReplicaSample.models) or over all its replicas (ModelServing)."""

    model: str
    waiting: float | None = None  # requests queued now
    running: float | None = None  # requests being served now
    kv_cache_pct: float | None = None  # KV-cache use now, 0..100 (over replicas: the mean)
    requests_per_s: float | None = None  # finished requests, failures included
    failures_per_s: float | None = None
    failures_by_reason_per_s: Mapping[str, float] = field(default_factory=dict)
    preemptions_per_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    e2e_p50_s: float | None = None
    e2e_p99_s: float | None = None
    queue_p50_s: float | None = None
    queue_p99_s: float | None = None
    queue_mean_s: float | None = None  # Triton: from its cumulative microsecond counters, a mean
    request_mean_s: float | None = None
    window_s: float | None = None  # the span the rates and quantiles cover
    missing: Mapping[str, Missing] = field(default_factory=dict)  # field -> why it is None


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One server's scrape. A down replica keeps its last-known figures, with their `taken_at`."""

    url: str  # never holds credentials
    status: ReplicaStatus  # not_serving: it answers, but with no known family (NOT_A_SERVER in `error`)
    error: str | None
    latency_ms: float | None
    taken_at: float  # when these figures were read (the last good scrape for a down replica)
    checked_at: float  # when the replica was last tried
    kind: str | None = None  # vllm, nim, sglang, tgi, triton
    variant: str = ""  # vLLM: v0, v1 or v0+v1
    models: tuple[ServingFigures, ...] = ()
    warnings: tuple[str, ...] = ()
    resets: int = 0  # counter resets (restarts) seen since the collector started
    last_reset_at: float | None = None

    def age_s(self, now: float) -> float:
        """Seconds since these figures were read (a down replica's grow: the guard's staleness bound)."""
        return max(0.0, now - self.taken_at)


@dataclass(frozen=True, slots=True)
class ModelServing:
    """One model over every replica that serves it. `figures` sums queues and rates, averages KV use
    (`kv_cache_max_pct` is the fullest replica's) and takes quantiles of the replicas' merged buckets,
    as PromQL's `histogram_quantile(q, sum by (le, model_name) (rate(...)))` does."""

    model: str
    kinds: tuple[str, ...]
    replicas_up: int
    replicas_total: int
    figures: ServingFigures
    kv_cache_max_pct: float | None = None
    queue_per_replica: float | None = None  # waiting / replicas up


@dataclass(frozen=True, slots=True)
class ServingSummary:
    """A large deployment read through Prometheus' aggregates: replicas counted there, while the
    sample's `replicas` hold only the worst ones (window mode, collectors.serving_prometheus)."""

    replicas: int
    replicas_up: int
    shown_replicas: int


@dataclass(frozen=True, slots=True)
class ServingSample:
    """Every configured inference server after one sweep, and the per-model view."""

    taken_at: float
    replicas: tuple[ReplicaSample, ...] = ()
    models: tuple[ModelServing, ...] = ()
    source: Literal["scrape", "prometheus"] = "scrape"
    summary: ServingSummary | None = None

    @property
    def unassigned(self) -> tuple[ReplicaSample, ...]:
        """Replicas with no known model (never read, or not an inference server): in no model's total."""
        return tuple(r for r in self.replicas if not r.models)

    def worst(self) -> ModelServing | None:
        """The model with the highest e2e p99 (then the deepest queue per replica): what a KPI shows."""
        def key(m: ModelServing) -> tuple[float, float]:
            return (m.figures.e2e_p99_s if m.figures.e2e_p99_s is not None else -1.0,
                    m.queue_per_replica if m.queue_per_replica is not None else -1.0)
        return max(self.models, key=key, default=None)
