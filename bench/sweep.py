"""Benchmark: one fleet sweep across 16, 128 and 512 loopback nodes of 8 GPUs each.

Nodes are served by a helper process (bench/sweep_nodes.py, one port per node, 40-metric 8-GPU pages
shaped like dcgm-exporter's). For each fleet size it reports, for the sweeping process only:
- wall and CPU time (time.process_time) of one FleetCollector sweep, median of several sweeps (the
  steady state: label sets already parsed), and of the first sweep (every label set new);
- the same for a plain peer sweep (one httpx client per node keeping one connection alive, a shared TLS
  context, the same concurrency bound: bench/httpx_peer.py, how surgewatch scraped before aiohttp)
  fetching every page and parsing it whole with prometheus-client's parser; with --shared-peer also the
  earlier peer, one shared httpx client without keep-alive;
- the floor: our own fetcher (collectors.scrape.PageFetcher, aiohttp) fetching every page, no parse;
- parse time per node: ours (filter, then prometheus-client) vs prometheus-client on the full page.

    .venv/bin/python bench/sweep.py [--sizes 16,128,512] [--repeat 5] [--shared-peer]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from httpx_peer import httpx_clients  # noqa: E402
from sweep_nodes import make_page  # noqa: E402

from collectors.dcgm import parse_page  # noqa: E402
from collectors.fleet import FleetCollector  # noqa: E402
from collectors.prometheus import make_client  # noqa: E402
from collectors.scrape import PageFetcher  # noqa: E402


def full_parse(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


def parse_costs(reps: int = 50) -> tuple[float, float, int, int]:
    page = make_page(7).decode()
    parse_page(page, "n")
    full_parse(page)
    t = time.process_time()
    for _ in range(reps):
        ours = parse_page(page, "n")
    ours_ms = (time.process_time() - t) / reps * 1000
    t = time.process_time()
    for _ in range(reps):
        n = full_parse(page)
    full_ms = (time.process_time() - t) / reps * 1000
    return ours_ms, full_ms, len(ours), n


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    await fn()
    return (time.perf_counter() - w) * 1000, (time.process_time() - c) * 1000


async def bench_size(ports: list[int], repeat: int, shared_peer: bool = False) -> dict[str, Any]:
    urls = [f"http://127.0.0.1:{p}/metrics" for p in ports]
    fc = FleetCollector(urls, min_interval_s=0, wait_s=None, timeout_s=5)
    try:
        first = await timed(fc.poll)
        sample = await fc.poll()
        assert all(n.status == "up" and len(n.gpus) == 8 for n in sample.nodes), [n.error for n in sample.nodes][:3]
        ours = [await timed(fc.poll) for _ in range(repeat)]
    finally:
        await fc.aclose()

    async def peer_run(client_for: Callable[[str], httpx.AsyncClient]) -> tuple[tuple[float, float], list[Any]]:
        sem = asyncio.Semaphore(64)  # FleetCollector's default bound

        async def one(url: str) -> int:
            async with sem:
                r = await client_for(url).get(url)
                return full_parse(r.text)

        async def peer_sweep() -> None:
            await asyncio.gather(*(one(u) for u in urls))

        return await timed(peer_sweep), [await timed(peer_sweep) for _ in range(repeat)]

    # the peer keeps one connection per node as FleetCollector does, over httpx (bench/httpx_peer.py)
    clients = httpx_clients(urls, 5)
    try:
        peer_first, peer = await peer_run(clients.__getitem__)
    finally:
        for c in clients.values():
            await c.aclose()
    fetcher = PageFetcher(5, 64, keepalive_s=30.0)  # the floor: our fetcher, FleetCollector's bound, no parse
    sem = asyncio.Semaphore(64)

    async def fetch_one(url: str) -> int:
        async with sem:
            return len(await fetcher.fetch(url))

    async def fetch_sweep() -> None:
        await asyncio.gather(*(fetch_one(u) for u in urls))

    try:
        await fetch_sweep()
        floor = [await timed(fetch_sweep) for _ in range(repeat)]
    finally:
        await fetcher.aclose()
    shared: dict[str, float] = {}
    if shared_peer:  # the earlier peer: one client for every node, no keep-alive (a connect per scrape)
        client = make_client(5, 64)
        try:
            s_first, s_runs = await peer_run(lambda _u: client)
        finally:
            await client.aclose()
        shared = {"shared_wall_ms": statistics.median(x[0] for x in s_runs),
                  "shared_cpu_ms": statistics.median(x[1] for x in s_runs),
                  "shared_first_cpu_ms": s_first[1]}
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    return {
        "nodes": len(urls), "gpus": 8 * len(urls),
        "ours_wall_ms": med(ours, 0), "ours_cpu_ms": med(ours, 1),
        "ours_first_wall_ms": first[0], "ours_first_cpu_ms": first[1],
        "peer_wall_ms": med(peer, 0), "peer_cpu_ms": med(peer, 1),
        "peer_first_wall_ms": peer_first[0], "peer_first_cpu_ms": peer_first[1],
        "floor_wall_ms": med(floor, 0), "floor_cpu_ms": med(floor, 1),
        **shared,
    }


def start_nodes(n: int) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sweep_nodes.py"), str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)["ports"]


def stop_nodes(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16,128,512")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--shared-peer", action="store_true",
                    help="also measure the earlier peer: one shared client without keep-alive")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(sizes) + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    ours_ms, full_ms, _, samples = parse_costs()
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, "
          f"httpx {httpx.__version__}")
    print(f"page: {len(make_page(7))} bytes, {samples} samples (8 GPUs x 40 metrics)")
    print(f"parse per node: ours {ours_ms:.2f} ms (used series only, label sets parsed once by prometheus-client) "
          f"vs prometheus-client full page "
          f"{full_ms:.2f} ms  -> {full_ms / ours_ms:.1f}x less CPU")
    print()
    head = (f"{'nodes':>5} {'GPUs':>5} | {'ours wall':>9} {'ours CPU':>9} | {'peer wall':>9} {'peer CPU':>9} | "
            f"{'CPU ratio':>9} | {'1st sweep ours wall/CPU':>23} | {'1st sweep peer wall/CPU':>23} | "
            f"{'floor wall/CPU':>18}")
    if a.shared_peer:
        head += f" | {'shared-client peer wall/CPU':>27} {'ratio':>6}"
    print(head)
    for n in sizes:
        proc, ports = start_nodes(n)
        try:
            r = asyncio.run(bench_size(ports, a.repeat, a.shared_peer))
        finally:
            stop_nodes(proc)
        row = (f"{r['nodes']:>5} {r['gpus']:>5} | {r['ours_wall_ms']:>7.0f}ms {r['ours_cpu_ms']:>7.0f}ms | "
               f"{r['peer_wall_ms']:>7.0f}ms {r['peer_cpu_ms']:>7.0f}ms | "
               f"{r['peer_cpu_ms'] / r['ours_cpu_ms']:>8.1f}x | "
               f"{r['ours_first_wall_ms']:>10.0f}ms {r['ours_first_cpu_ms']:>9.0f}ms | "
               f"{r['peer_first_wall_ms']:>10.0f}ms {r['peer_first_cpu_ms']:>9.0f}ms | "
               f"{r['floor_wall_ms']:>7.0f}ms {r['floor_cpu_ms']:>8.0f}ms")
        if a.shared_peer:
            row += (f" | {r['shared_wall_ms']:>14.0f}ms {r['shared_cpu_ms']:>9.0f}ms "
                    f"{r['shared_cpu_ms'] / r['ours_cpu_ms']:>5.1f}x")
        print(row, flush=True)
    print()
    print("ours = FleetCollector (median of --repeat sweeps, label cache warm); peer = httpx, one kept-alive "
          "connection per node, same bound, full-page prometheus-client parse; 1st sweep = cold label cache; "
          "floor = our fetcher (aiohttp) fetching every page, no parse")
    if a.shared_peer:
        print("shared-client peer = the earlier peer: one client for all nodes without keep-alive, same parse")
    print("target: 128 nodes in <= 500 ms wall and <= 300 ms CPU of the sweeping process (nodes every 5 s)")


if __name__ == "__main__":
    main()
