"""Prometheus does the work for a large fleet (issue 12 item 10): against a real Prometheus scraping real
pages on loopback, the windowed collector's aggregates equal the figures of the whole fleet, only the
worst node is fetched in full, and the operator's filter fetches the node it names."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collectors.prometheus import PrometheusFleetCollector
from collectors.prometheus_window import FleetWindow
from collectors.runner import Reading
from collectors.samples import FleetSample, Source
from surgewatch.kpis import Kpis, build_gpu_rows, compute_kpis, throttled_reasons
from surgewatch.thresholds import Thresholds
from tests.conftest import FIXTURES, L4_CAPTURE
from tests.test_prometheus_mode import PrometheusServer
from tests.test_prometheus_targets import _until_scraped
from tui.testing import MetricsNode, multiply_page

TH = Thresholds()
L4 = L4_CAPTURE.read_text()


def _hot_throttled_l4() -> str:
    """The L4 capture for 2 GPUs, GPU 0 at 88 °C and thermally throttled (bit 0x20)."""
    page = multiply_page(L4, 2).replace('UUID="GPU-0000', 'UUID="GPU-1111')  # not the idle node's UUIDs
    page = re.sub(r'(DCGM_FI_DEV_GPU_TEMP\{gpu="0",[^}]*\}) 31', r"\1 88", page)
    lab = re.search(r'DCGM_FI_DEV_GPU_TEMP\{(gpu="0",[^}]*)\}', page)
    assert lab is not None
    return page + f"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{{{lab.group(1)}}} 32\n"


def _idle_l4s() -> str:
    """The L4 capture for 4 GPUs, each with the benign gpu_idle reason (not throttled)."""
    page = multiply_page(L4, 4)
    extra = [f"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{{{m.group(1)}}} 1"
             for m in re.finditer(r'DCGM_FI_DEV_GPU_TEMP\{([^}]*)\}', page)]
    return page + "\n".join(extra) + "\n"


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[PrometheusServer, dict[str, str]]]:
    """A real Prometheus scraping three real pages: 4 idle L4s, 2 L4s (one hot and throttled), 2 MIG A30s."""
    a30 = (FIXTURES / "dcgm-exporter-A30-MIG.prom").read_text()
    pages = {"idle": _idle_l4s(), "hot": _hot_throttled_l4(), "mig": a30}
    nodes = {k: MetricsNode(p).start() for k, p in pages.items()}
    inst = {k: f"127.0.0.1:{n.port}" for k, n in nodes.items()}
    prom = PrometheusServer(list(inst.values()), tmp_path)
    try:
        await prom.wait_targets(3)
        await _until_scraped(prom, 3)
        yield prom, inst
    finally:
        prom.stop()
        for n in nodes.values():
            n.stop()


async def _sample(url: str, window: FleetWindow | None) -> FleetSample:
    c = PrometheusFleetCollector(url, window=window)
    try:
        return await c.poll()
    finally:
        await c.aclose()


def _kpis(s: FleetSample) -> Kpis:
    reading: Reading[FleetSample] = Reading(Source.FLEET, s, s.taken_at, None, 0, s.taken_at + 1)
    return compute_kpis(build_gpu_rows(None, reading, s.taken_at, TH), None, [reading], s.taken_at, TH)


async def test_aggregates_equal_the_whole_fleet_and_only_the_worst_node_is_fetched(
    fleet: tuple[PrometheusServer, dict[str, str]],
) -> None:
    """The windowed KPIs equal those of every GPU; the table gets the hot node's GPUs only."""
    prom, inst = fleet
    whole = await _sample(prom.url, None)
    assert sum(len(n.gpus) for n in whole.nodes) == 8 and whole.summary is None
    w = FleetWindow(above_gpus=0, nodes=1, hot_c=TH.temp_hot_c, throttled=throttled_reasons)
    part = await _sample(prom.url, w)
    assert part.summary is not None
    assert part.summary.gpus == 8 and part.summary.shown_nodes == 1
    assert [n.url for n in part.nodes] == [inst["hot"]] and len(part.nodes[0].gpus) == 2
    full, windowed = _kpis(whole), _kpis(part)
    assert (windowed.gpus, windowed.healthy, windowed.hot, windowed.throttled) == (8, 7, 1, 1)
    assert (windowed.gpus, windowed.healthy, windowed.hot, windowed.throttled, windowed.temp_max_c) == (
        full.gpus, full.healthy, full.hot, full.throttled, full.temp_max_c)
    for a, b in ((windowed.util_mean_pct, full.util_mean_pct), (windowed.temp_mean_c, full.temp_mean_c)):
        assert a is not None and b is not None and abs(a - b) < 1e-6
    # a MIG GPU's instances sample the device's power at slightly different times (52.636 and 52.746 W
    # on the A30 capture): the parser takes the page's first, Prometheus (no page order) the largest
    assert windowed.power_w is not None and full.power_w is not None and abs(windowed.power_w - full.power_w) < 0.5


async def test_the_operators_filter_fetches_the_node_it_names(fleet: tuple[PrometheusServer, dict[str, str]]) -> None:
    """A filter holding a node's port brings that node's GPUs (here the MIG A30s) into the window."""
    prom, inst = fleet
    port = inst["mig"].rsplit(":", 1)[1]
    w = FleetWindow(above_gpus=0, nodes=1, hot_c=TH.temp_hot_c, throttled=throttled_reasons, focus=port)
    part = await _sample(prom.url, w)
    shown = {n.url: n for n in part.nodes}
    assert set(shown) == {inst["hot"], inst["mig"]}
    assert [g.mig is not None and len(g.mig) for g in shown[inst["mig"]].gpus] == [4, 2]


async def test_a_fleet_within_the_window_is_fetched_whole(fleet: tuple[PrometheusServer, dict[str, str]]) -> None:
    """At or under `above_gpus` every GPU is fetched as before, with no summary."""
    prom, _ = fleet
    s = await _sample(prom.url, FleetWindow(above_gpus=8, nodes=1))
    assert s.summary is None and sum(len(n.gpus) for n in s.nodes) == 8
