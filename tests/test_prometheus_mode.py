"""Prometheus HTTP API mode against a real Prometheus server (Debian's `prometheus`) scraping loopback nodes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from collectors.agent import Agent
from collectors.fleet import PrometheusFleetCollector
from sim.valkey import free_port
from tests.fakenvml import FakeGpu, FakeNvml
from tests.test_fleet_collector import LoopbackNode

PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)


class PrometheusServer:
    """A prometheus process on a free loopback port, scraping the given targets every second."""

    def __init__(self, targets: list[str], workdir: Path) -> None:
        if PROMETHEUS is None:
            pytest.fail("the `prometheus` binary is not installed (apt-get install prometheus; .ci/run does it)")
        cfg = workdir / "prometheus.yml"
        quoted = ", ".join(f"'{t}'" for t in targets)
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
            f"scrape_configs:\n  - job_name: gpu\n    static_configs:\n      - targets: [{quoted}]\n"
        )
        self._cfg, self._workdir = cfg, workdir
        self.log = (workdir / "prometheus.log").open("wb")
        self._start()

    def _start(self) -> None:
        assert PROMETHEUS is not None
        # a port picked free may be taken before prometheus binds it: wait_targets starts it again on a new one
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self._cfg}", f"--storage.tsdb.path={self._workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    async def wait_targets(self, want_up: int, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(timeout=2) as c:
            restarts = 3
            while loop.time() < deadline:
                if self.proc.poll() is not None:
                    assert restarts > 0, "prometheus exited at start, on several ports"
                    restarts -= 1
                    self._start()
                try:
                    doc = (await c.get(f"{self.url}/api/v1/targets")).json()
                    up = [t for t in doc["data"]["activeTargets"] if t["health"] == "up"]
                    if len(up) >= want_up:
                        return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"prometheus targets not up within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[PrometheusServer, LoopbackNode, Agent]]:
    """An L4 node and a surgewatch agent (fake NVML, 2 GPUs), both scraped by a real Prometheus."""
    node = await LoopbackNode().start()
    nv = FakeNvml([FakeGpu("GPU-hot", temp=89, reasons=0x20, power_mw=70_000), FakeGpu("GPU-cool", temp=41)])
    agent = Agent("127.0.0.1", 0, interval_s=0.5, nvml=nv)
    await agent.start()
    prom = PrometheusServer([f"127.0.0.1:{node.port}", f"127.0.0.1:{agent.port}"], tmp_path)
    try:
        await prom.wait_targets(2)
        yield prom, node, agent
    finally:
        prom.stop()
        await agent.stop()
        await node.stop()


async def test_whole_fleet_from_one_instant_query_and_a_node_going_down(
    fleet: tuple[PrometheusServer, LoopbackNode, Agent],
) -> None:
    """Both targets' GPUs come from one query; a target that goes down keeps its GPUs as stale."""
    prom, node, agent = fleet
    c = PrometheusFleetCollector(prom.url, timeout_s=3)
    try:
        s = None
        for _ in range(50):
            s = await c.poll()
            if sum(len(n.gpus) for n in s.nodes) == 3:
                break
            await asyncio.sleep(0.2)
        assert s is not None and s.source == "prometheus"
        by = {n.url: n for n in s.nodes}
        l4 = by[f"127.0.0.1:{node.port}"]
        ag = by[f"127.0.0.1:{agent.port}"]
        assert l4.status == "up" and l4.gpus[0].name == "NVIDIA L4" and l4.gpus[0].temp_c == 31
        assert l4.gpus[0].power_w == 16.365 and l4.gpus[0].mem_total_mib == 23033
        assert [g.uuid for g in ag.gpus] == ["GPU-hot", "GPU-cool"]
        assert ag.gpus[0].throttle == ("thermal",) and ag.gpus[0].temp_c == 89 and ag.gpus[0].temp_slowdown_c == 90
        await node.stop()
        down = None
        for _ in range(50):
            await asyncio.sleep(0.3)
            down = {n.url: n for n in (await c.poll()).nodes}[f"127.0.0.1:{node.port}"]
            if down.status == "down":
                break
        assert down is not None and down.status == "down"
        # Prometheus' own lastError for the target (issue 12)
        assert (down.error or "").startswith("target down in prometheus: ") and "refused" in (down.error or "")
        assert down.gpus[0].status == "stale" and down.gpus[0].temp_c == 31
    finally:
        await c.aclose()


async def test_unreachable_prometheus_raises_a_clear_error() -> None:
    """A Prometheus that is not there fails the poll with its (redacted) URL, for the runner to report."""
    c = PrometheusFleetCollector(f"http://admin:pw@127.0.0.1:{free_port()}", timeout_s=1)
    try:
        with pytest.raises(RuntimeError) as e:
            await c.poll()
    finally:
        await c.aclose()
    assert "cannot connect" in str(e.value) and "pw@" not in str(e.value) and "admin:***@" in str(e.value)
