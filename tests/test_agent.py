"""`surgewatch agent`: NVML (fake pynvml) served under dcgm-exporter names, read back by the fleet collector."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import httpx
import pynvml
import pytest

from collectors.agent import GPU_METRICS, Agent
from collectors.fleet import FleetCollector
from collectors.gpu import GpuCollector
from tests.fakenvml import FakeGpu, FakeNvml


def _nvml() -> FakeNvml:
    return FakeNvml(
        [
            FakeGpu(
                "GPU-aaaa",
                util=93,
                mem_util=41,
                mem_used=7 * 1024**3,
                temp=86,
                slowdown=87,
                shutdown=92,
                power_mw=299_500,
                power_limit_mw=300_000,
                sm_clock=1410,
                sm_clock_max=1980,
                reasons=pynvml.nvmlClocksEventReasonSwThermalSlowdown | pynvml.nvmlClocksEventReasonHwSlowdown,
                fan=77,
                ecc=3,
                remapped=(2, 1, 0, 0),
                replay=12,
                pids=(5,),
            ),
            FakeGpu(
                "GPU-bbbb", name="NVIDIA H100 80GB HBM3", mem_total=80 * 1024**3, unsupported={"nvmlDeviceGetFanSpeed"}
            ),
        ]
    )


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    """An agent on a free loopback port over the fake NVML."""
    a = Agent("127.0.0.1", 0, interval_s=0.2, nvml=_nvml())
    await a.start()
    try:
        yield a
    finally:
        await a.stop()


async def test_round_trip_of_every_exported_field(agent: Agent) -> None:
    """Every GPU field the agent exports reads back identical through the fleet collector."""
    nv = _nvml()
    local = GpuCollector(nv, xid_events=False)
    try:
        expected = (await local.poll()).gpus
    finally:
        await local.aclose()
    fc = FleetCollector([agent.url], min_interval_s=0, wait_s=None)
    try:
        (node,) = (await fc.poll()).nodes
    finally:
        await fc.aclose()
    assert node.status == "up", node.error
    assert len(node.gpus) == 2
    for want, got in zip(expected, node.gpus, strict=True):
        w = dataclasses.replace(want, node=agent.url, processes=None)  # no dcgm-exporter name for processes
        assert got == w
    assert node.gpus[0].throttle == ("hw_slowdown", "thermal") and node.gpus[1].fan_pct is None


async def test_page_uses_dcgm_names_and_labels(agent: Agent) -> None:
    """The page carries dcgm-exporter names with gpu, UUID, modelName and Hostname labels, plus host metrics."""
    async with httpx.AsyncClient() as c:
        text = (await c.get(agent.url)).text
    for name, _, _ in GPU_METRICS:
        assert f"{name}{{" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("DCGM_FI_DEV_GPU_TEMP{") and 'gpu="1"' in ln)
    for label in ('UUID="GPU-bbbb"', 'modelName="NVIDIA H100 80GB HBM3"', "Hostname="):
        assert label in line
    assert "surgewatch_host_cpu_pct{" in text and "surgewatch_host_mem_total_mib{" in text
    assert 'surgewatch_agent_gpu_status{status="ok"} 1.0' in text


async def test_no_gpu_still_serves_host_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    """Without a driver the agent serves host metrics, no GPU series, and logs the reason."""
    caplog.set_level(logging.INFO)
    a = Agent("127.0.0.1", 0, nvml=FakeNvml([FakeGpu("GPU-x")], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    await a.start()
    try:
        async with httpx.AsyncClient() as c:
            text = (await c.get(a.url)).text
    finally:
        await a.stop()
    assert "DCGM_FI_DEV" not in text and "surgewatch_host_load1{" in text
    assert 'surgewatch_agent_gpu_status{status="no_library"} 1.0' in text
    assert any("no GPU series" in r.getMessage() and "library not found" in r.getMessage() for r in caplog.records)


def test_port_in_use_exits_1_with_a_message(caplog: pytest.LogCaptureFixture) -> None:
    """`surgewatch agent` on a taken port says so and exits 1 instead of a traceback."""
    import socket

    from collectors.agent import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert serve("127.0.0.1", port) == 1
    assert any("cannot serve on" in r.getMessage() for r in caplog.records)
