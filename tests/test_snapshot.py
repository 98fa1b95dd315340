"""`surgewatch snapshot`: every source once, JSON keys as the issue fixes them, exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pynvml
import redis.asyncio as aioredis

from quotas.keys import Keys
from quotas.library import load_library
from sim.valkey import ValkeyProcess, free_port
from surgewatch.snapshot import GPU_KEYS, render_text, take_snapshot
from tests.conftest import ROOT
from tests.fakenvml import FakeGpu, FakeNvml
from tests.test_fleet_collector import LoopbackNode

TIER_KEYS = {"tier", "limit", "window_s", "tier_cap_rps", "paused", "mode", "version", "accepted_rps",
             "rejected_rps", "accepted_1m", "rejected_1m", "rejected_by_reason_1m", "state", "quota_error",
             "master"}


async def _seed(r: aioredis.Redis) -> None:
    k = Keys()
    await load_library(r)  # what gateways call: without it the snapshot names library_missing
    await r.sadd(k.tiers, "free")
    await r.hset(k.quota("free"), mapping={
        "limit": 3, "window_s": 86400, "tier_cap_rps": "", "paused": 0, "mode": "shadow", "expires_at": "",
        "version": 9, "updated_by": "alice", "updated_at": 1_700_000_000, "prev": "",
        "enforced": "3|86400||0|shadow|"})  # what the limiter reads, written with the fields
    secs, _ = await r.time()
    sec = int(secs) - 3
    await r.hset(k.counters("free", sec // 60), mapping={f"{sec % 60}:accepted": 20, f"{sec % 60}:user_quota": 6})


async def _cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "surgewatch.cli", *argv, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_snapshot_document_with_every_source(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """Local fake GPUs, an L4 node, a dead node and Redis counters all land under the contract's keys."""
    await _seed(redis_client)
    node = await LoopbackNode().start()
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    nv = FakeNvml([FakeGpu("GPU-local", temp=83, reasons=pynvml.nvmlClocksEventReasonSwPowerCap)])
    try:
        doc = await take_snapshot(redis_url=valkey.url, prefix="surgewatch:", nodes=[node.url, dead],
                                  prometheus=None, local=True, nvml=nv)
    finally:
        await node.stop()
    assert set(doc) == {"taken_at", "host", "errors", "nodes", "gpus", "tiers", "redis", "unknown_tiers", "serving"}
    assert doc["unknown_tiers"] == []
    assert doc["taken_at"].endswith("Z") and doc["errors"] == {}
    assert doc["host"]["hostname"] and doc["host"]["mem_total_mib"] > 0
    assert [n["status"] for n in doc["nodes"]] == ["up", "down"]
    up, down = doc["nodes"]
    assert set(up) == {"url", "status", "error", "latency_ms", "gpus", "warnings", "last_seen"}  # + issue 12
    assert up["gpus"] == 1 and up["error"] is None and up["warnings"] == [] and up["last_seen"] is None
    assert down["error"].startswith("cannot connect") and down["gpus"] == 0 and down["latency_ms"] is None
    assert [g["node"] for g in doc["gpus"]] == ["local", node.url]
    assert all(list(g) == list(GPU_KEYS) for g in doc["gpus"])
    loc, l4 = doc["gpus"]
    assert (loc["temp_c"], loc["throttle"], loc["status"], loc["xid"]) == (83, ["power_cap"], "ok", None)
    assert (l4["name"], l4["temp_c"], l4["power_w"], l4["temp_slowdown_c"]) == ("NVIDIA L4", 31, 16.365, None)
    (tier,) = doc["tiers"]
    assert set(tier) == TIER_KEYS
    assert (tier["tier"], tier["limit"], tier["window_s"], tier["mode"], tier["version"]) == (
        "free",
        3,
        86400,
        "shadow",
        9,
    )
    assert (tier["accepted_rps"], tier["rejected_rps"], tier["accepted_1m"], tier["rejected_1m"]) == (2.0, 0.6, 20, 6)
    assert tier["rejected_by_reason_1m"]["user_quota"] == 6
    assert (tier["state"], tier["quota_error"], doc["redis"]) == ("active", None, {"status": "ok", "error": None})
    json.dumps(doc)  # serialisable as is
    text = render_text(doc)
    assert "NVIDIA L4" in text and "free" in text and "cannot connect" in text
    assert "3/1d" in text and "86400s" not in text  # the window as operators write it


