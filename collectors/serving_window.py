"""From two scrapes of a server to its rates and quantiles, and from replicas to a model.

- A rate is a counter's difference over the time between the two scrapes. A counter that went down
  is a restart (`went_down`): the collector starts the window again, never a negative rate.
- A quantile is Prometheus' `histogram_quantile` rule (`bucket_quantile`) applied to the buckets'
  differences: linear within the bucket the rank falls in, the highest finite bound when it falls in
  +Inf. A histogram that saw no request in the window is Missing.NO_REQUESTS, not 0 s.
- A model over its replicas adds the replicas' per-second rates and buckets bound by bound (as
  `sum by (le, model_name) (rate(...))` does), so the model's quantiles weigh each replica by its traffic.
  Triton's means divide its microsecond counters by the requests of the replicas that count them only.
- A figure that a page's impossible value spoils (collectors.serving_parse: ModelPage.bad) is None with
  that reason, over the whole window: a bad value on the window's first page spoils its rates too, and on
  any replica's page the model's figure (a sum with an unknown term is unknown, never a smaller sum).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from collectors.serving_parse import FAILED_REASONS, HIST_ROLES, NO_PROBLEM, Histogram, ModelPage, ServerPage
from collectors.serving_samples import (
    GAUGE_FIELDS,
    MEAN_FIELDS,
    QUANTILE_FIELDS,
    RATE_FIELDS,
    Missing,
    ServingFigures,
)

Buckets = tuple[tuple[float, ...], tuple[float, ...]]  # ascending bounds (last +Inf), cumulative values


def bucket_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """Prometheus' histogram_quantile on one histogram; None when it holds no observation (or is unusable)."""
    if len(bounds) < 2 or bounds[-1] != math.inf or not 0 <= q <= 1:
        return None
    counts = list(accumulate(cumulative, max))  # Prometheus mends non-monotonic buckets the same way
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    b = bisect_left(counts, rank)  # the first bucket whose count reaches the rank (counts never fall)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count) if count > 0 else end


def _counters(m: ModelPage) -> Iterable[tuple[str, float]]:
    for k, v in (m.done or {}).items():
        yield f"done:{k}", v
    for k, v in (m.failed or {}).items():
        yield f"failed:{k}", v
    for k, opt in (("preempt", m.preemptions), ("queue_us", m.queue_us), ("request_us", m.request_us)):
        if opt is not None:
            yield k, opt
    for role in HIST_ROLES:
        h: Histogram | None = getattr(m, role)
        if h is not None:  # a restart zeroes every bucket: the count (and +Inf) going down shows it
            yield f"{role}:count", h.count
            yield f"{role}:inf", h.cumulative[-1]


Counters = dict[str, dict[str, float]]  # model -> counter (and bucket) -> cumulative value


def went_down(before: Counters, new: ServerPage) -> tuple[bool, Counters]:
    """Whether any counter of a model on both pages is lower on `new` (the server restarted in between),
    and `new`'s counters, to compare the next page with (each page's counters are listed once)."""
    now = {m.model: dict(_counters(m)) for m in new.models}
    for model, values in now.items():
        prev = before.get(model)
        if prev and any(v < prev[k] for k, v in values.items() if k in prev):
            return True, now
    return False, now


@dataclass(frozen=True, slots=True)
class Rates:
    """A model's per-second figures over a window on one replica (or added over several); None: not exported."""

    window_s: float
    requests: float | None = None
    failures: Mapping[str, float] | None = None
    preemptions: float | None = None
    buckets: Mapping[str, Buckets] = field(default_factory=dict)  # histogram role -> per-second buckets
    queue_us: float | None = None
    request_us: float | None = None
    # window figures spoilt by a value on either page (ModelPage.bad)
    bad: Mapping[str, Missing] = field(default_factory=lambda: NO_PROBLEM)


def _total(by: Mapping[str, float] | None) -> float | None:
    return None if by is None else float(sum(by.values()))


