"""Inference servers in `snapshot --json` (the `serving` key), in a recording, and on replay's screen."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path

from collectors.runner import Reading
from collectors.samples import Source
from surgewatch.recording.documents import document
from surgewatch.recording.reader import Recording
from surgewatch.recording.writer import Recorder
from surgewatch.settings import Settings
from tests.conftest import ROOT
from tests.test_serving_collector import Clock, collector, vllm_page
from tui.app import create_app
from tui.replay import Player
from tui.testing import MetricsNode, screen_text, wait_until


def busy_server() -> MetricsNode:
    """A vLLM server that finishes 10 requests between two reads, all in (2.5 s, 5 s]; 1 aborted; 7 waiting."""
    n = itertools.count()

    def page() -> str:
        k = next(n) * 10
        return vllm_page(model="img", stop=k, abort=k // 10, waiting=7, running=3, kv=0.5,
                         e2e=(0, 0, k, k, k), ttft=(k, k, k, k), queue=(k, k))
    return MetricsNode(page)


async def test_snapshot_json_has_a_serving_key_with_each_models_figures_and_why_one_is_missing() -> None:
    """`snapshot --json --servers` reads each server twice: the model's queue and p99, a dead server named."""
    with busy_server() as server, MetricsNode("") as dead:
        dead.stop()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "surgewatch.cli", "snapshot", "--json", "--no-local", "--servers",
            f"{server.url},{dead.url}", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    serving = doc["serving"]
    assert serving["source"] == "scrape"
    (model,) = serving["models"]
    assert model["model"] == "img" and model["replicas_up"] == 1 and model["replicas_total"] == 1
    assert model["waiting"] == 7 and model["kv_cache_pct"] == 50
    # 10 requests in (2.5, 5]: p99 = 2.5 + 0.99 * 2.5 (histogram_quantile's linear rule)
    assert abs(model["e2e_p99_s"] - 4.975) < 1e-9
    assert model["failures_by_reason_per_s"]["abort"] > 0
    assert [r["status"] for r in serving["replicas"]] == ["up", "down"]
    assert serving["replicas"][1]["error"]


async def test_the_recorder_keeps_serving_readings_and_replay_shows_the_panel(tmp_path: Path) -> None:
    """Readings of a real server recorded second by second come back in the recorded document and on screen."""
    clock = Clock()
    t0 = clock.t
    path = tmp_path / "r.sqlite"
    with busy_server() as server:
        c = collector([server.url], clock)
        rec = Recorder(path, clock=clock, flush_s=0.01)
        try:
            for _ in range(4):
                clock.t += 5
                sample = await c.poll()
                rec.reading(Source.SERVING, Reading("serving", sample, clock.t, None, 0, clock.t + 1))
        finally:
            rec.close()
            await c.aclose()
    recording = Recording(path)
    state = recording.state_at(t0 + 20)
    doc = document(t0 + 20, state.readings)
    assert doc["serving"]["models"][0]["waiting"] == 7
    assert abs(doc["serving"]["models"][0]["e2e_p99_s"] - 4.975) < 1e-9
    app = create_app(Settings(), replay=Player(recording), tick_s=None)
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: " img " in screen_text(app), what="the recorded model in the Service panel")
        assert "Service" in screen_text(app)
    recording.close()
