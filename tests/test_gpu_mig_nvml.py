"""Local MIG GPUs through the real GpuCollector, NVML faked only at the pynvml boundary (tests/fakenvml.py)."""

from __future__ import annotations

import pynvml

from collectors.gpu import GpuCollector, mig_profile
from collectors.samples import GpuSample, MigInstance
from surgewatch.kpis import mig_summary
from surgewatch.settings import Settings
from surgewatch.snapshot import gpu_json
from tests.fakenvml import FakeGpu, FakeMig, FakeNvml
from tui.app import create_app
from tui.testing import screen_text, wait_until
from tui.widgets.gpu_table import GpuTable

GIB = 1024**3
MIB = 1024**2
ON, OFF = pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_DISABLE


def _a30_in_mig(used_mib: tuple[int, ...] = (100, 5900, 13, 13)) -> FakeGpu:
    """An A30 in MIG mode with four 1g.6gb instances (as in the A30 capture), NVML answers memory in bytes."""
    return FakeGpu(
        "GPU-a30", name="NVIDIA A30", mem_used=1 * GIB, mem_total=24 * GIB, mig_mode=ON, max_mig=4,
        unsupported={"nvmlDeviceGetUtilizationRates"},  # as on a real MIG parent
        mig=[FakeMig(gi, "1g.6gb", used * MIB, 5952 * MIB) for gi, used in zip((3, 4, 5, 6), used_mib, strict=True)],
    )


async def _poll(nv: FakeNvml) -> tuple[GpuSample, ...]:
    c = GpuCollector(nv, xid_events=False)
    try:
        return (await c.poll()).gpus
    finally:
        await c.aclose()


async def test_a_gpu_in_mig_mode_lists_its_instances_with_their_memory() -> None:
    """Each GPU instance comes with its id, profile and memory; the GPU's memory is their sum."""
    (g,) = await _poll(FakeNvml([_a30_in_mig()]))
    assert g.mig == (
        MigInstance(3, "1g.6gb", 100.0, 5952.0), MigInstance(4, "1g.6gb", 5900.0, 5952.0),
        MigInstance(5, "1g.6gb", 13.0, 5952.0), MigInstance(6, "1g.6gb", 13.0, 5952.0),
    )
    assert (g.mem_used_mib, g.mem_total_mib) == (100 + 5900 + 13 + 13, 4 * 5952)
    assert g.util_pct is None and g.mig[0].util_pct is None  # NVML gives no utilization per MIG device
    assert (g.temp_c, g.power_w, g.status) == (40, 70.0, "ok")


async def test_snapshot_json_gets_the_same_mig_model_as_the_dcgm_parser() -> None:
    """`snapshot --json`'s GPU object carries the instances under the dcgm parser's keys."""
    (g,) = await _poll(FakeNvml([_a30_in_mig()]))
    doc = gpu_json(g)
    assert doc["mig"][1] == {"gi_id": 4, "profile": "1g.6gb", "mem_used_mib": 5900.0, "mem_total_mib": 5952.0,
                             "util_pct": None}
    assert len(doc["mig"]) == 4


async def test_no_mig_support_or_mig_off_is_no_mig() -> None:
    """A GPU answering NotSupported, and one with MIG disabled, are `mig=None` with their own memory."""
    plain = FakeGpu("GPU-l4", mem_used=2 * GIB)
    off = FakeGpu("GPU-a100", name="NVIDIA A100-SXM4-40GB", mig_mode=OFF, mem_used=3 * GIB, mem_total=40 * GIB)
    g1, g2 = await _poll(FakeNvml([plain, off]))
    assert (g1.mig, g1.mem_used_mib, g1.util_pct) == (None, 2048.0, 0)
    assert (g2.mig, g2.mem_used_mib, g2.mem_total_mib) == (None, 3072.0, 40960.0)


async def test_compute_instances_of_one_gpu_instance_are_listed_once() -> None:
    """Two MIG devices (compute instances) of one GPU instance share its memory: one entry, its GI profile."""
    gpu = FakeGpu("GPU-h100", name="NVIDIA H100 80GB HBM3", mig_mode=ON, mig=[
        FakeMig(1, "1c.3g.40gb", 20 * GIB, 40 * GIB), FakeMig(1, "2c.3g.40gb", 20 * GIB, 40 * GIB),
        FakeMig(2, "3g.40gb", 1 * GIB, 40 * GIB),
    ])
    (g,) = await _poll(FakeNvml([gpu]))
    assert [(m.gi_id, m.profile, m.mem_used_mib) for m in g.mig or ()] == [
        (1, "3g.40gb", 20480.0), (2, "3g.40gb", 1024.0)]
    assert g.mem_total_mib == 81920.0


async def test_mig_mode_with_no_instances_yet_is_an_empty_list() -> None:
    """MIG enabled before any GPU instance is created: in MIG mode, with no instances (not "no MIG")."""
    (g,) = await _poll(FakeNvml([FakeGpu("GPU-new", mig_mode=ON)]))
    assert g.mig == () and g.mem_used_mib == 0.0
    assert mig_summary(g.mig) == "MIG, no instances"


async def test_an_unsupported_mig_call_costs_the_field_not_the_gpu() -> None:
    """A MIG device whose memory NVML does not give is listed with memory n/a; the GPU keeps its own."""
    gpu = _a30_in_mig()
    gpu.unsupported.add("nvmlDeviceGetMemoryInfo")
    (g,) = await _poll(FakeNvml([gpu]))
    assert [m.gi_id for m in g.mig or ()] == [3, 4, 5, 6]
    assert all(m.mem_used_mib is None for m in g.mig or ())
    assert (g.mem_used_mib, g.temp_c, g.status) == (None, 40, "ok")


def test_profile_names_from_nvml_device_names() -> None:
    """NVML's MIG device names give dcgm-exporter's GPU instance profile."""
    assert mig_profile("NVIDIA A100-SXM4-40GB MIG 3g.20gb") == "3g.20gb"
    assert mig_profile("NVIDIA H100 80GB HBM3 MIG 1c.3g.40gb") == "3g.40gb"
    assert mig_profile("NVIDIA A30 MIG 1g.6gb+me") == "1g.6gb+me"
    assert mig_profile(None) == ""


async def test_console_shows_the_local_mig_gpu_and_flags_a_full_instance() -> None:
    """The local A30's profile summary in the table, `m` lists its instances, the near-full one flagged."""
    nv = FakeNvml([_a30_in_mig()])
    app = create_app(Settings(interval_s=0.2), sources=["gpus"], collector_factories={"gpus": lambda: GpuCollector(nv)})
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_until(pilot, lambda: "mig-full" in screen_text(app), what="the row's mig-full status")
        table = app.overview.query_one(GpuTable)
        table.focus()
        await wait_until(pilot, lambda: app.focused is table and table.selected_row is not None, what="focus")
        await pilot.press("m")
        await wait_until(pilot, lambda: "NEAR ITS MEMORY LIMIT" in screen_text(app), what="instances")
        text = screen_text(app)
        assert "local GPU 0 A30: MIG 4\u00d71g.6gb" in text
        assert "GI 4" in text and "5900/5952 MiB" in text and "GI 6" in text
        assert text.count("NEAR ITS MEMORY LIMIT") == 1