async def test_no_local_and_failing_sources_are_reported_not_fatal() -> None:
    """--no-local gives host null; an unreachable Redis and a Prometheus that is down become errors."""
    port = free_port()
    doc = await take_snapshot(redis_url=f"redis://:hunter2@127.0.0.1:{port}/0", prefix="surgewatch:", nodes=[],
                              prometheus=f"http://127.0.0.1:{free_port()}", local=False)
    assert doc["host"] is None and doc["gpus"] == [] and doc["tiers"] == []
    # the dead Prometheus is also where the inference servers' figures come from: both name it
    assert set(doc["errors"]) == {"traffic", "prometheus", "serving"} and doc["serving"] is None
    assert "hunter2" not in json.dumps(doc)


async def test_local_without_driver_reports_gpu_error() -> None:
    """With no NVIDIA driver the snapshot still runs and says why there are no local GPUs."""
    nv = FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    doc = await take_snapshot(redis_url=None, prefix="surgewatch:", nodes=[], prometheus=None, local=True, nvml=nv)
    assert "driver not loaded" in doc["errors"]["gpu"].lower() and doc["host"] is not None


async def test_cli_json_exit_0_with_subcommand_options(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """`surgewatch snapshot --json --no-local --nodes A,B --redis URL` prints the document and exits 0."""
    await _seed(redis_client)
    node = await LoopbackNode().start()
    try:
        dead = f"http://127.0.0.1:{free_port()}"
        code, out, err = await _cli("snapshot", "--json", "--no-local", "--nodes", f"{node.url},{dead}",
                                    "--redis", valkey.url)
    finally:
        await node.stop()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["host"] is None and [n["status"] for n in doc["nodes"]] == ["up", "down"]
    assert doc["nodes"][1]["url"] == f"{dead}/metrics"  # a bare host:port gets dcgm-exporter's path
    assert doc["tiers"][0]["tier"] == "free"


async def test_cli_global_options_and_node_file(tmp_path: Path, valkey: ValkeyProcess) -> None:
    """Global --redis before the subcommand and `--nodes @FILE` with comments work; the table prints."""
    node = await LoopbackNode().start()
    nodes_file = tmp_path / "nodes.txt"
    nodes_file.write_text(f"# fleet\n{node.url}  # gpu-01\n\n")
    try:
        code, out, err = await _cli("--redis", valkey.url, "snapshot", "--no-local", "--nodes", f"@{nodes_file}")
    finally:
        await node.stop()
    assert code == 0, err
    assert "NVIDIA L4" in out and "STATUS" in out


async def test_cli_bad_input_exits_2() -> None:
    """A bad node URL, a missing node file or a bad Redis URL: exit 2 with what is accepted, no password shown."""
    code, _, err = await _cli("snapshot", "--no-local", "--nodes", "ftp://x,http://ok:9400")
    assert code == 2 and "http://" in err
    code, _, err = await _cli("snapshot", "--no-local", "--nodes", "@/nonexistent/nodes.txt")
    assert code == 2 and "cannot read node list" in err
    code, _, err = await _cli("snapshot", "--no-local", "--redis", "mysql://u:topsecret@h/0")
    assert code == 2 and "topsecret" not in err and "redis" in err


async def test_a_node_list_naming_no_node_exits_2(tmp_path: Path) -> None:
    """`--nodes ''` (global or the subcommand's) and a comments-only @FILE exit 2 saying no node is named."""
    comments = tmp_path / "nodes.txt"
    comments.write_text("# gpu-01 retired\n\n")
    for argv in (("--nodes", "", "snapshot", "--no-local"), ("snapshot", "--no-local", "--nodes", ""),
                 ("--nodes", f"@{comments}", "snapshot", "--no-local")):
        code, out, err = await _cli(*argv)
        assert code == 2 and "names no node" in err and out == "", argv


async def test_snapshot_reads_the_fleet_as_the_console_plans_it() -> None:
    """Given --nodes and --prometheus, snapshot reads the fleet from Prometheus only, as the console does."""
    dead = f"http://127.0.0.1:{free_port()}"
    doc = await take_snapshot(redis_url=None, prefix="surgewatch:", nodes=[f"{dead}/metrics"], prometheus=dead,
                              local=False)
    assert "prometheus" in doc["errors"] and "fleet" not in doc["errors"]
    assert doc["nodes"] == []
