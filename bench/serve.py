"""`surgewatch serve` with 1 and with 5 headless viewers in the same run: the CPU of the whole serve process
tree and the scrape rate at the nodes. The peer is the one-viewer run; a collection per viewer (textual-serve's
design: one app process per browser tab) would multiply both by five.

    .venv/bin/python bench/serve.py [--nodes 16] [--gpus 8] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tui.testing import MetricsNode, multiply_page

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "tests" / "fixtures" / "dcgm-exporter-V100.prom").read_text()
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
TOKEN = "bench-token"


def tree_cpu_s(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure(proc: psutil.Process, nodes: list[MetricsNode], seconds: float) -> tuple[float, float]:
    """(% of a core used by the serve tree, scrapes per second per node) over `seconds`."""
    cpu0, hits0, t0 = tree_cpu_s(proc), sum(n.hits for n in nodes), time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return 100 * (tree_cpu_s(proc) - cpu0) / dt, (sum(n.hits for n in nodes) - hits0) / dt / len(nodes)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    nodes = [MetricsNode(multiply_page(PAGE, args.gpus)).start() for _ in range(args.nodes)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "surgewatch.cli", "--nodes", ",".join(n.url for n in nodes), "serve",
           "--port", str(port)]
    # the token in the environment, as `serve --help` advises (a --token shows in `ps`)
    serve = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "SURGEWATCH_NODE_INTERVAL": "1", "SURGEWATCH_SERVE_TOKEN": TOKEN})
    try:
        proc = psutil.Process(serve.pid)
        time.sleep(5)  # started, first scrapes done
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            pages = []

            def open_viewer() -> None:
                page = browser.new_context(bypass_csp=True).new_page()
                page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
                page.wait_for_function("() => window.surgewatch && window.surgewatch.frames() > 0", timeout=30000)
                pages.append(page)

            open_viewer()
            time.sleep(2)
            one_cpu, one_rate = measure(proc, nodes, args.seconds)
            for _ in range(4):
                open_viewer()
            time.sleep(2)
            five_cpu, five_rate = measure(proc, nodes, args.seconds)
            browser.close()
    finally:
        serve.terminate()
        serve.wait(20)
        for n in nodes:
            n.stop()
    if min(one_cpu, five_cpu, one_rate, five_rate) <= 0:
        # a figure of zero here means nothing was measured (serve died, no scrape): never a ratio that "meets"
        print(f"serve: could not measure (CPU {one_cpu:.1f} / {five_cpu:.1f} %, scrapes {one_rate:.2f} / "
              f"{five_rate:.2f} per s)", file=sys.stderr)
        return 1
    print(f"serve, {args.nodes} nodes x {args.gpus} GPUs, scraped every 1 s, {args.seconds:.0f} s each, same run")
    print(f"  1 viewer : serve tree {one_cpu:5.1f} % of a core, {one_rate:.2f} scrapes/s per node")
    print(f"  5 viewers: serve tree {five_cpu:5.1f} % of a core, {five_rate:.2f} scrapes/s per node")
    print(f"  ratio 5/1: CPU {five_cpu / max(one_cpu, 1e-9):.2f}x (target <= 2x), "
          f"scrapes {five_rate / max(one_rate, 1e-9):.2f}x (target 1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
