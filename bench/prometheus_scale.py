"""Benchmark: Prometheus mode at 1,250 nodes x 8 GPUs = 10,000 GPUs, beside the 1,024-GPU direct case.

    .venv/bin/python bench/prometheus_scale.py [--nodes 1250] [--gpus 8] [--seconds 40] [--warmup 20]
                                               [--direct-nodes 128] [--skip-direct]

What runs (all on 127.0.0.1):
- a fake Prometheus in a process of its own: `/api/v1/query` and `/api/v1/targets` answered with the
  JSON shapes the real Prometheus gives (a `vector` of `{"metric": {labels}, "value": [ts, "text"]}`;
  `activeTargets` with `labels`, `health`, `lastError`, `scrapeUrl`), for NODES targets of one job,
  each a dcgm-exporter page of GPUS GPUs (the real L4 capture's series and labels, multiplied), whose
  values move every 15 s (a common scrape interval); the answers are rendered once per 15 s;
- one refresh in-process: PrometheusFleetCollector.poll() (query, decode, build every GPU sample),
  wall time and CPU time, median of 5;
- `surgewatch snapshot --json --no-local --prometheus URL` once: wall time and peak RSS;
- `surgewatch --prometheus URL --interval 1` in a 200x60 tmux window: CPU % of one core and peak RSS
  over SECONDS after WARMUP; then, in the same run, the 1,024-GPU direct-scrape case
  (`--nodes @FILE`, 128 loopback dcgm-exporter pages of 8 GPUs, bench/console.py's node servers)
  measured the same way, for the ratio the issue's target is stated in.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PY = sys.executable
SCRAPE_S = 15.0
# the L4 capture's series: (name, value range) — moving ones change every SCRAPE_S
SERIES = [
    ("DCGM_FI_DEV_SM_CLOCK", (210, 2040)), ("DCGM_FI_DEV_MEM_CLOCK", (405, 405)),
    ("DCGM_FI_DEV_MEMORY_TEMP", (0, 0)), ("DCGM_FI_DEV_GPU_TEMP", (30, 88)),
    ("DCGM_FI_DEV_POWER_USAGE", (15, 72)), ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", (4e6, 5e6)),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", (0, 0)), ("DCGM_FI_DEV_GPU_UTIL", (0, 100)),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", (0, 60)), ("DCGM_FI_DEV_ENC_UTIL", (0, 0)), ("DCGM_FI_DEV_DEC_UTIL", (0, 0)),
    ("DCGM_FI_DEV_FB_FREE", (500, 22000)), ("DCGM_FI_DEV_FB_USED", (500, 22000)),
    ("DCGM_FI_DEV_FB_RESERVED", (470, 470)), ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", (0, 0)),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", (0, 0)), ("DCGM_FI_DEV_ROW_REMAP_FAILURE", (0, 0)),
    ("DCGM_FI_DEV_VGPU_LICENSE_STATUS", (0, 0)), ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", (0, 1)),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", (0, 1)), ("DCGM_FI_PROF_DRAM_ACTIVE", (0, 1)),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", (0, 1e6)), ("DCGM_FI_PROF_PCIE_RX_BYTES", (0, 1e6)),
]


def _answers(nodes: int, gpus: int, period: int, wanted: set[str] | None) -> tuple[bytes, bytes, list[Any]]:
    """(query answer, targets answer, the answer's result list) as Prometheus writes them, for one period."""
    rng = random.Random(period)
    ts = period * SCRAPE_S
    result: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    for n in range(nodes):
        inst = f"10.{n // 250}.{n % 250}.1:9400"
        targets.append({"discoveredLabels": {"__address__": inst}, "labels": {"instance": inst, "job": "gpu"},
                        "scrapePool": "gpu", "scrapeUrl": f"http://{inst}/metrics", "globalUrl": f"http://{inst}/metrics",
                        "lastError": "", "lastScrape": "2026-12-01T00:00:00Z", "lastScrapeDuration": 0.01,
                        "health": "up", "scrapeInterval": "15s", "scrapeTimeout": "10s"})
        result.append({"metric": {"__name__": "up", "instance": inst, "job": "gpu"}, "value": [ts, "1"]})
        for g in range(gpus):
            labels = {"gpu": str(g), "UUID": f"GPU-{n:05d}-{g:02d}-c2f76b33-7953-256e-8f33-1343",
                      "pci_bus_id": f"00000000:{g + 0x31:02X}:00.0", "device": f"nvidia{g}", "modelName": "NVIDIA L4",
                      "Hostname": f"gpu-{n:05d}", "DCGM_FI_DRIVER_VERSION": "580.105.08", "instance": inst,
                      "job": "gpu"}
            for name, (lo, hi) in SERIES:
                if wanted is not None and name not in wanted:
                    continue
                v = rng.uniform(lo, hi) if hi > lo else lo
                result.append({"metric": {"__name__": name, **labels}, "value": [ts, f"{v:.6g}"]})
    q = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
    t = json.dumps({"status": "success", "data": {"activeTargets": targets, "droppedTargets": []}}).encode()
    return q, t, result


def _vector(result: list[Any]) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


_BY_GPU_CACHE: dict[int, Any] = {}


def _by_gpu(result: list[Any]) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """The period's values by instance and GPU, computed once per period (as Prometheus' index is
    built at ingestion, not per query)."""
    hit = _BY_GPU_CACHE.get(id(result))
    if hit is not None:
        return hit
    by_inst: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
    for item in result:
        m = item["metric"]
        if m["__name__"] == "up":
            continue
        gpu = by_inst.setdefault(m["instance"], {}).setdefault((m["gpu"], m["UUID"]), {})
        gpu[m["__name__"]] = float(item["value"][1])
    _BY_GPU_CACHE.clear()
    _BY_GPU_CACHE[id(result)] = by_inst
    return by_inst


def answer_query(query: str, result: list[Any]) -> bytes | None:
    """The answers Prometheus gives to the windowed console's queries (collectors.prometheus_window),
    computed from the same series; None for a query this fake does not evaluate (the selector)."""
    import re

    from collectors.prometheus_window import AGG_LABEL, counts_query

    ts = result[0]["value"][0] if result else 0
    by_inst = _by_gpu(result)

    def vec(metric: dict[str, str], v: float) -> dict[str, Any]:
        return {"metric": metric, "value": [ts, f"{v:.6g}"]}

    if query == counts_query():
        return _vector([vec({"instance": i, "job": "gpu"}, len(g)) for i, g in by_inst.items()])
    if query == "up":
        return _vector([r for r in result if r["metric"]["__name__"] == "up"])
    temps = {i: [g["DCGM_FI_DEV_GPU_TEMP"] for g in gs.values()] for i, gs in by_inst.items()}
    if query.startswith("label_replace(count("):
        hot = float(re.search(r'>= ([0-9.]+)\), "' + AGG_LABEL + '", "hot"', query).group(1))  # type: ignore[union-attr]  # the fake Prometheus only receives the queries it builds itself
        t = [v for vs in temps.values() for v in vs]
        u = [g["DCGM_FI_DEV_GPU_UTIL"] for gs in by_inst.values() for g in gs.values()]
        p = [g["DCGM_FI_DEV_POWER_USAGE"] for gs in by_inst.values() for g in gs.values()]
        named = {"util_n": len(u), "util_mean": sum(u) / len(u), "util_max": max(u), "temp_n": len(t),
                 "temp_mean": sum(t) / len(t), "temp_max": max(t), "power": sum(p),
                 "hot": sum(1 for v in t if v >= hot), "xid": 0}
        return _vector([vec({AGG_LABEL: k}, v) for k, v in named.items() if k != "xid"])
    if query.startswith('count_values("mask"'):
        return _vector([])  # no throttle series in the L4 capture
    if query.startswith("count(group by"):
        hot = float(re.search(r"\) >= ([0-9.]+)\)", query).group(1))  # type: ignore[union-attr]  # the fake Prometheus only receives the queries it builds itself
        return _vector([vec({}, sum(1 for vs in temps.values() for v in vs if v >= hot))])
    if query.startswith("topk("):
        k = int(query[5:query.index(",")])
        worst = sorted(temps, key=lambda i: max(temps[i]), reverse=True)[:k]
        return _vector([vec({"instance": i}, max(temps[i])) for i in worst])
    if 'instance=~"' in query:
        wanted = set(query.split('instance=~"', 1)[1].split('"', 1)[0].replace("\\", "").split("|"))
        return _vector([r for r in result if r["metric"]["instance"] in wanted and r["metric"]["__name__"] != "up"])
    return None


def fake_prometheus(nodes: int, gpus: int, port_file: str) -> None:
    """The fake Prometheus process: answers re-rendered every SCRAPE_S, served as they are."""
    from collectors.dcgm import USED_METRICS

    wanted = set(USED_METRICS)  # a selector query gets only the series it names (as Prometheus does)
    state: dict[str, object] = {}

    def render() -> None:
        period = int(time.time() // SCRAPE_S)
        if state.get("period") != period:
            q, t, result = _answers(nodes, gpus, period, wanted)
            _by_gpu(result)
            state.update(period=period, query=q, targets=t, result=result)

    render()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/api/v1/targets":
                self._send(state["targets"])  # type: ignore[arg-type]  # state holds bytes for these keys
            else:
                self._send(state["query"])  # type: ignore[arg-type]  # state holds bytes for these keys

        def do_POST(self) -> None:  # the windowed console's queries; history queries: nothing is down here
            n = int(self.headers.get("Content-Length") or 0)
            query = (parse_qs(self.rfile.read(n).decode()).get("query") or [""])[0]
            body = answer_query(query, state["result"])  # type: ignore[arg-type]  # state holds the decoded series for this key
            self._send(body or b'{"status":"success","data":{"resultType":"vector","result":[]}}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_port))

    def refresher() -> None:
        while True:
            time.sleep(1.0)
            render()

    threading.Thread(target=refresher, daemon=True).start()
    server.serve_forever()


async def one_refresh(url: str, rounds: int = 5, *, windowed: bool = False) -> tuple[float, float, int, int]:
    """(median wall s, median CPU s, GPUs built, answer bytes) of one refresh in this process: every GPU
    (as a one-shot snapshot), or `windowed` as the console does it (aggregates and the worst nodes)."""
    import httpx

    from collectors.prometheus import PrometheusFleetCollector
    from collectors.prometheus_window import FleetWindow
    from surgewatch.kpis import throttled_reasons
    from surgewatch.thresholds import Thresholds

    walls, cpus, gpus = [], [], 0
    for _ in range(rounds):
        window = FleetWindow(hot_c=Thresholds().temp_hot_c, throttled=throttled_reasons) if windowed else None
        c = PrometheusFleetCollector(url, timeout_s=30, window=window)
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            s = await c.poll()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            gpus = sum(len(n.gpus) for n in s.nodes)
        finally:
            await c.aclose()
    async with httpx.AsyncClient(timeout=30) as h:
        size = len((await h.get(f"{url}/api/v1/query", params={"query": "x"})).content)
    return statistics.median(walls), statistics.median(cpus), gpus, size


def snapshot_once(url: str) -> tuple[float, float, int]:
    """(wall s, peak RSS MB, GPUs) of `surgewatch snapshot --json --no-local --prometheus URL`."""
    t0 = time.perf_counter()
    p = subprocess.run([PY, "-m", "surgewatch.cli", "snapshot", "--json", "--no-local", "--prometheus", url],
                       capture_output=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    try:
        gpus = len(json.loads(p.stdout)["gpus"])
    except (ValueError, KeyError):
        gpus = -1
    return wall, rss, gpus


def wait_for(ready: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll `ready` until it holds or `timeout_s` passes: a helper that died must fail the run, not hang it."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if ready():
            return True
        time.sleep(0.2)
    return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="")
    ap.add_argument("--nodes", type=int, default=1250)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--warmup", type=float, default=20)
    ap.add_argument("--direct-nodes", type=int, default=128)
    ap.add_argument("--skip-direct", action="store_true")
    ap.add_argument("--port-file", default="")
    a = ap.parse_args()
    if a.role == "prometheus":
        fake_prometheus(a.nodes, a.gpus, a.port_file)
        return 0
    from console import Measured, measure_in_tmux, not_measured  # bench/console.py

    tmp = Path(tempfile.mkdtemp(prefix="swpromscale-"))
    port_file = tmp / "port"
    fake = subprocess.Popen([PY, __file__, "--role", "prometheus", "--nodes", str(a.nodes), "--gpus", str(a.gpus),
                             "--port-file", str(port_file)])
    procs = [fake]
    try:
        if not wait_for(lambda: port_file.exists() and bool(port_file.read_text())):
            print("the fake Prometheus did not start within 30 s: nothing measured")
            return 1
        failed: list[str] = []
        url = f"http://127.0.0.1:{port_file.read_text()}"
        gpus = a.nodes * a.gpus
        print(f"setup: fake Prometheus, {a.nodes} targets x {a.gpus} GPUs = {gpus} GPUs, values moving every "
              f"{SCRAPE_S:g} s", flush=True)
        wall, cpu, got, size = asyncio.run(one_refresh(url))
        print(f"one refresh in-process, every GPU (query, decode, build {got} GPUs; {size / 1e6:.1f} MB answer): "
              f"{wall:.2f} s wall, {cpu:.2f} s CPU (median of 5)", flush=True)
        wall, cpu, got, _ = asyncio.run(one_refresh(url, windowed=True))
        print(f"one refresh in-process, windowed as the console (aggregates of {gpus} GPUs, {got} GPUs built): "
              f"{wall:.2f} s wall, {cpu:.2f} s CPU (median of 5)", flush=True)
        s_wall, s_rss, s_gpus = snapshot_once(url)
        print(f"snapshot --prometheus: {s_wall:.2f} s wall, {s_rss:.0f} MB peak RSS, {s_gpus} GPUs", flush=True)
        if s_gpus != gpus:
            failed.append(f"snapshot --prometheus read {s_gpus} GPUs of {gpus}")
        env = {"SURGEWATCH_CONFIG": str(tmp / "none.toml")}
        cmd = f"{PY} -m surgewatch.cli --prometheus {url} --interval 1"
        p_cpu, p_rss, screen = measure_in_tmux("prom", cmd, a.seconds, a.warmup, env)
        shown = "NVIDIA" in screen or " L4 " in screen
        print(f"console --prometheus (tmux 200x60): {p_cpu:.2f} % of one core, {p_rss:.1f} MB RSS "
              f"(GPU rows on screen: {'yes' if shown else 'no'})", flush=True)
        why = not_measured(Measured(p_cpu, p_rss, shown))
        if why:
            failed.append(f"console --prometheus: {why}")
        if not a.skip_direct:
            nodes_file = tmp / "nodes.txt"
            servers = subprocess.Popen([PY, str(ROOT / "bench" / "console.py"), "--role", "nodes", "--nodes",
                                        str(a.direct_nodes), "--gpus", str(a.gpus), "--arg", str(nodes_file),
                                        "--arg", "30"], cwd=ROOT)
            procs.append(servers)
            if not wait_for(lambda: nodes_file.exists() and len(nodes_file.read_text().split()) >= a.direct_nodes):
                print(f"the {a.direct_nodes} node servers did not start within 30 s: the direct console not measured")
                return 1
            cmd = f"{PY} -m surgewatch.cli --nodes @{nodes_file} --interval 1"
            d_cpu, d_rss, d_screen = measure_in_tmux("direct", cmd, a.seconds, a.warmup, env)
            why = not_measured(Measured(d_cpu, d_rss, "NVIDIA" in d_screen or " L4 " in d_screen))
            if why:
                failed.append(f"console --nodes: {why}")
            print(f"console --nodes, {a.direct_nodes * a.gpus} GPUs direct (tmux 200x60): {d_cpu:.2f} % of one core, "
                  f"{d_rss:.1f} MB RSS", flush=True)
            print(f"ratio CPU prometheus/direct: x{p_cpu / max(d_cpu, 0.01):.2f}")
        for what in failed:
            print(f"NOT MEASURED: {what}")
        return 1 if failed else 0
    finally:
        from console import stop_all  # bench/console.py (bench/tmux_measure.py)

        stop_all(procs)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    sys.exit(main())
