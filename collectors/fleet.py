"""Remote GPUs: scrape many nodes' /metrics (dcgm-exporter names), or ask a Prometheus server.

One shared httpx client, a per-node timeout and a concurrency bound. A node is never scraped faster
than `min_interval_s` (dcgm-exporter refreshes its values every 5 s by default, so scraping faster
only costs CPU), and a node that is down, slow, erroring or serving garbage keeps its last-known GPUs
(status "stale", with the time they were read) and never delays the others: a sweep waits at most
`wait_s` for its scrapes, and a slower one lands in a later sample.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from collectors.dcgm import PROMQL_SELECTOR, PageError, gpus_from_series, parse_page
from collectors.nodes import redact_url
from collectors.runner import describe_error
from collectors.samples import FleetSample, GpuSample, NodeSample

MAX_PAGE_BYTES = 8 * 1024 * 1024  # a node serving more than this is broken, not a GPU server


def scrape_error(exc: BaseException, timeout_s: float) -> str:
    """A short, credential-free reason for a status column."""
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}".strip()
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({' '.join(str(exc).split())[:80] or 'refused'})"
    if isinstance(exc, PageError):
        return str(exc)
    return describe_error(exc)[:120]


def _stale(gpus: tuple[GpuSample, ...]) -> tuple[GpuSample, ...]:
    return tuple(g if g.status == "stale" else replace(g, status="stale") for g in gpus)


@dataclass
class _Node:
    url: str
    shown: str
    sample: NodeSample
    task: asyncio.Task[None] | None = None
    last_try: float = -math.inf
    interval_s: float = 5.0


def make_client(timeout_s: float, concurrency: int) -> httpx.AsyncClient:
    """The shared client, bounded like the semaphore.

    No keep-alive: httpcore's pool scans every pooled connection on every request event, so keeping
    one idle connection per node makes a sweep quadratic in the fleet (measured: 128 keep-alive
    connections cost 4x the CPU of reconnecting). A node is scraped every 5 s; a connect is cheap.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        headers={"Accept": "text/plain;version=0.0.4", "User-Agent": "surgewatch"},
        follow_redirects=False,
    )