def _d(new: float | None, old: float | None, dt: float) -> float | None:
    # a counter absent before counted from 0: servers create a labelled counter at its first increment
    return None if new is None else max(0.0, new - (old or 0.0)) / dt


def rates_between(old: ModelPage, new: ModelPage, dt: float) -> Rates:
    """Per-second differences of one model's counters between two scrapes `dt` seconds apart."""
    done_new, done_old = new.done or {}, old.done or {}
    failures: dict[str, float] | None = None
    if new.counts_failures or new.failed is not None:
        failures = {}
        sources = ((done_new, done_old, FAILED_REASONS), (new.failed or {}, old.failed or {}, None))
        for src_new, src_old, pick in sources:
            for reason, v in src_new.items():
                if pick is None or reason in pick:
                    failures[reason or "failed"] = failures.get(reason or "failed", 0.0) + (
                        max(0.0, v - src_old.get(reason, 0.0)) / dt)
    finished = [x for x in (_d(_total(new.done), _total(old.done), dt), _d(_total(new.failed), _total(old.failed), dt))
                if x is not None]
    buckets: dict[str, Buckets] = {}
    for role in HIST_ROLES:
        h_new, h_old = getattr(new, role), getattr(old, role)
        if h_new is None:
            continue
        if h_old is not None and h_old.bounds == h_new.bounds:  # the usual case: the same buckets
            olds: Iterable[float] = h_old.cumulative
        else:
            before = dict(zip(h_old.bounds, h_old.cumulative, strict=True)) if h_old is not None else {}
            olds = [before.get(b, 0.0) for b in h_new.bounds]
        buckets[role] = (h_new.bounds, tuple(max(0.0, c - o) / dt for c, o in zip(h_new.cumulative, olds, strict=True)))
    bad = NO_PROBLEM
    if old.bad or new.bad:  # the old page's too: a counter it lacked would count from 0 (see _d)
        bad = {k: v for k, v in (*old.bad.items(), *new.bad.items()) if k not in GAUGE_FIELDS}
    return Rates(
        window_s=dt, requests=sum(finished) if finished else None, failures=failures,
        preemptions=_d(new.preemptions, old.preemptions, dt), buckets=buckets,
        queue_us=_d(new.queue_us, old.queue_us, dt), request_us=_d(new.request_us, old.request_us, dt), bad=bad,
    )


