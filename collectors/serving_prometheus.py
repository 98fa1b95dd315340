"""Inference servers through a Prometheus server's HTTP API: the scrape collector's figures, by PromQL.

Replicas are Prometheus' `instance` labels. One instant query asks, for every family of
collectors.serving_parse.FAMILIES (the one table of names), per instance and model: gauges as they are,
counters as `rate(...[1m])`, histograms as `sum by (le, ...) (rate(..._bucket[1m]))`. Each term carries
its family's name in FIG_LABEL and the model (whatever the server calls its model label) in MODEL_LABEL.
The answers fill the parser's own accumulators, and the rates go through the same functions as two
scrapes' differences (collectors.serving_window), so a quantile is Prometheus' histogram_quantile
rule applied once, in one place, whichever mode read it.

Above `above_replicas` replicas (a few hundred), a refresh asks for the same terms summed by model
(the per-model figures, replicas up per model) and for the worst replicas only: the `worst` highest
e2e p99 (`histogram_quantile(0.99, sum by (le, instance) (rate(...)))`) and the `worst` deepest queues,
whose series are then read in full, as collectors.prometheus_window does for GPUs. ServingSample.summary
says how many replicas there are and how many are shown.

A target that is down (`up == 0`) in a job that serves inference keeps its last-known figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from collectors.nodes import redact_url
from collectors.prometheus import DOWN, _regex_of, instant_query, make_client
from collectors.scrape import scrape_error
from collectors.serving import model_view
from collectors.serving_parse import (
    FAMILIES,
    HIST_ROLES,
    NO_MODEL,
    Accumulator,
    Family,
    ModelPage,
    ServerKind,
    add_series,
    model_page,
)
from collectors.serving_samples import (
    Missing,
    ModelServing,
    ReplicaSample,
    ServingSample,
    ServingSummary,
)
from collectors.serving_window import Rates, figures, rates_between
from quotas.safe import safe_name

FIG_LABEL = "surgewatch_fig"
MODEL_LABEL = "surgewatch_model"
_RATE_ROLES = ("done", "failed", "preempt", "queue_us", "request_us")
_QUEUE_ROLES = ("waiting",)


def _with_model(fam: Family, expr: str) -> str:
    if fam.model_label:
        return f'label_replace({expr}, "{MODEL_LABEL}", "$1", "{fam.model_label}", "(.*)")'
    return f'label_replace({expr}, "{MODEL_LABEL}", "{NO_MODEL}", "", "")'


def _named(tag: str, expr: str) -> str:
    return f'label_replace({expr}, "{FIG_LABEL}", "{tag}", "", "")'


def figures_query(by: str, window: str = "1m", where: str = "", kv_max_too: bool = False) -> str:
    """Every family's term, summed `by` ("instance" or ""), the model always kept (see the module's docstring).
    `where`: a label matcher such as `instance=~"a|b"`; `kv_max_too`: KV use averaged, and its max as `NAME|max`."""
    keys = ", ".join(k for k in (by, MODEL_LABEL) if k)
    sel = f"{{{where}}}" if where else ""
    terms = []
    for name, fam in FAMILIES.items():
        if fam.role in HIST_ROLES:
            inner = _with_model(fam, f"rate({name}_bucket{sel}[{window}])")
            terms.append(_named(name, f"sum by ({keys}, le) ({inner})"))
        elif fam.role in _RATE_ROLES:
            extra = f", {fam.reason_label}" if fam.reason_label else ""
            terms.append(_named(name, f"sum by ({keys}{extra}) ({_with_model(fam, f'rate({name}{sel}[{window}])')})"))
        elif fam.role in ("kv", "kv_v0"):
            terms.append(_named(name, f"{'avg' if kv_max_too else 'max'} by ({keys}) ({_with_model(fam, name + sel)})"))
            if kv_max_too:
                terms.append(_named(f"{name}|max", f"max by ({keys}) ({_with_model(fam, name + sel)})"))
        else:
            terms.append(_named(name, f"sum by ({keys}) ({_with_model(fam, name + sel)})"))
    return " or ".join(terms)


def _of_role(roles: Iterable[str]) -> list[tuple[str, Family]]:
    return [(n, f) for n, f in FAMILIES.items() if f.role in roles]


def replicas_query() -> str:
    """Replicas (instances with a queue gauge) per model, and the model's name."""
    inner = " or ".join(f"group by (instance, {MODEL_LABEL}) ({_with_model(f, n)})" for n, f in _of_role(_QUEUE_ROLES))
    return f"count by ({MODEL_LABEL}) ({inner})"


