"""Inference servers (vLLM, NIM, SGLang, TGI, Triton): scrape their /metrics like the GPU nodes.

Scraped by the same sweep loop as collectors.fleet's `--nodes` (collectors.sweep): one aiohttp session
keeping one connection alive per server, a concurrency bound, a per-server timeout, a minimum interval
per server, a page identical to the previous one not parsed again, and a sweep that waits at most
`wait_s` (a slow server lands in a later sample). A server that is down keeps its last-known figures
(status "down", with the time they were read); one that answers without any known family is
"not_serving" (NOT_A_SERVER), never zeros.

Rates and quantiles come from the difference between the newest scrape and the newest one at least
`window_s` (60 s) older, or the oldest kept while the window fills (collectors.serving_window). A counter
that goes down is a restart: the window starts again at that scrape, the replica's `resets` grows and
its rates say Missing.RESET until the next scrape.

For the console's plan (tui/sources.py; not wired here), with surgewatch.settings.Settings:

    if settings.prometheus:
        PrometheusServingCollector(settings.prometheus, timeout_s=2.0)   # collectors.serving_prometheus
    elif settings.servers:
        ServingCollector(settings.servers, timeout_s=2.0, min_interval_s=settings.node_interval_s)

Both return a ServingSample (collectors.serving_samples): `replicas` (one per URL, in order; status up,
down or not_serving, `age_s(now)` for staleness), `models` (one ModelServing per model: replicas
up/total, `figures` with `e2e_p99_s`, `queue_per_replica`...), `worst()` for a KPI. Every None figure
says why in its `missing` mapping (collectors.serving_samples.Missing).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from collectors.serving_parse import NOT_A_SERVER, ModelPage, ServerPage, parse_server_page
from collectors.serving_samples import Missing, ModelServing, ReplicaSample, ServingFigures, ServingSample
from collectors.serving_window import Counters, Rates, figures, rates_between, went_down
from collectors.sweep import Sweeper, Target, shown_url

HISTORY_MAX = 256  # scrapes kept per server: a window of 60 s at the 0.25 s floor of min_interval_s


_Replica = Target[ServerPage, ReplicaSample]


@dataclass
class _Window:
    """A replica's scrapes over the window and what they make (the serving collector's own state)."""

    history: deque[tuple[float, ServerPage]] = field(default_factory=lambda: deque(maxlen=HISTORY_MAX))
    pages: dict[str, ModelPage] = field(default_factory=dict)  # model -> its figures on the newest page
    rates: dict[str, Rates] = field(default_factory=dict)  # model -> rates over the window (up replicas)
    counters: Counters = field(default_factory=dict)  # the newest page's counters (a restart shows there)
    just_reset: bool = False


def model_view(replicas: Sequence[tuple[ReplicaSample, dict[str, ModelPage], dict[str, Rates], bool]]
               ) -> tuple[ModelServing, ...]:
    """Replicas -> one ModelServing per model (sorted by name); each entry: the replica's sample, its
    newest pages and window rates by model, and whether it was just reset. Shared with Prometheus mode."""
    names = sorted({m.model for r, _, _, _ in replicas for m in r.models})
    out = []
    for name in names:
        serving = [x for x in replicas if any(m.model == name for m in x[0].models)]
        up = [x for x in serving if x[0].status == "up" and name in x[1]]
        pages = [x[1][name] for x in up]
        rates = [x[2][name] for x in up if name in x[2]]
        kinds = tuple(sorted({x[0].kind for x in serving if x[0].kind}))
        no_rates = Missing.DOWN if not up else (Missing.RESET if any(x[3] for x in up) else Missing.WARMING_UP)
        f = figures(name, pages, rates, no_rates, mean_only=kinds == ("triton",))
        if not up:
            f = replace(f, missing={**f.missing, **{k: Missing.DOWN for k in ("waiting", "running", "kv_cache_pct")}})
        kv = [p.kv_frac * 100.0 for p in pages if p.kv_frac is not None]
        out.append(ModelServing(
            model=name, kinds=kinds, replicas_up=len(up), replicas_total=len(serving), figures=f,
            kv_cache_max_pct=max(kv) if kv and f.kv_cache_pct is not None else None,  # None: one is spoilt
            queue_per_replica=f.waiting / len(up) if up and f.waiting is not None else None,
        ))
    return tuple(out)


class ServingCollector:
    """Scrapes every inference server in `urls`; returns a ServingSample with one ReplicaSample per URL."""

    name = "serving"

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = 2.0,
        concurrency: int = 64,
        min_interval_s: float = 5.0,
        window_s: float = 60.0,
        wait_s: float | None = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self.window_s = window_s
        self.wait_s = wait_s
        self._clock = clock
        now = clock()
        replicas: list[_Replica] = []
        for url in dict.fromkeys(urls):
            shown = shown_url(url)  # as the fleet's nodes: made visible where it enters
            first = ReplicaSample(url=shown, status="down", error="not scraped yet", latency_ms=None,
                                  taken_at=now, checked_at=now)
            replicas.append(_Replica(url, shown, min_interval_s, first))
        self._windows = {r.url: _Window() for r in replicas}
        self._last: ServingSample | None = None
        self._sweeper = Sweeper(replicas, parse=self._parse, took=self._took, timeout_s=timeout_s,
                                concurrency=concurrency, wait_s=wait_s, clock=clock)

    async def poll(self, deadline: float | None = None) -> ServingSample:
        """A sweep (waiting at most wait_s, and never past `deadline`: the event loop's clock) and its sample."""
        await self._sweeper.sweep(deadline)
        return self._sample()

    async def give_up(self, error: str) -> ServingSample:
        """The last sample of a one-shot read: scrapes in flight cancelled, a replica never read down for `error`."""
        await self._sweeper.give_up(error)
        return self._sample()

    def _sample(self) -> ServingSample:
        rs = self._sweeper.targets
        replicas = tuple(r.sample for r in rs)
        last = self._last
        # most polls come between two scrapes of every replica (the console polls each second, a replica is
        # scraped every min_interval_s): the same samples make the same per-model view, not worked out again
        if last is None or len(last.replicas) != len(replicas) or any(
                a is not b for a, b in zip(last.replicas, replicas, strict=True)):
            view = [(r.sample, w.pages, w.rates, w.just_reset) for r, w in ((r, self._windows[r.url]) for r in rs)]
            models = model_view(view)
        else:
            models = last.models
        self._last = ServingSample(taken_at=self._clock(), replicas=replicas, models=models, source="scrape")
        return self._last

    @staticmethod
    def _parse(r: _Replica, body: bytes) -> ServerPage:
        return parse_server_page(body.decode("utf-8", errors="replace"))

    def _took(self, r: _Replica, page: ServerPage, latency_ms: float) -> ReplicaSample:
        """A page read at `now`: the history, the window's rates and the replica's sample."""
        now = self._clock()
        w = self._windows[r.url]
        if page.kind is None:
            w.history.clear()
            w.pages, w.rates = {}, {}
            return ReplicaSample(url=r.shown, status="not_serving", error=NOT_A_SERVER, latency_ms=latency_ms,
                                 taken_at=now, checked_at=now, warnings=page.warnings,
                                 resets=r.sample.resets, last_reset_at=r.sample.last_reset_at)
        resets, last_reset_at = r.sample.resets, r.sample.last_reset_at
        if not w.history or w.history[-1][1] is not page:  # an identical page cannot hold a restart
            down, w.counters = went_down(w.counters if w.history else {}, page)
            w.just_reset = down
        else:
            w.just_reset = False
        if w.just_reset:
            resets, last_reset_at = resets + 1, now
            w.history.clear()  # the counters restarted: the window starts again here
        w.history.append((now, page))
        h = w.history
        while len(h) > 2 and now - h[1][0] >= self.window_s:
            h.popleft()  # the baseline: the newest scrape at least window_s old
        base_at, base = h[0]
        dt = now - base_at
        before = {m.model: m for m in base.models} if len(h) >= 2 and dt > 0 else {}
        w.pages = {m.model: m for m in page.models}
        w.rates = {m.model: rates_between(before[m.model], m, dt) for m in page.models if m.model in before}
        no_rates = Missing.RESET if w.just_reset else Missing.WARMING_UP
        models: list[ServingFigures] = [
            figures(m.model, [m], [w.rates[m.model]] if m.model in w.rates else [], no_rates,
                    mean_only=page.kind == "triton")
            for m in page.models
        ]
        return ReplicaSample(
            url=r.shown, status="up", error=None, latency_ms=latency_ms, taken_at=now, checked_at=now,
            kind=page.kind, variant=page.variant, models=tuple(models), warnings=page.warnings,
            resets=resets, last_reset_at=last_reset_at,
        )

    async def aclose(self) -> None:
        await self._sweeper.aclose()
