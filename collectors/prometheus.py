"""The whole fleet from a Prometheus server's HTTP API (for fleets too big to scrape from one terminal).

Nodes are Prometheus' `instance` labels. Every target of a job that exports GPU metrics is listed,
the ones that are down too, even when this process never saw them up:
- the targets come from `/api/v1/targets` (health and Prometheus' own `lastError`, so a page that
  Prometheus cannot parse shows why); the current values from one instant query
  `{__name__=~"DCGM_..."} or up`;
- a target that is down gets its last-known GPUs from Prometheus' history
  (`last_over_time(...[LOOKBACK])`, once per outage) and the time it was last up;
- a target never up within the lookback is listed down with no GPUs and the reason.

A fleet larger than a console can show (the console's `window`, see collectors.prometheus_window) is
read through aggregation queries: the fleet's figures, every node's GPU count, and only the worst
nodes' (and the operator's) series in full. A one-shot snapshot (no window) lists every GPU.

A refresh runs as one task: decoding the answer and building the samples (the heavy part: tens of
megabytes of JSON for a large fleet) happen in a worker thread, and a poll that finds the previous
refresh still running returns the last sample instead of queuing another (skipped, not queued).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from collectors.dcgm import PROMQL_SELECTOR, USED_METRICS
from collectors.fleet import _stale
from collectors.nodes import redact_url
from collectors.prometheus_window import (
    FleetWindow,
    counts_query,
    masks_query,
    read_counts,
    read_instances,
    read_masks,
    read_summary,
    read_where,
    series_query,
    summary_query,
    throttled_masks,
    unhealthy_query,
    where_query,
    worst_query,
)
from collectors.samples import FleetSample, FleetSummary, NodeSample
from collectors.scrape import HEADERS, scrape_error
from collectors.series import Series, dedupe_uuids, mark_moved, read_series
from quotas.safe import safe

log = logging.getLogger(__name__)
DOWN = "target down in prometheus"
METRIC_LABEL = "surgewatch_metric"


@dataclass(frozen=True, slots=True)
class Target:
    """One active target as `/api/v1/targets` describes it."""

    instance: str
    job: str
    up: bool
    last_error: str


def format_lookback(seconds: float) -> str:
    """A PromQL duration: 3600 -> '1h', 90 -> '90s'."""
    s = max(1, int(seconds))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


def _regex_of(instances: list[str]) -> str:
    # an RE2 alternation of the exact names, written as a PromQL string (backslashes doubled)
    alt = "|".join(re.escape(i) for i in sorted(instances))
    return alt.replace("\\", "\\\\").replace('"', '\\"')


def history_query(instances: list[str], lookback: str) -> str:
    """The last value of every used series of these instances within the lookback, named.

    Functions drop the metric name, and `or` matches label sets without it, so each term carries its
    name in a label of its own (METRIC_LABEL), which keeps the terms apart."""
    sel = f'instance=~"{_regex_of(instances)}"'
    return " or ".join(
        f'label_replace(last_over_time({m}{{{sel}}}[{lookback}]), "{METRIC_LABEL}", "{m}", "", "")'
        for m in USED_METRICS
    )


def last_up_query(instances: list[str], lookback: str, step: str) -> str:
    """When each instance was last up within the lookback (to the step)."""
    return (f'max by (instance) (max_over_time(timestamp(up{{instance=~"{_regex_of(instances)}"}} == 1)'
            f"[{lookback}:{step}]))")


def read_targets(doc: Any) -> dict[str, Target]:
    out: dict[str, Target] = {}
    for t in (doc.get("data") or {}).get("activeTargets") or () if isinstance(doc, dict) else ():
        try:
            labels = t["labels"]
            inst = str(labels["instance"])
            # lastError quotes what the exporter served: outside text, made visible here
            out[inst] = Target(inst, str(labels.get("job", "")), t.get("health") == "up",
                               safe(" ".join(str(t.get("lastError") or "").split()), 160))
        except (KeyError, TypeError, AttributeError):
            continue
    return out


def group_result(result: Any) -> tuple[dict[str, list[Series]], dict[str, bool], dict[str, float], dict[str, str]]:
    """An instant query's vector -> (series by instance, up by instance, newest sample time, job of GPU series)."""
    series: dict[str, list[Series]] = {}
    up: dict[str, bool] = {}
    stamp: dict[str, float] = {}
    jobs: dict[str, str] = {}
    for item in result if isinstance(result, list) else ():
        try:
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            ts, raw = item["value"]
            value = float(raw)
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        inst = labels.get("instance", "?")
        name = labels.pop("__name__", "")
        name = labels.pop(METRIC_LABEL, "") or name
        if name == "up":
            up[inst] = value == 1.0
            continue
        series.setdefault(inst, []).append((name, labels, value))
        stamp[inst] = max(stamp.get(inst, 0.0), float(ts))
        jobs.setdefault(inst, labels.get("job", ""))
    return series, up, stamp, jobs


