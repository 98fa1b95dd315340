"""An exporter that moves address (a pod with a new IP) keeps its GPUs: identified by UUID, a GPU seen live at
the new address is live there, the old address says where it went, and the KPI strip counts each GPU once,
in scrape mode (the console, real loopback nodes) and in Prometheus mode (a real Prometheus re-pointed by
SIGHUP)."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from urllib.parse import urlsplit

from collectors.prometheus import PrometheusFleetCollector
from collectors.prometheus_window import FleetWindow
from collectors.samples import FleetSample
from surgewatch.settings import Settings
from tests.conftest import L4_CAPTURE
from tests.test_prometheus_mode import PrometheusServer
from tui.app import create_app
from tui.testing import MetricsNode, multiply_page, screen_text, wait_until

GPUS = 2


def two_gpus() -> str:
    return multiply_page(L4_CAPTURE.read_text(), GPUS)


def gpu_less() -> str:
    """A freshly started exporter's page before its GPUs are read: Prometheus text, no GPU series."""
    return "# HELP up_since_s seconds\n# TYPE up_since_s gauge\nup_since_s 1\n"


def addr(node: MetricsNode) -> str:
    return urlsplit(node.url).netloc


async def test_scrape_mode_gpus_that_moved_are_live_at_the_new_address_and_counted_once() -> None:
    """--nodes OLD,NEW: OLD serves the GPUs, then stops while NEW serves them; the console shows them live at
    NEW, OLD `moved to NEW`, and `GPUs 2  ok 2` in the KPI strip."""
    page = two_gpus()
    with MetricsNode(page) as old, MetricsNode(gpu_less()) as new:
        settings = Settings(nodes=(old.url, new.url), interval_s=0.2, node_interval_s=0.3)
        app = create_app(settings, sources=("fleet",), actor="tester")
        async with app.run_test(size=(200, 60)) as pilot:
            await wait_until(pilot, lambda: "GPUs 2  ok 2" in screen_text(app), what="the GPUs at the old address")
            new.page = page
            old.stop()
            await wait_until(pilot, lambda: f"moved to {addr(new)}" in screen_text(app), what="the move named")
            await wait_until(pilot, lambda: "GPUs 2  ok 2" in screen_text(app), what="each GPU counted once, live")


async def _poll_until(coll: PrometheusFleetCollector, ok: object, timeout_s: float = 40.0) -> FleetSample:
    async with asyncio.timeout(timeout_s):  # a hang guard: Prometheus scrapes every second
        while True:
            sample = await coll.poll()
            if ok(sample):  # type: ignore[operator]
                return sample
            await asyncio.sleep(0.5)


async def test_prometheus_mode_gpus_that_moved_after_a_sighup_are_live_at_the_new_target(tmp_path: Path) -> None:
    """Prometheus scrapes OLD; its config is re-pointed to NEW (SIGHUP) as OLD goes away: the collector lists
    the GPUs live at NEW once each, and OLD `moved to NEW`."""
    page = two_gpus()
    with MetricsNode(page) as old, MetricsNode(page) as new:
        prom = PrometheusServer([addr(old)], tmp_path)
        coll = PrometheusFleetCollector(prom.url, timeout_s=2.0)
        try:
            await prom.wait_targets(1)
            await _poll_until(coll, lambda s: any(n.url == addr(old) and len(n.gpus) == GPUS and n.status == "up"
                                                  for n in s.nodes))
            old.stop()
            cfg = tmp_path / "prometheus.yml"
            cfg.write_text(cfg.read_text().replace(addr(old), addr(new)))
            prom.proc.send_signal(signal.SIGHUP)

            def moved(s: FleetSample) -> bool:
                by = {n.url: n for n in s.nodes}
                return addr(new) in by and by[addr(new)].status == "up" and len(by[addr(new)].gpus) == GPUS \
                    and addr(old) in by and (by[addr(old)].error or "").startswith(f"moved to {addr(new)}")

            sample = await _poll_until(coll, moved)
        finally:
            await coll.aclose()
            prom.stop()
    gpus = [g for n in sample.nodes for g in n.gpus]
    assert len(gpus) == GPUS and len({g.uuid for g in gpus}) == GPUS
    assert all(g.status == "ok" for g in gpus)
    old_node = next(n for n in sample.nodes if n.url == addr(old))
    assert old_node.gpus == () and {w.kind for w in old_node.warnings} == {"uuid"}


def at_temp(page: str, temp_c: int) -> str:
    return re.sub(r"^(DCGM_FI_DEV_GPU_TEMP\{[^}]*\}) \S+", rf"\g<1> {temp_c}", page, flags=re.M)


async def test_windowed_prometheus_mode_counts_gpus_that_moved_to_an_unfetched_target_once(tmp_path: Path) -> None:
    """A large-fleet window fetches only the worst node in full: OLD (hottest, shown) moves to NEW (cool, not
    fetched); OLD says `moved to NEW` with no GPUs left, and the fleet's GPU count stays 4, not 6."""
    page = two_gpus()
    other = at_temp(page.replace('UUID="GPU-0000', 'UUID="GPU-cccc'), 70)
    with MetricsNode(at_temp(page, 90)) as old, MetricsNode(at_temp(page, 50)) as new, MetricsNode(other) as warm:
        prom = PrometheusServer([addr(old), addr(warm)], tmp_path)
        coll = PrometheusFleetCollector(prom.url, timeout_s=2.0, window=FleetWindow(above_gpus=1, nodes=1))
        try:
            await prom.wait_targets(2)
            await _poll_until(coll, lambda s: s.summary is not None and s.summary.gpus == 2 * GPUS and any(
                n.url == addr(old) and n.status == "up" and len(n.gpus) == GPUS for n in s.nodes))
            old.stop()
            cfg = tmp_path / "prometheus.yml"
            cfg.write_text(cfg.read_text().replace(addr(old), addr(new)))
            prom.proc.send_signal(signal.SIGHUP)

            def moved(s: FleetSample) -> bool:
                by = {n.url: n for n in s.nodes}
                return addr(old) in by and (by[addr(old)].error or "").startswith(f"moved to {addr(new)}") \
                    and s.summary is not None and s.summary.gpus == 2 * GPUS
            sample = await _poll_until(coll, moved)
        finally:
            await coll.aclose()
            prom.stop()
    assert addr(new) not in {n.url for n in sample.nodes}  # counted by Prometheus, not fetched in full
    down_gpus = sum(len(n.gpus) for n in sample.nodes if n.status == "down")
    assert sample.summary is not None and sample.summary.gpus + down_gpus == 2 * GPUS