class FleetCollector:
    """Scrapes every node in `urls`; returns a FleetSample with one NodeSample per URL, in order."""

    name = "fleet"

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = 2.0,
        concurrency: int = 64,
        min_interval_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
        wait_s: float | None = 1.0,
        node_intervals: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`node_intervals`: per-URL minimum intervals overriding `min_interval_s` (a local agent
        refreshes every second, dcgm-exporter every 5 s)."""
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self.wait_s = wait_s
        self._clock = clock
        self._own_client = client is None
        self._client = client or make_client(timeout_s, concurrency)
        self._sem = asyncio.Semaphore(max(1, concurrency))
        now = clock()
        self._nodes: list[_Node] = []
        for url in dict.fromkeys(urls):
            shown = redact_url(url) or url
            first = NodeSample(url=shown, status="down", error="not scraped yet", latency_ms=None,
                               taken_at=now, checked_at=now)
            interval = (node_intervals or {}).get(url, min_interval_s)
            self._nodes.append(_Node(url, shown, first, interval_s=interval))

    async def poll(self) -> FleetSample:
        now = self._clock()
        for n in self._nodes:
            if n.task is None and now - n.last_try >= n.interval_s:
                n.last_try = now
                n.task = asyncio.create_task(self._scrape(n))
        pending = [n.task for n in self._nodes if n.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=self.wait_s)
        return FleetSample(taken_at=self._clock(), nodes=tuple(n.sample for n in self._nodes), source="scrape")

    async def _scrape(self, n: _Node) -> None:
        try:
            async with self._sem:
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(self.timeout_s):
                        body = await self._fetch(n.url)
                    latency_ms = (time.perf_counter() - t0) * 1000
                    gpus = parse_page(body.decode("utf-8", errors="replace"), n.shown)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - any failure is this node's status
                    prev = n.sample
                    n.sample = replace(prev, status="down", error=scrape_error(e, self.timeout_s),
                                       latency_ms=None, checked_at=self._clock(), gpus=_stale(prev.gpus))
                    return
                now = self._clock()
                n.sample = NodeSample(url=n.shown, status="up", error=None, latency_ms=round(latency_ms, 2),
                                      taken_at=now, checked_at=now, gpus=gpus)
        finally:
            n.task = None

    async def _fetch(self, url: str) -> bytes:
        """The page, refusing more than MAX_PAGE_BYTES (a broken node must not eat the console's memory)."""
        async with self._client.stream("GET", url) as r:
            r.raise_for_status()
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_PAGE_BYTES:
                raise PageError(f"page too large ({declared} bytes)")
            chunks, size = [], 0
            async for chunk in r.aiter_bytes():  # decoded: the limit also stops a zip bomb
                size += len(chunk)
                if size > MAX_PAGE_BYTES:
                    raise PageError(f"page too large (over {MAX_PAGE_BYTES} bytes)")
                chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        tasks = [n.task for n in self._nodes if n.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_client:
            await self._client.aclose()


class PrometheusFleetCollector:
    """The whole fleet from one instant query to a Prometheus server (for fleets too big to scrape).

    Nodes are Prometheus' `instance` labels. A target whose `up` is 0 is "down" with its last-known
    GPUs; GPU-less targets (node exporters and the like) are left out.
    """

    name = "fleet"

    def __init__(self, base_url: str, *, timeout_s: float = 2.0, client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self.shown = redact_url(self.base_url) or self.base_url
        self.timeout_s = timeout_s
        self._clock = clock
        self._own_client = client is None
        self._client = client or make_client(timeout_s, 4)
        self._known: dict[str, NodeSample] = {}

    async def poll(self) -> FleetSample:
        query = f'{PROMQL_SELECTOR} or up'
        try:
            async with asyncio.timeout(self.timeout_s):
                t0 = time.perf_counter()
                r = await self._client.get(f"{self.base_url}/api/v1/query", params={"query": query})
                latency_ms = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
                doc = r.json()
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"prometheus {self.shown}: {scrape_error(e, self.timeout_s)}") from e
        if not isinstance(doc, dict) or doc.get("status") != "success":
            err = doc.get("error") if isinstance(doc, dict) else None
            raise RuntimeError(f"prometheus {self.shown}: query failed ({err or 'unexpected answer'})")
        return self._sample(doc.get("data", {}).get("result", []), latency_ms)

    def _sample(self, result: Any, latency_ms: float) -> FleetSample:
        now = self._clock()
        series: dict[str, list[tuple[str, dict[str, str], float]]] = {}
        up: dict[str, bool] = {}
        stamp: dict[str, float] = {}
        for item in result if isinstance(result, list) else ():
            try:
                labels = {str(k): str(v) for k, v in item["metric"].items()}
                ts, raw = item["value"]
                value = float(raw)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            inst = labels.get("instance", "?")
            name = labels.pop("__name__", "")
            if name == "up":
                up[inst] = value == 1.0
                continue
            series.setdefault(inst, []).append((name, labels, value))
            stamp[inst] = max(stamp.get(inst, 0.0), float(ts))
        for inst in sorted(set(series) | (set(up) & set(self._known))):
            if inst in series and up.get(inst, True):
                gpus = gpus_from_series(inst, series[inst])
                self._known[inst] = NodeSample(url=inst, status="up", error=None, latency_ms=round(latency_ms, 2),
                                               taken_at=stamp.get(inst, now), checked_at=now, gpus=gpus)
            elif inst in self._known:
                prev = self._known[inst]
                self._known[inst] = replace(prev, status="down", error="target down in prometheus",
                                            latency_ms=None, checked_at=now, gpus=_stale(prev.gpus))
        return FleetSample(taken_at=now, nodes=tuple(self._known[k] for k in sorted(self._known)),
                           source="prometheus")

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()