def make_client(timeout_s: float, concurrency: int) -> httpx.AsyncClient:
    """Prometheus mode's httpx client (a few queries a poll), bounded like the semaphore.

    No keep-alive: httpcore's pool scans every pooled connection on every request event, so keeping
    idle connections in one pool makes many requests quadratic (measured: 128 keep-alive connections
    cost 4x the CPU of reconnecting). The node and server scrapes use aiohttp
    (collectors.scrape)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        headers=HEADERS,
        follow_redirects=False,
    )


async def instant_query(client: httpx.AsyncClient, base_url: str, query: str) -> Any:
    """One PromQL instant query (POSTed: ours are long) -> its result list. Prometheus' refusal raises
    RuntimeError with Prometheus' own error; transport errors are httpx's (see collectors.scrape.scrape_error)."""
    r = await client.post(f"{base_url}/api/v1/query", data={"query": query})
    r.raise_for_status()
    doc = r.json()
    if not isinstance(doc, dict) or doc.get("status") != "success":
        err = doc.get("error") if isinstance(doc, dict) else None
        raise RuntimeError(f"query failed ({err or 'unexpected answer'})")
    return doc.get("data", {}).get("result", [])


class PrometheusFleetCollector:
    """Every GPU target of a Prometheus server; see the module's docstring."""

    name = "fleet"

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 2.0,
        lookback_s: float = 3600.0,
        min_interval_s: float = 0.0,
        wait_s: float | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        window: FleetWindow | None = None,
    ) -> None:
        """`min_interval_s`: Prometheus is not asked more often (its values change at its scrape
        interval); `wait_s`: how long a poll waits for a refresh before returning the last sample
        (None: until it is done, as a one-shot snapshot wants); `window`: what a console shows of a
        large fleet (None: every GPU)."""
        self.window = window
        self.base_url = base_url.rstrip("/")
        self.shown = redact_url(self.base_url) or self.base_url
        self.timeout_s = timeout_s
        self.lookback = format_lookback(lookback_s)
        self._step = format_lookback(max(1.0, lookback_s / 720))
        self.min_interval_s = min_interval_s
        self.wait_s = wait_s
        self._clock = clock
        self._own_client = client is None
        self._client = client or make_client(timeout_s, 4)
        self._known: dict[str, NodeSample] = {}
        self._history: dict[str, tuple[NodeSample | None, float | None]] = {}  # per outage: GPUs, last up
        self._gpu_jobs: set[str] = set()
        self._task: asyncio.Task[FleetSample] | None = None
        self._last: FleetSample | None = None
        self._last_at = -1e18
        self.skipped = 0  # polls that found the previous refresh still running

    async def poll(self) -> FleetSample:
        now = self._clock()
        if self._task is None and (self._last is None or now - self._last_at >= self.min_interval_s):
            self._last_at = now
            self._task = asyncio.create_task(self._refresh())
        elif self._task is not None:
            self.skipped += 1
        task = self._task
        if task is None:
            assert self._last is not None
            return self._last
        if self._last is not None and self.wait_s is not None:
            done, _ = await asyncio.wait({task}, timeout=self.wait_s)
            if not done:
                return self._last  # still running: the refresh lands in a later poll
        try:
            sample = await asyncio.shield(task)
        finally:
            if task.done():
                self._task = None
        self._last = sample
        return sample

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        r = await self._client.get(f"{self.base_url}{path}", params=params)
        r.raise_for_status()
        return r

    async def _query(self, query: str) -> Any:
        return await instant_query(self._client, self.base_url, query)

    async def _windowed(self, w: FleetWindow) -> tuple[Any, FleetSummary, set[str]] | None:
        """(grouped values, summary, nodes not fetched) for a fleet larger than the
        window; None for a smaller one (fetched whole)."""
        counts_a, up_a, summary_a, masks_a = await asyncio.gather(
            self._query(counts_query()), self._query("up"), self._query(summary_query(w.hot_c)),
            self._query(masks_query()),
        )
        gpus, jobs = read_counts(counts_a)
        total = sum(gpus.values())
        if total <= w.above_gpus:
            return None
        masks = read_masks(masks_a)
        thr = throttled_masks(masks, w.throttled)
        unhealthy_a, worst_a = await asyncio.gather(
            self._query(unhealthy_query(w.hot_c, thr)), self._query(worst_query(w.nodes, thr)))
        shown = set(read_instances(worst_a)) & set(gpus)
        focus = w.focus.strip().lower()
        if focus:
            shown |= set([i for i in sorted(gpus) if focus in i.lower()][: w.focus_max_nodes])
        series: dict[str, list[Series]] = {}
        stamp: dict[str, float] = {}
        if shown:
            r = await self._client.post(f"{self.base_url}/api/v1/query", data={"query": series_query(shown)})
            r.raise_for_status()
            series, _, stamp, _ = await asyncio.to_thread(self._decode, r.content)
        _, up, _, _ = group_result(up_a)
        summary = read_summary(summary_a, total, masks, thr, unhealthy_a, len(shown))
        skip = {i for i, n in gpus.items() if n > 0 and i not in shown and up.get(i, True)}
        return (series, up, stamp, jobs), summary, skip

    async def _refresh(self) -> FleetSample:
        try:
            async with asyncio.timeout(max(self.timeout_s, 1.0) * 4):
                t0 = time.perf_counter()
                targets_t = asyncio.ensure_future(self._get("/api/v1/targets", {"state": "active"}))
                windowed = None
                summary: FleetSummary | None = None
                skip: set[str] = set()
                try:
                    if self.window is not None:
                        windowed = await self._windowed(self.window)
                    if windowed is None:
                        values_r = await self._get("/api/v1/query", {"query": f"{PROMQL_SELECTOR} or up"})
                        # the answer for a large fleet is tens of MB: decode and group it off the event loop
                        grouped = await asyncio.to_thread(self._decode, values_r.content)
                    else:
                        grouped, summary, skip = windowed
                finally:
                    targets_r: httpx.Response | BaseException
                    (targets_r,) = await asyncio.gather(targets_t, return_exceptions=True)
                latency_ms = (time.perf_counter() - t0) * 1000
                targets = {} if isinstance(targets_r, BaseException) else read_targets(targets_r.json())
                down = self._down_without_history(targets, grouped)
                if down:
                    await self._fetch_history(down)
        except Exception as e:
            raise RuntimeError(f"prometheus {self.shown}: {scrape_error(e, self.timeout_s)}") from e
        sample = await asyncio.to_thread(self._sample, targets, grouped, latency_ms, summary, skip)
        return sample if summary is None else await self._moved(sample)

    async def _moved(self, sample: FleetSample) -> FleetSample:
        """Windowed: down nodes' last-known GPUs that are live at an address not fetched in full moved there
        (dedupe_uuids sees only the GPUs the sample holds). Asked only when a down node holds GPUs."""
        stale = {g.uuid for n in sample.nodes if n.status == "down" for g in n.gpus if g.uuid is not None}
        if not stale:
            return sample
        try:
            async with asyncio.timeout(max(self.timeout_s, 1.0)):
                live_at = read_where(await self._query(where_query(stale)))
        except Exception as e:  # the down nodes keep their last-known GPUs, as without this question
            log.warning("prometheus %s: where are the GPUs of down nodes: %s", self.shown,
                        scrape_error(e, self.timeout_s))
            return sample
        return replace(sample, nodes=mark_moved(sample.nodes, live_at))

    @staticmethod
    def _decode(body: bytes) -> Any:
        doc = json.loads(body)
        if not isinstance(doc, dict) or doc.get("status") != "success":
            err = doc.get("error") if isinstance(doc, dict) else None
            raise RuntimeError(f"query failed ({err or 'unexpected answer'})")
        return group_result(doc.get("data", {}).get("result", []))

    def _is_gpu_job(self, job: str) -> bool:
        return not self._gpu_jobs or job in self._gpu_jobs

    def _down_without_history(self, targets: dict[str, Target], grouped: Any) -> list[str]:
        _, up, _, jobs = grouped
        self._gpu_jobs.update(jobs.values())
        down = []
        for inst, t in targets.items():
            if not t.up or up.get(inst) is False:
                if inst not in self._history and inst not in self._known:
                    down.append(inst)
            else:
                self._history.pop(inst, None)  # back up: the next outage reads history again
        for inst, ok in up.items():
            if not ok and inst not in targets and inst not in self._history and inst not in self._known:
                down.append(inst)
        return down

    async def _fetch_history(self, instances: list[str]) -> None:
        got, last = await asyncio.gather(
            self._query(history_query(instances, self.lookback)),
            self._query(last_up_query(instances, self.lookback, self._step)),
        )
        series, _, _, jobs = group_result(got)
        self._gpu_jobs.update(jobs.values())
        seen: dict[str, float] = {}
        for item in last if isinstance(last, list) else ():
            try:
                seen[str(item["metric"]["instance"])] = float(item["value"][1])
            except (KeyError, TypeError, ValueError):
                continue
        now = self._clock()
        for inst in instances:
            at = seen.get(inst)
            node = None
            if inst in series:
                parsed = read_series(inst, series[inst])
                node = NodeSample(url=safe(inst), status="down", error=DOWN, latency_ms=None, taken_at=at or now,
                                  checked_at=now, gpus=_stale(parsed.gpus), warnings=parsed.warnings)
            self._history[inst] = (node, at)

    def _sample(self, targets: dict[str, Target], grouped: Any, latency_ms: float,
                summary: FleetSummary | None = None, skip: set[str] | None = None) -> FleetSample:
        """`skip`: nodes up with GPUs that this (windowed) refresh did not fetch: counted in `summary`."""
        series, up, stamp, _ = grouped
        now = self._clock()
        skip = skip or set()
        for inst in skip & set(self._known):
            del self._known[inst]
        listed = set(series) | set(self._known)
        listed |= {i for i, t in targets.items() if self._is_gpu_job(t.job)}
        listed |= {i for i, ok in up.items() if not ok and i in self._history}
        listed -= skip
        for inst in sorted(listed):
            t = targets.get(inst)
            is_up = up.get(inst, t.up if t is not None else True) and (t is None or t.up)
            if inst in series and is_up:
                parsed = read_series(inst, series[inst])
                self._known[inst] = NodeSample(
                    url=safe(inst), status="up", error=None, latency_ms=round(latency_ms, 2),
                    taken_at=stamp.get(inst, now), checked_at=now, gpus=parsed.gpus, warnings=parsed.warnings,
                )
                continue
            reason = f"{DOWN}: {t.last_error}" if t is not None and t.last_error else DOWN
            prev = self._known.get(inst)
            if prev is None:
                hist, at = self._history.get(inst, (None, None))
                prev = hist
                if prev is None:
                    never = f"never up in the last {self.lookback}" if at is None else "no GPU series in its history"
                    self._known[inst] = NodeSample(url=safe(inst), status="down", error=f"{reason} ({never})",
                                                   latency_ms=None, taken_at=now, checked_at=now)
                    continue
            self._known[inst] = replace(prev, status="down", error=reason, latency_ms=None, checked_at=now,
                                        gpus=_stale(prev.gpus))
        nodes = dedupe_uuids(tuple(self._known[k] for k in sorted(self._known)))
        return FleetSample(taken_at=now, nodes=nodes, source="prometheus", summary=summary)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._own_client:
            await self._client.aclose()
