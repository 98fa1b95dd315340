"""Hostile outside text (exporter labels, a node's garbage page, audit actors and reasons written into Redis by
hand) reaches no view raw: the console, `snapshot`'s table and --json, and a recording's replay show the
visible `\\x1b` form, never ESC or BEL."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from collectors.fleet import FleetCollector
from collectors.prometheus import read_targets
from collectors.runner import Runner
from collectors.samples import Source
from quotas.keys import Keys
from quotas.safe import MAX_CHARS, safe
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from surgewatch.recording.writer import Recorder
from surgewatch.settings import Settings
from tests.conftest import L4_CAPTURE, ROOT
from tui.app import create_app
from tui.testing import MetricsNode, screen_text, wait_until

HOSTILE = "A\x1b]2;PWNED\x07B\x1b[8mHIDDEN"
SHOWN = "A\\x1b]2;PWNED\\x07B\\x1b[8mHIDDEN"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")


def hostile_page() -> str:
    """The real L4 capture with its modelName label replaced by an escape sequence."""
    page = L4_CAPTURE.read_text()
    assert 'modelName="NVIDIA L4"' in page
    return page.replace('modelName="NVIDIA L4"', f'modelName="{HOSTILE}"')


GARBAGE = f"bogus{HOSTILE} not prometheus\n"


def assert_clean(text: str) -> None:
    for c in RAW:
        assert c not in text, f"{c!r} reached the view: {text[:400]!r}"


def test_every_control_and_escape_is_made_visible_and_bounded() -> None:
    """C0, DEL, C1, bidi overrides and lone surrogates come out as escapes; the result is bounded and stable."""
    assert safe(HOSTILE) == SHOWN
    assert safe("a\x00b\x7fc\x9bd\u202ee\ud800\n") == "a\\x00b\\x7fc\\x9bd\\u202ee\\ud800\\x0a"
    assert safe("NVIDIA L4 · 24 GB") == "NVIDIA L4 · 24 GB"
    long = safe("\x1b" * 10_000)
    assert len(long) == MAX_CHARS and long.endswith("…") and safe(long) == long
    assert safe(None) == "None" and safe(3) == "3"


async def _hostile_audit(r: aioredis.Redis) -> None:
    """A quota change whose actor and reason were XADDed by hand, announced on the events channel."""
    k = Keys()
    now_ms = int(time.time() * 1000)
    await r.xadd(k.audit("plus"), {"actor": HOSTILE, "at": str(now_ms), "tier": "plus", "version": "2", "old": "",
                                   "new": "", "reason": f"why {HOSTILE}", "kind": "set", "at_us": str(now_ms * 1000)})
    await r.xadd(k.audit("pro"), {"actor": "ops", "at": str(now_ms), "tier": f"pro{HOSTILE}", "version": "2",
                                  "old": "", "new": "", "reason": "renamed by hand", "kind": "set",
                                  "at_us": str(now_ms * 1000 + 1)})
    await r.publish(k.events, json.dumps({"tier": "plus", "version": 2, "actor": HOSTILE, "kind": "set"}))
    await r.publish(k.events, json.dumps({"tier": "pro", "version": 2, "actor": "ops", "kind": "set"}))


async def test_console_shows_hostile_labels_errors_and_audit_entries_visibly(
    valkey: ValkeyProcess, redis_client: aioredis.Redis
) -> None:
    """The console's screen never holds ESC or BEL from a label, a node's garbage page or an audit entry."""
    await QuotaStore(redis_client).init()
    with MetricsNode(hostile_page()) as node, MetricsNode(GARBAGE) as junk:
        settings = Settings(redis_url=valkey.url, nodes=(node.url, junk.url), interval_s=0.2, node_interval_s=0.3)
        app = create_app(settings, sources=("fleet", "traffic"), actor="tester")
        async with app.run_test(size=(200, 60)) as pilot:
            await wait_until(pilot, lambda: "\\x1b" in screen_text(app) and "not Prometheus" in screen_text(app),
                             what="the label and the garbage node's error shown")
            await wait_until(pilot, lambda: "plus" in app.state.quotas, what="quotas loaded")
            await _hostile_audit(redis_client)
            # the events panel wraps its lines: read the lines it shows, joined as the operator reads them
            await wait_until(pilot, lambda: any("why A\\x1b]2;PWNED" in t for t in _events(app)),
                             what="the audit entry shown")
            await wait_until(pilot, lambda: any("quota proA\\x1b]2;PWNED" in t for t in _events(app)),
                             what="the tier shown")
            assert_clean(screen_text(app))
            assert "A\\x1b]2;PWNED" in screen_text(app)


def _events(app: Any) -> list[str]:
    """The events panel's lines, whole (the widget's own text of what it shows)."""
    from tui.widgets.events_log import EventLog

    return list(app.overview.query_one("#events", EventLog).texts)


async def test_quota_history_table_and_json_show_hostile_audit_entries_visibly(
    valkey: ValkeyProcess, redis_client: aioredis.Redis
) -> None:
    """`quota history`: an actor, a reason and a tier XADDed by hand come out in their visible form."""
    await QuotaStore(redis_client).init()
    await _hostile_audit(redis_client)
    code, table, err = await _cli("--redis", valkey.url, "quota", "history")
    assert code == 0, err
    assert_clean(table + err)
    assert "why A\\x1b]2;PWNED" in table and "proA\\x1b]2;PWNED" in table
    code, out, err = await _cli("--redis", valkey.url, "quota", "history", "--json")
    assert code == 0, err
    entries = json.loads(out)
    assert_clean(json.dumps(entries, ensure_ascii=False))
    assert SHOWN in {e["actor"] for e in entries} and f"pro{SHOWN}" in {e["tier"] for e in entries}


def test_prometheus_last_error_is_made_visible_where_it_enters() -> None:
    """A target's `lastError` (Prometheus quotes what the exporter served) is read in its visible form."""
    doc = {"status": "success", "data": {"activeTargets": [
        {"labels": {"instance": "10.0.0.5:9400", "job": "gpu"}, "health": "down", "lastError": f"bad {HOSTILE}"}]}}
    (target,) = read_targets(doc).values()
    assert target.last_error == f"bad {SHOWN}"


