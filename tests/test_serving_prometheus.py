"""Prometheus mode against a real Prometheus scraping loopback inference servers: the same figures as scraping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from collectors.prometheus import instant_query
from collectors.serving import ServingCollector
from collectors.serving_prometheus import PrometheusServingCollector
from collectors.serving_samples import ServingSample
from tests.test_prometheus_mode import PrometheusServer
from tests.test_serving_collector import vllm_page
from tui.testing import MetricsNode

# Every tenth of a second of the servers' clock, each replica finishes 3 requests under 1 s and 1 in (5, 10] s. Every
# difference between two moments is a whole number of these steps, so the quantiles are the same over any
# window and whatever the replicas' relative traffic in it (Prometheus extrapolates each series on its own):
# p50 = rank 0.5 x 4 = 2 of the 3 in (0, 1] -> 0.667 s; p99 = rank 3.96, the 0.96th of the 1 in (5, 10] -> 9.8 s.
# (How replicas of different speeds weigh in the model is pinned by test_serving_collector, by hand.)
P50, P99 = 2 / 3, 9.8


def replica(start: float, step: tuple[float, ...], per_s: float, waiting: float, kv: float) -> Callable[[], str]:
    def page() -> str:
        k = int((time.time() - start) * 10)  # fine steps: a window holds many, whatever its edges
        return vllm_page(stop=per_s * k, e2e=tuple(c * k for c in step), waiting=waiting, kv=kv)
    return page


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[PrometheusServer, MetricsNode, MetricsNode]]:
    start = time.time()
    a = MetricsNode(replica(start, (3, 3, 3, 4, 4), 4, waiting=4, kv=0.5)).start()
    b = MetricsNode(replica(start, (3, 3, 3, 4, 4), 4, waiting=6, kv=0.7)).start()
    prom = PrometheusServer([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], tmp_path)
    try:
        yield prom, a, b
    finally:
        prom.stop()
        a.stop()
        b.stop()


async def _until(poll: Callable[[], Awaitable[ServingSample]], ok: Callable[[ServingSample], bool],
                 timeout_s: float = 40) -> ServingSample:
    async with asyncio.timeout(timeout_s):
        while True:
            s = await poll()
            if ok(s):
                return s
            await asyncio.sleep(0.5)


def _ready(s: ServingSample) -> bool:
    """Both replicas have requests in Prometheus' window (a rate needs two samples that differ)."""
    p99 = [f.e2e_p99_s for r in s.replicas for f in r.models]
    m = s.models[0] if s.models else None
    return m is not None and m.replicas_up == 2 and (m.figures.e2e_p99_s or 0) > 5 and (
        s.summary is not None or (len(p99) == 2 and None not in p99))


async def test_promql_mode_gives_the_scrape_collectors_figures(
    servers: tuple[PrometheusServer, MetricsNode, MetricsNode],
) -> None:
    """Per replica and per model: queues, KV use and quantiles agree with scraping the same servers."""
    prom, a, b = servers
    await prom.wait_targets(2)
    # rate() divides by its range: over [1m], a minute must pass before a rate is whole; a 5 s range
    # (Prometheus scrapes every second here) is whole after 5 s
    pc = PrometheusServingCollector(prom.url, timeout_s=5, window="5s", window_s=5.0)
    await asyncio.sleep(6)
    sc = ServingCollector([a.url, b.url], min_interval_s=0, wait_s=None, timeout_s=5)
    try:
        await sc.poll()
        viaprom = await _until(pc.poll, _ready)
        await asyncio.sleep(3)
        scraped = await sc.poll()
    finally:
        await pc.aclose()
        await sc.aclose()
    assert viaprom.source == "prometheus" and viaprom.summary is None
    for s in (viaprom, scraped):
        (m,) = s.models
        assert (m.model, m.replicas_up, m.replicas_total) == ("img", 2, 2)
        assert m.figures.waiting == 10 and m.queue_per_replica == 5
        assert m.figures.kv_cache_pct == pytest.approx(60.0) and m.kv_cache_max_pct == pytest.approx(70.0)
        assert m.figures.e2e_p50_s == pytest.approx(P50, rel=0.05)
        assert m.figures.e2e_p99_s == pytest.approx(P99, rel=0.02)
        assert m.figures.requests_per_s == pytest.approx(80.0, rel=0.25)  # Prometheus extrapolates to the range
        p99 = [f.e2e_p99_s for r in s.replicas for f in r.models]
        assert p99 == [pytest.approx(P99, rel=0.02)] * 2
    assert {r.url for r in viaprom.replicas} == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}


async def test_large_deployment_reads_aggregates_and_worst_replicas_and_keeps_a_down_one(
    servers: tuple[PrometheusServer, MetricsNode, MetricsNode],
) -> None:
    """Above the replica bound: per-model figures from aggregates (as histogram_quantile says), the worst replica
    in full; a replica that stops is down in Prometheus and keeps its last figures."""
    prom, _, b = servers
    await prom.wait_targets(2)
    pc = PrometheusServingCollector(prom.url, timeout_s=5, above_replicas=1, worst=1)
    try:
        s = await _until(pc.poll, _ready)
        async with httpx.AsyncClient(timeout=5) as client:
            direct = await instant_query(client, prom.url, "histogram_quantile(0.99, sum by (le, model_name) "
                                         "(rate(vllm:e2e_request_latency_seconds_bucket[1m])))")
        assert s.summary is not None and (s.summary.replicas, s.summary.replicas_up) == (2, 2)
        (m,) = s.models
        assert m.figures.e2e_p99_s == pytest.approx(float(direct[0]["value"][1]), rel=0.02)
        assert m.figures.e2e_p99_s == pytest.approx(P99, rel=0.02) and m.figures.waiting == 10
        # the deepest queue (B) is among the worst shown in full (the p99s tie: topk keeps either)
        assert f"127.0.0.1:{b.port}" in [r.url for r in s.replicas] and s.summary.shown_replicas == len(s.replicas)
        b.stop()
        s = await _until(pc.poll, lambda x: any(r.status == "down" for r in x.replicas))
    finally:
        await pc.aclose()
    down = next(r for r in s.replicas if r.status == "down")
    assert down.url == f"127.0.0.1:{b.port}" and (down.error or "").startswith("target down in prometheus")
    assert down.models and down.models[0].waiting == 6  # last known
