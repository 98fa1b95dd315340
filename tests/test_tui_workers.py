"""Worker failures land in one handler: shown as events, the source restarted; the editor's form rules."""

from __future__ import annotations

import pynvml
import pytest
from textual.widgets import DataTable

from collectors.gpu import GpuCollector
from collectors.samples import Source
from quotas.model import QuotaError
from surgewatch.settings import Settings
from tests.conftest import L4_CAPTURE
from tests.fakenvml import FakeGpu, FakeNvml
from tui.app import create_app
from tui.screens.editor import parse_form
from tui.testing import screen_text, wait_until


async def test_failing_source_is_reported_and_restarted() -> None:
    """A collector that cannot even be built shows up in the events panel and is retried, the app lives on."""
    built = []

    def broken() -> object:
        built.append(1)
        raise RuntimeError("no such device")

    app = create_app(Settings(interval_s=0.2), sources=["gpus"], collector_factories={"gpus": broken})
    app_restart_floor = 2  # first attempt + at least one restart
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: len(built) >= app_restart_floor, timeout=6, what="restart")
        texts = [e.text for e in app.state.events]
        assert any("gpus worker failed: no such device; restarting in" in t for t in texts), texts
        assert app.is_running


async def test_source_readings_reach_the_table() -> None:
    """The real GpuCollector (NVML faked at pynvml) runs in its worker, on its own thread, and fills the table."""
    nv = FakeNvml([FakeGpu("GPU-0", temp=57, util=42)])
    app = create_app(Settings(interval_s=0.2), sources=[Source.GPUS],
                     collector_factories={Source.GPUS: lambda: GpuCollector(nvml=nv)})
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.overview.query_one("#gpus", DataTable).row_count == 1, what="row")
        (row,) = app.state.rows
        assert (row.node, row.gpu.index, row.gpu.name, row.gpu.temp_c, row.gpu.util_pct) == ("local", 0, "NVIDIA L4",
                                                                                              57.0, 42.0)
        assert "57°C" in screen_text(app)
    assert nv.thread_names and all(n.startswith("nvml") for n in nv.thread_names)  # never the event loop's thread


@pytest.mark.parametrize(
    ("spec", "cap", "for_", "reason", "words"),
    [
        ("3/1x", "none", "", "", "invalid window"),
        ("-1/1d", "none", "", "", "invalid limit"),
        ("1.5/1d", "none", "", "", "invalid limit"),
        ("1000000001/1d", "none", "", "", "invalid limit"),
        ("3/40d", "none", "", "", "between 1s and 31d"),
        ("3", "none", "", "", "LIMIT/WINDOW"),
        ("3/1d", "0", "", "", "invalid tier cap"),
        ("3/1d", "abc", "", "", "invalid tier cap"),
        ("3/1d", "none", "2x", "", "invalid override duration"),
        ("3/1d", "none", "", "two\nlines", "invalid reason"),
    ],
)
def test_form_refuses_what_the_cli_refuses(spec: str, cap: str, for_: str, reason: str, words: str) -> None:
    """The editor's inline validation uses the CLI's rules and words."""
    with pytest.raises(QuotaError, match=words):
        parse_form(spec, cap, False, False, for_, reason)


def test_form_accepts_a_full_override() -> None:
    """A valid form becomes the exact QuotaSpec, duration and reason the store gets."""
    req = parse_form(" 3/1d ", "50", True, False, "2h", " surge ")
    assert (req.spec.limit, req.spec.window_s, req.spec.tier_cap_rps, req.spec.mode, req.for_s, req.reason) == (
        3, 86400, 50, "shadow", 7200, "surge")


async def test_no_gpu_status_is_explained() -> None:
    """When NVML reports no driver, the GPU panel says why and how to watch remote GPUs instead."""
    nv = FakeNvml(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    app = create_app(Settings(interval_s=0.2), sources=[Source.GPUS],
                     collector_factories={Source.GPUS: lambda: GpuCollector(nvml=nv)})
    note = ("local GPUs: NVIDIA driver not loaded (is the kernel module in?). "
            "Give --nodes or --prometheus to watch remote GPUs.")
    async with app.run_test(size=(160, 30)) as pilot:
        await wait_until(pilot, lambda: note in screen_text(app), what="note")
        assert not app.state.rows
    assert nv.init_calls >= 1


def test_misspelt_threshold_is_refused_before_the_screen(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in [thresholds] exits 2 with the name and the known ones, instead of silently using a default."""
    from tui.app import run_console

    assert run_console(Settings(thresholds={"temp_hoot_c": 70.0})) == 2
    err = capsys.readouterr().err
    assert "temp_hoot_c" in err and "temp_hot_c" in err


async def test_no_local_gpus_beside_a_fleet_is_one_short_line() -> None:
    """With remote nodes configured (the demo), the missing local NVML is one short line, not two."""
    from tui.testing import MetricsNode, multiply_page

    nv = FakeNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    page = multiply_page(L4_CAPTURE.read_text(), 2)
    with MetricsNode(page) as node:
        app = create_app(Settings(interval_s=0.2, nodes=(node.url,), node_interval_s=0.3),
                         sources=[Source.GPUS, Source.FLEET],
                         collector_factories={Source.GPUS: lambda: GpuCollector(nvml=nv)})
        async with app.run_test(size=(160, 40)) as pilot:
            note = "local GPUs: no NVML library (remote nodes below)"
            await wait_until(pilot, lambda: note in screen_text(app), what="short note")
            assert "Give --nodes" not in screen_text(app)
            assert sum(note in line for line in screen_text(app).splitlines()) == 1


async def test_a_console_process_freezes_its_startup_heap_once_started() -> None:
    """A console run as a process moves what it built at start out of the cyclic collector's walks, once."""
    import gc

    app = create_app(Settings(interval_s=0.2), sources=[])
    app.freeze_heap_after_s = 0.2  # run_console's FREEZE_HEAP_AFTER_S, shortened
    frozen_before = gc.get_freeze_count()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: gc.get_freeze_count() > frozen_before, timeout=10, what="gc.freeze")
    finally:
        gc.unfreeze()  # this is a test process: its other tests' garbage must stay collectable