async def _cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "surgewatch.cli", *argv, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_snapshot_table_and_json_show_hostile_text_visibly() -> None:
    """`snapshot`'s table and --json carry the label and the node's error in their visible form."""
    with MetricsNode(hostile_page()) as node, MetricsNode(GARBAGE) as junk:
        code, table, err = await _cli("snapshot", "--no-local", "--nodes", f"{node.url},{junk.url}")
        assert code == 0, err
        assert_clean(table + err)
        assert "A\\x1b]2;PWNED" in table
        code, out, err = await _cli("snapshot", "--json", "--no-local", "--nodes", f"{node.url},{junk.url}")
    assert code == 0, err
    doc = json.loads(out)
    assert {g["name"] for g in doc["gpus"]} == {SHOWN}
    assert_clean(json.dumps(doc, ensure_ascii=False))
    assert "bogusA\\x1b]2;PWNED" in doc["nodes"][1]["error"]


async def test_recording_and_replay_keep_hostile_text_visible(tmp_path: Path) -> None:
    """A recording made from a hostile node replays (--json and --info) with the visible form only."""
    path = tmp_path / "hostile.sqlite"
    with MetricsNode(hostile_page()) as node, MetricsNode(GARBAGE) as junk:
        collector = FleetCollector([node.url, junk.url], min_interval_s=0.0, wait_s=5.0)
        runner = Runner(collector, interval_s=1.0, timeout_s=5.0)
        rec = Recorder(path)
        try:
            for _ in range(2):
                reading = await runner.poll_once()
                rec.reading(Source.FLEET, reading)
                await asyncio.sleep(1.0)
        finally:
            rec.close()
            await collector.aclose()
    code, out, err = await _cli("replay", str(path), "--json")
    assert code == 0, err
    assert_clean(out + err)
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs and all({g["name"] for g in d["gpus"]} == {SHOWN} for d in docs)
    assert "bogusA\\x1b]2;PWNED" in docs[-1]["nodes"][1]["error"]


async def test_an_inference_servers_hostile_model_name_is_made_visible_where_it_enters() -> None:
    """The real vLLM page with an escape sequence as model_name: the serving collector's model shows it visibly."""
    from collectors.serving import ServingCollector
    from tests.conftest import FIXTURES

    page = (FIXTURES / "vllm-datadog.prom").read_text()
    assert 'model_name="facebook/opt-125m"' in page
    with MetricsNode(page.replace('model_name="facebook/opt-125m"', f'model_name="{HOSTILE}"')) as node:
        collector = ServingCollector([node.url], timeout_s=2.0, min_interval_s=0)
        try:
            sample = await collector.poll()
        finally:
            await collector.aclose()
    models = [m.model for m in sample.models]
    assert SHOWN in models, models
    assert_clean(" ".join(models) + " ".join(r.url for r in sample.replicas))
