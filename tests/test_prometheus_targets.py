"""Prometheus mode shows every target (issue 12): against a real Prometheus scraping loopback nodes, one
target that is never up, one that goes down, one serving a page Prometheus rejects. All three are
listed down with the reason, in a one-shot snapshot (a process that never saw them up) and in the
console; the one that went down keeps its GPUs from Prometheus' history, with when it was last seen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sim.valkey import free_port
from surgewatch.settings import Settings
from surgewatch.snapshot import take_snapshot
from tests.test_fleet_collector import LoopbackNode
from tests.test_prometheus_mode import PrometheusServer
from tui.app import create_app
from tui.testing import screen_text, wait_until


async def _until_scraped(prom: PrometheusServer, n: int, timeout: float = 30.0) -> dict[str, dict]:
    """Every target scraped at least once (health known), by instance."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=2) as c:
        while loop.time() < deadline:
            doc = (await c.get(f"{prom.url}/api/v1/targets")).json()
            ts = {t["labels"]["instance"]: t for t in doc["data"]["activeTargets"] if t["health"] != "unknown"}
            if len(ts) >= n:
                return ts
            await asyncio.sleep(0.2)
    raise AssertionError("prometheus did not scrape every target")


async def _until_down(prom: PrometheusServer, instance: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=2) as c:
        while loop.time() < deadline:
            doc = (await c.get(f"{prom.url}/api/v1/targets")).json()
            if any(t["labels"]["instance"] == instance and t["health"] == "down" for t in doc["data"]["activeTargets"]):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{instance} never went down in prometheus")


@pytest.fixture
async def three_bad_targets(tmp_path: Path) -> AsyncIterator[tuple[PrometheusServer, str, str, str]]:
    """(prometheus, went-down instance, rejected-page instance, never-up instance), the first down by now."""
    gone = await LoopbackNode().start()
    html = await LoopbackNode("garbage").start()
    never = f"127.0.0.1:{free_port()}"
    gone_i, html_i = f"127.0.0.1:{gone.port}", f"127.0.0.1:{html.port}"
    prom = PrometheusServer([gone_i, html_i, never], tmp_path)
    try:
        await prom.wait_targets(1)
        await _until_scraped(prom, 3)
        await asyncio.sleep(1.5)  # a few samples of the L4 in Prometheus' history
        await gone.stop()
        await _until_down(prom, gone_i)
        yield prom, gone_i, html_i, never
    finally:
        prom.stop()
        await gone.stop()
        await html.stop()


async def test_one_shot_snapshot_lists_every_down_target_with_its_reason(
    three_bad_targets: tuple[PrometheusServer, str, str, str],
) -> None:
    prom, gone, html, never = three_bad_targets
    doc = await take_snapshot(redis_url=None, prefix="surgewatch:", nodes=[], prometheus=prom.url, local=False)
    assert "prometheus" not in doc["errors"]
    nodes = {n["url"]: n for n in doc["nodes"]}
    assert set(nodes) == {gone, html, never}
    assert all(n["status"] == "down" for n in nodes.values())
    # went down: its GPU from Prometheus' history, stale, and when it was last seen
    assert nodes[gone]["gpus"] == 1 and nodes[gone]["last_seen"] and "refused" in nodes[gone]["error"]
    (l4,) = [g for g in doc["gpus"] if g["node"] == gone]
    assert (l4["name"], l4["temp_c"], l4["status"], l4["mig"]) == ("NVIDIA L4", 31, "stale", None)
    # a page Prometheus cannot parse: Prometheus' own lastError
    assert nodes[html]["gpus"] == 0 and nodes[html]["error"].startswith("target down in prometheus: ")
    assert len(nodes[html]["error"]) > len("target down in prometheus: ") + 5
    # never up: listed, with no GPUs and why
    assert nodes[never]["gpus"] == 0 and "never up in the last 1h" in nodes[never]["error"]


async def test_console_shows_the_three_down_targets(three_bad_targets: tuple[PrometheusServer, str, str, str]) -> None:
    prom, gone, html, never = three_bad_targets
    app = create_app(Settings(prometheus=prom.url, interval_s=0.5, node_interval_s=0.5), sources=["fleet"],
                     tick_s=None)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_until(pilot, lambda: len(app.state.rows) == 3, timeout=20, what="three rows")
        rows = {r.key.split("#")[0]: r for r in app.state.rows}
        assert rows[gone].status == "down" and rows[gone].gpu.name == "NVIDIA L4" and rows[gone].stale
        assert rows[html].placeholder and rows[html].note.startswith("down: target down in prometheus: ")
        assert rows[never].placeholder and "never up" in rows[never].note
        text = await wait_until(pilot, lambda: "never up" in screen_text(app) and screen_text(app), what="drawn")
        assert "0 L4" in text and text.count("down") >= 3
        assert app.state.kpis().gpuless_nodes == 2
