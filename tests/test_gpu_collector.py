"""The NVML collector against a fake pynvml module (the only faked boundary in the project)."""

from __future__ import annotations

import asyncio
import threading
import time

import pynvml
import pytest

from collectors.gpu import GpuCollector, nvml_query
from collectors.reasons import decode_reasons, encode_reasons
from tests.fakenvml import FakeGpu, FakeNvml, err


def _fleet() -> FakeNvml:
    return FakeNvml([
        FakeGpu("GPU-0", util=97, mem_util=40, mem_used=10 * 1024**3, temp=88, power_mw=71_500,
                sm_clock=1200, reasons=pynvml.nvmlClocksEventReasonSwThermalSlowdown
                | pynvml.nvmlClocksEventReasonSwPowerCap, pids=(11, 12)),
        FakeGpu("GPU-1", name="NVIDIA H100 80GB HBM3", util=5, temp=35, ecc=2, replay=7,
                remapped=(1, 2, 0, 0), unsupported={"nvmlDeviceGetFanSpeed", "nvmlDeviceGetRemappedRows"}),
        FakeGpu("GPU-2", reasons=pynvml.nvmlClocksEventReasonGpuIdle),
    ])


async def test_reads_every_field_of_several_gpus() -> None:
    """Each GPU's fields arrive with units converted, and reasons decode to names."""
    nv = _fleet()
    c = GpuCollector(nv)
    try:
        s = await c.poll()
    finally:
        await c.aclose()
    assert s.status == "ok" and s.driver_version == "580.105.08"
    assert [g.uuid for g in s.gpus] == ["GPU-0", "GPU-1", "GPU-2"]
    g0 = s.gpus[0]
    assert (g0.node, g0.index, g0.name) == ("local", 0, "NVIDIA L4")
    assert (g0.util_pct, g0.mem_util_pct, g0.mem_used_mib, g0.mem_total_mib) == (97, 40, 10240, 24576)
    assert (g0.temp_c, g0.temp_slowdown_c, g0.temp_shutdown_c) == (88, 90, 95)
    assert (g0.power_w, g0.power_limit_w, g0.sm_clock_mhz, g0.sm_clock_max_mhz) == (71.5, 72.0, 1200, 2040)
    assert g0.throttle == ("power_cap", "thermal")
    assert (g0.fan_pct, g0.processes, g0.xid, g0.status) == (30, 2, None, "ok")
    assert s.gpus[2].throttle == ("gpu_idle",)


async def test_unsupported_fields_are_na_not_errors() -> None:
    """A field NVML does not support is None while the GPU's other fields still read."""
    c = GpuCollector(_fleet())
    try:
        g1 = (await c.poll()).gpus[1]
    finally:
        await c.aclose()
    assert g1.fan_pct is None and g1.remapped_rows is None
    assert (g1.ecc_uncorrected, g1.pcie_replay, g1.temp_c, g1.name) == (2, 7, 35, "NVIDIA H100 80GB HBM3")
    assert g1.status == "ok"


async def test_remapped_rows_sum_correctable_and_uncorrectable() -> None:
    """Remapped rows count both correctable and uncorrectable remappings."""
    nv = FakeNvml([FakeGpu("GPU-0", remapped=(3, 4, 1, 0))])
    c = GpuCollector(nv)
    try:
        assert (await c.poll()).gpus[0].remapped_rows == 7
    finally:
        await c.aclose()


async def test_nvml_runs_off_the_event_loop_and_inits_once() -> None:
    """NVML calls run in the worker thread, init happens once and handles are cached."""
    nv = _fleet()
    c = GpuCollector(nv, xid_events=False)
    try:
        for _ in range(3):
            await c.poll()
    finally:
        await c.aclose()
    assert nv.init_calls == 1
    assert threading.current_thread().name not in nv.thread_names
    assert all(n.startswith("nvml") for n in nv.thread_names)


async def test_xid_event_is_reported_on_its_gpu() -> None:
    """An XID critical error from the event set shows as that GPU's last XID."""
    nv = _fleet()
    c = GpuCollector(nv)
    try:
        await c.poll()
        nv.emit_xid(1, 79)
        deadline = time.monotonic() + 5
        while True:
            s = await c.poll()
            if s.gpus[1].xid is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    finally:
        await c.aclose()
    assert [g.xid for g in s.gpus] == [None, 79, None]


