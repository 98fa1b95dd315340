"""Remote GPUs: scrape many nodes' /metrics (dcgm-exporter names), or ask a Prometheus server.

Scraped by collectors.sweep (one aiohttp session, collectors.scrape.PageFetcher: one kept-alive
connection per node, a per-node timeout and a concurrency bound). A node is never scraped faster than
`min_interval_s` (5 s by default; dcgm-exporter itself refreshes its values every 30 s unless told
otherwise, `-c 30000`), and a page identical to the node's previous one is not parsed again (most
scrapes, with dcgm-exporter's default). A node that is down, slow, erroring or serving garbage keeps
its last-known GPUs (status "stale", with the time they were read) and never delays the others: a sweep
waits at most `wait_s` for its scrapes, and a slower one lands in a later sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from collectors.dcgm import parse_report
from collectors.samples import FleetSample, GpuSample, NodeSample
from collectors.scrape import MAX_PAGE_BYTES as MAX_PAGE_BYTES  # the bound's old import path
from collectors.scrape import scrape_error as scrape_error  # the old import path
from collectors.series import ParsedNode, dedupe_uuids
from collectors.sweep import Sweeper, Target, shown_url, went_down


def _stale(gpus: tuple[GpuSample, ...]) -> tuple[GpuSample, ...]:
    return tuple(g if g.status == "stale" else replace(g, status="stale") for g in gpus)


_Node = Target[ParsedNode, NodeSample]


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
        now = clock()
        nodes: list[_Node] = []
        for url in dict.fromkeys(urls):
            shown = shown_url(url)
            first = NodeSample(
                url=shown, status="down", error="not scraped yet", latency_ms=None, taken_at=now, checked_at=now
            )
            nodes.append(_Node(url, shown, (node_intervals or {}).get(url, min_interval_s), first))
        self._sweeper = Sweeper(nodes, parse=self._parse, took=self._took, failed=self._failed,
                                timeout_s=timeout_s, concurrency=concurrency, wait_s=wait_s, clock=clock)

    async def poll(self) -> FleetSample:
        await self._sweeper.sweep()
        nodes = dedupe_uuids(tuple(n.sample for n in self._sweeper.targets))
        return FleetSample(taken_at=self._clock(), nodes=nodes, source="scrape")

    @staticmethod
    def _parse(n: _Node, body: bytes) -> ParsedNode:
        return parse_report(body.decode("utf-8", errors="replace"), n.shown)

    def _took(self, n: _Node, page: ParsedNode, latency_ms: float) -> NodeSample:
        now = self._clock()
        return NodeSample(url=n.shown, status="up", error=None, latency_ms=latency_ms, taken_at=now, checked_at=now,
                          gpus=page.gpus, warnings=page.warnings)

    def _failed(self, n: _Node, error: str) -> NodeSample:
        # the last-known GPUs stay, marked stale, with the time they were read
        down = went_down(n.sample, error, self._clock())
        return replace(down, gpus=_stale(down.gpus))

    async def aclose(self) -> None:
        await self._sweeper.aclose()


def __getattr__(name: str) -> Any:
    # Prometheus mode lives in collectors.prometheus; the old import path keeps working
    if name == "PrometheusFleetCollector":
        from collectors.prometheus import PrometheusFleetCollector

        return PrometheusFleetCollector
    raise AttributeError(name)