def worst_query(k: int, window: str = "1m") -> str:
    """The k replicas with the highest e2e p99, or the deepest queue, over every kind."""
    p99 = " or ".join(
        f"max by (instance) (histogram_quantile(0.99, sum by (le, instance) (rate({n}_bucket[{window}]))))"
        for n, _ in _of_role(("e2e",)))
    queue = " or ".join(f"sum by (instance) ({n})" for n, _ in _of_role(_QUEUE_ROLES))
    return f"topk({k}, {p99}) or topk({k}, {queue})"


@dataclass(frozen=True, slots=True)
class _Read:
    kinds: dict[tuple[str, str], ServerKind]  # (instance or "", model) -> kind
    accs: dict[tuple[str, str], Accumulator]
    rated: set[tuple[str, str]]  # keys with at least one rate (a series needs two samples in the window)
    kv_max: dict[str, float]


def read_figures(result: Any) -> _Read:
    """figures_query's answer -> accumulators per (instance, model), as a page's lines would fill them."""
    out = _Read({}, {}, set(), {})
    for item in result if isinstance(result, list) else ():
        try:
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            value = float(item["value"][1])
            tag, _, agg = labels[FIG_LABEL].partition("|")
            fam = FAMILIES[tag]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            continue
        if math.isnan(value):
            continue
        key = (labels.get("instance", ""), labels.get(MODEL_LABEL) or NO_MODEL)
        if agg == "max":
            if 0.0 <= value <= 1.0:  # a fraction of the cache: anything else is no reading (serving_parse says why)
                out.kv_max[key[1]] = max(out.kv_max.get(key[1], value), value)
            continue
        out.kinds.setdefault(key, fam.kind)
        part = "bucket" if fam.role in HIST_ROLES else ""
        labels.pop(MODEL_LABEL, None)
        add_series(out.accs.setdefault(key, Accumulator()), fam, part, labels, value)
        if fam.role in HIST_ROLES or fam.role in _RATE_ROLES:
            out.rated.add(key)
    return out


def page_and_rates(read: _Read, key: tuple[str, str], window_s: float) -> tuple[ModelPage, Rates | None]:
    """A (instance, model)'s gauges as a ModelPage, and its per-second rates (None: none in the window yet)."""
    page = model_page(read.kinds[key], key[1], read.accs[key])
    if key not in read.rated:
        return page, None
    return page, replace(rates_between(ModelPage(key[1]), page, 1.0), window_s=window_s)