async def test_gpu_lost_mid_run_is_marked_while_others_update() -> None:
    """A GPU that becomes lost is marked lost; the other GPUs keep fresh values; it comes back."""
    nv = _fleet()
    c = GpuCollector(nv, retry_base_s=0.01)
    try:
        await c.poll()
        nv.gpus[1].lost = True
        nv.gpus[0].temp = 91
        s = await c.poll()
        assert [g.status for g in s.gpus] == ["ok", "lost", "ok"]
        assert s.gpus[0].temp_c == 91 and s.gpus[1].uuid == "GPU-1" and s.gpus[1].temp_c is None
        nv.gpus[1].lost = False
        await asyncio.sleep(0.05)
        s = await c.poll()
    finally:
        await c.aclose()
    assert [g.status for g in s.gpus] == ["ok", "ok", "ok"] and s.gpus[1].temp_c == 35


@pytest.mark.parametrize(
    ("code", "status", "words"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no_library", "library not found"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "no_driver", "driver not loaded"),
    ],
)
async def test_no_library_or_driver_gives_one_clear_status(code: int, status: str, words: str) -> None:
    """Without the library or the driver the poll returns a status, never raises, and backs off."""
    nv = FakeNvml([FakeGpu("GPU-0")], init_error=code)
    c = GpuCollector(nv, retry_base_s=60)
    try:
        s1 = await c.poll()
        s2 = await c.poll()
    finally:
        await c.aclose()
    assert (s1.status, s1.gpus) == (status, ())
    assert words in s1.message.lower()
    assert s2.status == status and nv.init_calls == 1  # the second poll waited for the backoff


async def test_no_gpus_status() -> None:
    """A driver with zero GPUs reports no_gpus."""
    c = GpuCollector(FakeNvml([]))
    try:
        s = await c.poll()
    finally:
        await c.aclose()
    assert s.status == "no_gpus" and "no gpus" in s.message.lower()


async def test_driver_reload_reinitializes_with_backoff() -> None:
    """After the driver goes away NVML is shut down, re-initialized after a backoff, and GPUs return."""
    nv = _fleet()
    c = GpuCollector(nv, retry_base_s=0.3)
    try:
        await c.poll()
        nv.driver_gone = True  # the module is unloaded: calls answer Uninitialized
        nv.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
        s = await c.poll()
        assert s.status == "no_driver" and "re-initializing" in s.message
        assert (await c.poll()).status == "no_driver" and nv.init_calls == 1  # still backing off
        nv.init_error = None  # the new driver is loaded
        await asyncio.sleep(0.35)
        s = await c.poll()
    finally:
        await c.aclose()
    assert s.status == "ok" and len(s.gpus) == 3 and nv.init_calls == 2


def test_nvml_query_maps_errors() -> None:
    """nvml_query: NotSupported -> None, value passes through, GPU_IS_LOST raises GpuLost."""
    from collectors.gpu import DriverGone, GpuLost

    def raises(code: int) -> None:
        raise err(code)

    assert nvml_query(lambda: 5) == 5
    assert nvml_query(raises, pynvml.NVML_ERROR_NOT_SUPPORTED) is None
    assert nvml_query(raises, pynvml.NVML_ERROR_NO_PERMISSION) is None
    with pytest.raises(GpuLost):
        nvml_query(raises, pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(DriverGone):
        nvml_query(raises, pynvml.NVML_ERROR_UNINITIALIZED)


def test_reason_decoder_matches_pynvml_constants() -> None:
    """The shared decoder uses NVML's bit values and round-trips through encode."""
    assert decode_reasons(pynvml.nvmlClocksEventReasonHwSlowdown) == ("hw_slowdown",)
    assert decode_reasons(pynvml.nvmlClocksThrottleReasonHwThermalSlowdown) == ("hw_thermal",)
    assert decode_reasons(pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown) == ("hw_power_brake",)
    assert decode_reasons(pynvml.nvmlClocksEventReasonSyncBoost | pynvml.nvmlClocksEventReasonDisplayClockSetting) == (
        "sync_boost", "display_clocks")
    assert decode_reasons(pynvml.nvmlClocksEventReasonApplicationsClocksSetting) == ("applications_clocks",)
    assert decode_reasons(None) == () and decode_reasons(float("nan")) == () and decode_reasons(-1) == ()
    names = ("power_cap", "thermal", "hw_slowdown")
    assert decode_reasons(encode_reasons(names)) == ("power_cap", "hw_slowdown", "thermal")