def _add_opt(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return sum(got) if got else None


def sum_rates(items: Sequence[Rates]) -> Rates:
    """Several replicas' rates of one model, added (buckets bound by bound, as PromQL's `sum by (le)`)."""
    if len(items) == 1:
        return items[0]
    failures: dict[str, float] | None = None
    for r in items:
        if r.failures is not None:
            failures = failures or {}
            for k, v in r.failures.items():
                failures[k] = failures.get(k, 0.0) + v
    buckets: dict[str, Buckets] = {}
    for role in HIST_ROLES:
        acc: dict[float, float] = {}
        for r in items:
            if role in r.buckets:
                for b, c in zip(*r.buckets[role], strict=True):
                    acc[b] = acc.get(b, 0.0) + c
        if acc:
            bounds = tuple(sorted(acc))
            buckets[role] = (bounds, tuple(acc[b] for b in bounds))
    return Rates(
        window_s=max(r.window_s for r in items), requests=_add_opt(r.requests for r in items), failures=failures,
        preemptions=_add_opt(r.preemptions for r in items), buckets=buckets,
        queue_us=_add_opt(r.queue_us for r in items), request_us=_add_opt(r.request_us for r in items),
        bad={k: v for r in items for k, v in r.bad.items()},
    )


def _gauge(pages: Sequence[ModelPage], get: Callable[[ModelPage], float | None],
           how: Callable[[list[float]], float]) -> float | None:
    vals = [v for v in (get(p) for p in pages) if v is not None]
    return how(vals) if vals else None


def _mean(vals: list[float]) -> float:
    return sum(vals) / len(vals)


def figures(model: str, pages: Sequence[ModelPage], rates: Sequence[Rates], no_rates: Missing | None,
            mean_only: bool = False) -> ServingFigures:
    """A model's figures from its latest pages (gauges) and its rates (one replica's, or several replicas').

    `no_rates`: why there are no rates (one scrape so far, a reset) when `rates` is empty; `mean_only`:
    the server exports cumulative durations (Triton), said as means, not quantiles."""
    missing: dict[str, Missing] = {}
    out: dict[str, object] = {
        "waiting": _gauge(pages, lambda p: p.waiting, sum),
        "running": _gauge(pages, lambda p: p.running, sum),
        "kv_cache_pct": _gauge(pages, lambda p: None if p.kv_frac is None else p.kv_frac * 100.0, _mean),
    }
    for k in GAUGE_FIELDS:
        if out[k] is None:
            missing[k] = Missing.NOT_EXPORTED
    if not rates:
        why = no_rates or Missing.WARMING_UP
        for k in RATE_FIELDS + QUANTILE_FIELDS + MEAN_FIELDS:
            missing[k] = Missing.MEAN_ONLY if mean_only and k in QUANTILE_FIELDS else why
        return _spoilt(model, out, missing, pages, rates)
    r = sum_rates(rates)
    out["window_s"] = round(r.window_s, 3)
    out["requests_per_s"] = r.requests
    out["failures_per_s"] = _total(r.failures)
    out["failures_by_reason_per_s"] = dict(r.failures or {})
    out["preemptions_per_s"] = r.preemptions
    for role in HIST_ROLES:
        for q, name in ((0.5, f"{role}_p50_s"), (0.99, f"{role}_p99_s")):
            got = r.buckets.get(role)
            out[name] = None if got is None else bucket_quantile(q, *got)
            if out[name] is None:
                missing[name] = (Missing.MEAN_ONLY if mean_only else Missing.NOT_EXPORTED) if got is None \
                    else Missing.NO_REQUESTS
    for name, us in (("queue_mean_s", "queue_us"), ("request_mean_s", "request_us")):
        # None in the sum: no replica counts these microseconds (all but Triton), the mean is not worked out
        mean = Missing.NOT_EXPORTED if getattr(r, us) is None else _mean_s(rates, us)
        if isinstance(mean, Missing):
            missing[name] = mean
        else:
            out[name] = mean
    for k in RATE_FIELDS:
        if out.get(k) is None:
            missing[k] = Missing.NOT_EXPORTED
    return _spoilt(model, out, missing, pages, rates)


def _mean_s(rates: Sequence[Rates], us: str) -> float | Missing:
    """Microseconds per request, in seconds, over the replicas that count those microseconds (Triton's): another
    kind serving the same model (vLLM, which has no such counter) must not dilute it."""
    num = den = 0.0
    counted = False
    for x in rates:
        got = getattr(x, us)
        if got is not None and x.requests is not None:
            num, den, counted = num + got, den + x.requests, True
    if not counted:
        return Missing.NOT_EXPORTED
    if den <= 0:
        return Missing.NO_REQUESTS
    mean = num / den / 1e6
    # a page's values are bounded (serving_parse.MAX_VALUE) but a fraction of a request is not
    return mean if math.isfinite(mean) else Missing.NOT_FINITE


def _spoilt(model: str, out: dict[str, object], missing: dict[str, Missing], pages: Sequence[ModelPage],
            rates: Sequence[Rates]) -> ServingFigures:
    """The figures, but those an impossible value spoilt on a replica's newest page or in a window: None, with why."""
    spoilt = [p.bad for p in pages if p.bad]
    spoilt += [x.bad for x in rates if x.bad]
    for bad in spoilt:  # as a rule none
        for k, why in bad.items():
            out[k], missing[k] = None, why
            if k == "failures_per_s":
                out["failures_by_reason_per_s"] = {}
    return ServingFigures(model=model, missing=missing, **out)  # type: ignore[arg-type]
