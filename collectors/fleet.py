"""Remote GPUs: scrape many nodes' /metrics (dcgm-exporter names), or ask a Prometheus server.

One shared httpx client, a per-node timeout and a concurrency bound. A node is never scraped faster
than `min_interval_s` (5 s by default; dcgm-exporter itself refreshes its values every 30 s unless
told otherwise, `-c 30000`), and a page identical to the node's previous one is not parsed again
(most scrapes, with dcgm-exporter's default). A node that is down, slow, erroring or serving garbage
keeps its last-known GPUs
(status "stale", with the time they were read) and never delays the others: a sweep waits at most
`wait_s` for its scrapes, and a slower one lands in a later sample.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from collectors.dcgm import PageError, parse_report
from collectors.nodes import redact_url
from collectors.runner import describe_error
from collectors.samples import FleetSample, GpuSample, NodeSample
from collectors.series import ParsedNode, dedupe_uuids
from quotas.safe import safe

MAX_PAGE_BYTES = 8 * 1024 * 1024  # a node serving more than this is broken, not a GPU server


def scrape_error(exc: BaseException, timeout_s: float) -> str:
    """A short, credential-free reason for a status column; what a server said is made visible (quotas.safe)."""
    return safe(_scrape_error(exc, timeout_s), 160)


def _scrape_error(exc: BaseException, timeout_s: float) -> str:
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
    page_digest: bytes = b""  # digest of the last page parsed, and what it parsed to
    page: ParsedNode = field(default_factory=ParsedNode)


HEADERS = {"Accept": "text/plain;version=0.0.4", "User-Agent": "surgewatch"}


def make_client(timeout_s: float, concurrency: int) -> httpx.AsyncClient:
    """A client shared by many nodes, bounded like the semaphore (Prometheus mode, or one given by a caller).

    No keep-alive: httpcore's pool scans every pooled connection on every request event, so keeping
    one idle connection per node in one pool makes a sweep quadratic in the fleet (measured: 128
    keep-alive connections cost 4x the CPU of reconnecting). FleetCollector keeps one small client
    per node instead."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        headers=HEADERS,
        follow_redirects=False,
    )


def make_node_client(timeout_s: float, keepalive_s: float, ssl_context: ssl.SSLContext) -> httpx.AsyncClient:
    """One node's client: one kept-alive connection, reused scrape after scrape.

    A reused connection spares each scrape a TCP connect and the pool's connect machinery (about a
    fifth of a sweep's CPU); the TLS context is shared because building one costs milliseconds."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=keepalive_s),
        headers=HEADERS,
        follow_redirects=False,
        verify=ssl_context,
    )


class NodeClients:
    """One kept-alive client per scraped URL (see make_node_client), or one shared client given by a caller."""

    def __init__(self, timeout_s: float, shared: httpx.AsyncClient | None = None) -> None:
        self.timeout_s = timeout_s
        self._shared = shared
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._ssl: ssl.SSLContext | None = None

    def get(self, url: str, interval_s: float) -> httpx.AsyncClient:
        if self._shared is not None:
            return self._shared
        client = self._clients.get(url)
        if client is None:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            # kept alive past the next scrape, which comes interval_s later
            client = make_node_client(self.timeout_s, max(30.0, 3 * interval_s), self._ssl)
            self._clients[url] = client
        return client

    async def aclose(self) -> None:
        """Closes the clients it made (a shared client is its caller's)."""
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()


async def fetch_page(client: httpx.AsyncClient, url: str) -> bytes:
    """A /metrics page, refusing more than MAX_PAGE_BYTES (a broken server must not eat the console's memory)."""
    async with client.stream("GET", url) as r:
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
        self._clients = NodeClients(timeout_s, client)
        self._sem = asyncio.Semaphore(max(1, concurrency))
        now = clock()
        self._nodes: list[_Node] = []
        for url in dict.fromkeys(urls):
            shown = safe(redact_url(url) or url)
            first = NodeSample(
                url=shown, status="down", error="not scraped yet", latency_ms=None, taken_at=now, checked_at=now
            )
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
        nodes = dedupe_uuids(tuple(n.sample for n in self._nodes))
        return FleetSample(taken_at=self._clock(), nodes=nodes, source="scrape")

    async def _scrape(self, n: _Node) -> None:
        try:
            async with self._sem:
                t0 = time.perf_counter()
                try:
                    async with asyncio.timeout(self.timeout_s):
                        body = await self._fetch(n)
                    latency_ms = (time.perf_counter() - t0) * 1000
                    digest = hashlib.blake2b(body, digest_size=16).digest()
                    if digest == n.page_digest:
                        page = n.page  # same page, same GPUs: samples are immutable
                    else:
                        page = parse_report(body.decode("utf-8", errors="replace"), n.shown)
                        n.page_digest, n.page = digest, page
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    prev = n.sample
                    n.sample = replace(
                        prev,
                        status="down",
                        error=scrape_error(e, self.timeout_s),
                        latency_ms=None,
                        checked_at=self._clock(),
                        gpus=_stale(prev.gpus),
                    )
                    return
                now = self._clock()
                n.sample = NodeSample(
                    url=n.shown,
                    status="up",
                    error=None,
                    latency_ms=round(latency_ms, 2),
                    taken_at=now,
                    checked_at=now,
                    gpus=page.gpus,
                    warnings=page.warnings,
                )
        finally:
            n.task = None

    async def _fetch(self, n: _Node) -> bytes:
        return await fetch_page(self._clients.get(n.url, n.interval_s), n.url)

    async def aclose(self) -> None:
        tasks = [n.task for n in self._nodes if n.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._clients.aclose()


def __getattr__(name: str) -> Any:
    # Prometheus mode lives in collectors.prometheus; the old import path keeps working
    if name == "PrometheusFleetCollector":
        from collectors.prometheus import PrometheusFleetCollector

        return PrometheusFleetCollector
    raise AttributeError(name)