class PrometheusServingCollector:
    """Every inference server a Prometheus server scrapes; see the module's docstring."""

    name = "serving"

    def __init__(self, base_url: str, *, timeout_s: float = 2.0, window: str = "1m", window_s: float = 60.0,
                 above_replicas: int = 256, worst: int = 8, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self.shown = redact_url(self.base_url) or self.base_url
        self.timeout_s = timeout_s
        self.window, self.window_s = window, window_s
        self.above_replicas, self.worst = above_replicas, worst
        self._own_client = client is None
        self._client = client or make_client(timeout_s, 4)
        self._clock = clock
        self._known: dict[str, ReplicaSample] = {}
        self._jobs: set[str] = set()

    async def _query(self, q: str) -> Any:
        return await instant_query(self._client, self.base_url, q)

    async def poll(self) -> ServingSample:
        try:
            return await self._poll()
        except Exception as e:
            raise RuntimeError(f"prometheus {self.shown}: {scrape_error(e, self.timeout_s)}") from e

    async def _poll(self) -> ServingSample:
        t0 = time.perf_counter()
        counts = await self._query(replicas_query())
        up_models: dict[str, int] = {}
        for item in counts if isinstance(counts, list) else ():
            try:
                up_models[str(item["metric"].get(MODEL_LABEL) or NO_MODEL)] = int(float(item["value"][1]))
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                continue
        total = sum(up_models.values())
        where, model_read = "", None
        if total > self.above_replicas:
            worst, model_res = await self._query(worst_query(self.worst, self.window)), await self._query(
                figures_query("", self.window, kv_max_too=True))
            shown = sorted({str(i["metric"]["instance"]) for i in worst if "instance" in i.get("metric", {})})
            where = f'instance=~"{_regex_of(shown)}"' if shown else 'instance="-"'
            model_read = read_figures(model_res)
        res = await self._query(figures_query("instance", self.window, where))
        up_res = await self._query("up")
        latency_ms = round((time.perf_counter() - t0) * 1000, 2)
        read = read_figures(res)
        now = self._clock()
        jobs = {str(i["metric"].get("instance")): (str(i["metric"].get("job", "")), i["value"][1] == "1")
                for i in up_res if isinstance(i, dict) and "metric" in i}
        replicas: dict[str, dict[str, tuple[ModelPage, Rates | None]]] = {}
        for key in read.accs:
            if not jobs.get(key[0], ("", True))[1]:
                continue  # down: its rates still cover the minute before; it keeps its last-known figures
            replicas.setdefault(key[0], {})[key[1]] = page_and_rates(read, key, self.window_s)
        for inst, by_model in replicas.items():
            self._jobs.add(jobs.get(inst, ("", True))[0])
            kind = read.kinds[(inst, next(iter(by_model)))]
            figs = tuple(figures(m, [p], [r] if r else [], Missing.WARMING_UP, mean_only=kind == "triton")
                         for m, (p, r) in sorted(by_model.items()))
            self._known[inst] = ReplicaSample(url=inst, status="up", error=None, latency_ms=latency_ms, taken_at=now,
                                              checked_at=now, kind=kind, models=figs)
        for inst, (job, is_up) in jobs.items():
            if not is_up and job in self._jobs:
                prev = self._known.get(inst)
                self._known[inst] = replace(prev, status="down", error=DOWN, latency_ms=None, checked_at=now) \
                    if prev is not None else ReplicaSample(url=inst, status="down", error=DOWN, latency_ms=None,
                                                           taken_at=now, checked_at=now)
        if model_read is not None:
            shown_now = set(replicas) | {i for i, (_, ok) in jobs.items() if not ok}
            self._known = {i: r for i, r in self._known.items() if i in shown_now}
        listed = tuple(self._known[i] for i in sorted(self._known))
        if model_read is None:
            view = [(r, {m: replicas[r.url][m][0] for m in replicas.get(r.url, {})},
                     {m: x for m, (_, x) in replicas.get(r.url, {}).items() if x is not None}, False) for r in listed]
            return ServingSample(taken_at=now, replicas=listed, models=model_view(view), source="prometheus")
        models = self._models(model_read, up_models, listed)
        down = sum(1 for r in listed if r.status == "down")
        summary = ServingSummary(replicas=total + down, replicas_up=total, shown_replicas=len(replicas))
        return ServingSample(taken_at=now, replicas=listed, models=models, source="prometheus", summary=summary)

    def _models(self, read: _Read, up_models: dict[str, int], listed: tuple[ReplicaSample, ...]
                ) -> tuple[ModelServing, ...]:
        out = []
        for key in sorted(read.accs):
            name = key[1]
            page, rates = page_and_rates(read, key, self.window_s)
            kind = read.kinds[key]
            f = figures(name, [page], [rates] if rates else [], Missing.WARMING_UP, mean_only=kind == "triton")
            up = up_models.get(name, 0)
            down = sum(1 for r in listed if r.status == "down" and any(m.model == name for m in r.models))
            out.append(ModelServing(
                model=safe_name(name), kinds=(kind,), replicas_up=up, replicas_total=up + down, figures=f,
                kv_cache_max_pct=None if name not in read.kv_max else read.kv_max[name] * 100.0,
                queue_per_replica=f.waiting / up if up and f.waiting is not None else None,
            ))
        return tuple(out)

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()
