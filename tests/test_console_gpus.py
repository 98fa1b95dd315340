"""Local GPUs in the console through the real GpuCollector, NVML faked only at the pynvml boundary."""

from __future__ import annotations

from collectors.gpu import GpuCollector
from surgewatch.settings import Settings
from tests.fakenvml import FakeGpu, FakeNvml
from tui.app import create_app
from tui.testing import screen_text, wait_until


async def test_local_gpus_throttle_xid_and_lost_reach_screen_and_events() -> None:
    """Throttling, an XID and a lost GPU from NVML become table statuses, KPIs and events at 80x24."""
    nv = FakeNvml([FakeGpu("GPU-0", temp=55), FakeGpu("GPU-1", temp=60), FakeGpu("GPU-2", temp=50)])
    app = create_app(Settings(interval_s=0.2), sources=["gpus"], collector_factories={"gpus": lambda: GpuCollector(nv)})
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(app.state.rows) == 3, what="3 GPUs")
        await wait_until(pilot, lambda: "0 L4" in screen_text(app), what="rows drawn")
        nv.gpus[0].reasons = 0x20  # SW thermal slowdown
        nv.gpus[1].temp = 88
        nv.emit_xid(2, 79)
        await wait_until(pilot, lambda: [r.status for r in app.state.rows] == ["throttled", "hot", "xid"],
                         what="statuses")
        nv.gpus[2].lost = True
        await wait_until(pilot, lambda: app.state.rows[2].status == "lost", what="lost")
        kinds = {e.kind for e in app.state.events}
        assert {"throttle", "xid", "gpu_lost"} <= kinds
        k = app.state.kpis()
        assert (k.gpus, k.throttled, k.hot, k.lost) == (3, 1, 1, 1)
        await wait_until(pilot, lambda: "lost 1" in screen_text(app), what="KPI strip")
