"""The console on real pages served on loopback (issue 12): a MIG node opened with `m`, an absurd value
ignored and named once, a node that answers with no GPU series; and the agent's counter types."""

from __future__ import annotations

import httpx

from collectors.agent import Agent
from surgewatch.kpis import NO_GPU_SERIES
from surgewatch.settings import Settings
from tests.conftest import FIXTURES, L4_CAPTURE
from tests.fakenvml import FakeGpu, FakeNvml
from tests.test_fleet_pages import HERE
from tui.app import SurgewatchApp, create_app
from tui.screens.mig import MigInstancesScreen
from tui.testing import MetricsNode, screen_text, wait_until
from tui.widgets.events_log import EventLog
from tui.widgets.gpu_table import GpuTable

A30_CAPTURE = (FIXTURES / "dcgm-exporter-A30-MIG.prom").read_text()
A30_FB = (HERE / "dcgm-exporter-A30-MIG-fb.prom").read_text()


def _fill_gi4_of_gpu0(fb: str) -> str:
    """The FB lines of the capture with GPU 0's GI 4 at 5,900 of its 6,015 MiB (98 %: near its limit)."""
    out = []
    for ln in fb.splitlines():
        if 'gpu="0"' in ln and 'GPU_I_ID="4"' in ln:
            name, _, _ = ln.rpartition(" ")
            ln = f"{name} {5900 if name.startswith('DCGM_FI_DEV_FB_USED') else 115}"
        out.append(ln)
    return "\n".join(out) + "\n"


def _console(*urls: str) -> SurgewatchApp:
    return create_app(Settings(nodes=urls, interval_s=0.2, node_interval_s=0.3), sources=["fleet"])


def _events(app: SurgewatchApp) -> list[str]:
    return app.overview.query_one("#events", EventLog).texts


async def test_mig_node_opens_to_its_instances_and_flags_the_full_one() -> None:
    """The real A30 MIG page: two rows with their profile summary; `m` lists GPU 0's GIs, one near full."""
    with MetricsNode(A30_CAPTURE + _fill_gi4_of_gpu0(A30_FB)) as node:
        app = _console(node.url)
        async with app.run_test(size=(200, 60)) as pilot:
            await wait_until(pilot, lambda: len(app.state.rows) == 2, what="the two A30s")
            assert [r.status for r in app.state.rows] == ["mig-full", "ok"]
            table = app.overview.query_one(GpuTable)
            table.focus()
            await wait_until(pilot, lambda: app.focused is table and table.selected_row is not None, what="focus")
            await pilot.press("m")
            await wait_until(pilot, lambda: isinstance(app.screen, MigInstancesScreen), what="the instance list")
            await wait_until(pilot, lambda: "GI 6" in screen_text(app), what="instances drawn")
            text = screen_text(app)
            assert "GPU 0 A30: MIG 4\u00d71g.6gb" in text
            lines = [ln for ln in text.splitlines() if " GI " in ln]
            assert len(lines) == 4
            assert ["NEAR ITS MEMORY LIMIT" in ln for ln in lines] == [False, True, False, False]
            assert "5900/6015 MiB" in lines[1] and "98.1%" in lines[1]
            await pilot.press("escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, MigInstancesScreen), what="closed")
            await pilot.press("down", "m")
            await wait_until(pilot, lambda: "GI 4" in screen_text(app), what="GPU 1's instances")
            assert "GPU 1 A30: MIG 2\u00d71g.6gb" in screen_text(app)
            assert "NEAR ITS MEMORY LIMIT" not in screen_text(app)


async def test_absurd_power_is_ignored_named_once_and_counted_in_the_kpis() -> None:
    """A real L4 page with power 1e308 W: power n/a, one event however often it is scraped, KPI count 1."""
    page = L4_CAPTURE.read_text()
    bad = "\n".join(f"{ln.rpartition(' ')[0]} 1e308" if ln.startswith("DCGM_FI_DEV_POWER_USAGE{") else ln
                    for ln in page.splitlines()) + "\n"
    with MetricsNode(bad) as node:
        app = _console(node.url)
        async with app.run_test(size=(200, 60)) as pilot:
            await wait_until(pilot, lambda: len(app.state.rows) == 1, what="the L4")
            start = node.hits
            await wait_until(pilot, lambda: node.hits >= start + 4, what="several more scrapes")
            await wait_until(pilot, lambda: "ignored values 1" in screen_text(app), what="KPI count")
            named = [e for e in _events(app) if "out of range" in e]
            assert len(named) == 1 and "GPU 0: power 1e+308 W out of range, ignored" in named[0]
            (row,) = app.state.rows
            assert row.gpu.power_w is None and row.gpu.temp_c == 31 and row.status == "ok"
            k = app.state.kpis()
            assert (k.ignored_values, k.power_w) == (1, None)
            assert "1e+308" not in screen_text(app).split("\n", 4)[2]  # the KPI strip shows no such number


async def test_a_gpu_less_node_is_a_row_and_counted() -> None:
    """A node that answers with no GPU series (an agent on a GPU-less host) is a row and a KPI, not nothing."""
    gpu_less = ("# HELP surgewatch_host_cpu_pct Host CPU.\n# TYPE surgewatch_host_cpu_pct gauge\n"
                "surgewatch_host_cpu_pct 3\n")
    with MetricsNode(gpu_less) as empty, MetricsNode(L4_CAPTURE.read_text()) as l4:
        app = _console(l4.url, empty.url)
        async with app.run_test(size=(200, 60)) as pilot:
            await wait_until(pilot, lambda: NO_GPU_SERIES in screen_text(app), what="the no-GPU row")
            assert [(r.status, r.placeholder) for r in app.state.rows] == [("ok", False), ("no-gpus", True)]
            k = app.state.kpis()
            assert (k.gpus, k.gpuless_nodes) == (1, 1)
            await wait_until(pilot, lambda: "no-GPU nodes 1" in screen_text(app), what="KPI strip")
            row_line = next(ln for ln in screen_text(app).splitlines() if NO_GPU_SERIES in ln)
            assert f"127.0.0.1:{empty.port}" in row_line and "no-gpus" in row_line


async def test_agent_types_replay_and_remapped_rows_as_counters() -> None:
    """The agent's page types PCIE_REPLAY_COUNTER and the remapped rows `counter`, names kept, as dcgm-exporter."""
    a = Agent("127.0.0.1", 0, interval_s=0.2, nvml=FakeNvml([FakeGpu("GPU-aaaa", remapped=(2, 1, 0, 0), replay=12)]))
    await a.start()
    try:
        async with httpx.AsyncClient() as c:
            text = (await c.get(a.url)).text
    finally:
        await a.stop()
    lines = text.splitlines()
    for name in ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
                 "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"):
        assert f"# TYPE {name} counter" in lines
        assert not any(ln.startswith(f"{name}_total") for ln in lines)
    assert "# TYPE DCGM_FI_DEV_GPU_TEMP gauge" in lines
    replay = next(ln for ln in lines if ln.startswith("DCGM_FI_DEV_PCIE_REPLAY_COUNTER{"))
    assert replay.endswith(" 12") or replay.endswith(" 12.0")
