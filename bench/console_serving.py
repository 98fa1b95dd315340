"""Benchmark: the console's CPU with inference servers watched, beside the same console without them.

    .venv/bin/python bench/console_serving.py [--seconds 40] [--warmup 15] [--pairs 3] [--nodes 16] [--gpus 8]
                                              [--replicas 128]

Issue 25's target: the console with 128 GPUs and 128 inference-server replicas at most 1.2x the CPU of the
same console without servers, measured in the same run. What runs (all on 127.0.0.1):
- a Valkey seeded with the default tiers, NODES loopback dcgm-exporter nodes of GPUS GPUs (the real L4 capture,
  values moving every 30 s: bench/console.py's node servers);
- REPLICAS loopback inference servers serving the real vLLM page (../shared/fixtures/vllm-datadog.prom) whose
  counters and histogram buckets advance on every scrape, as a live server's do (so every scrape is parsed and
  its quantiles computed, never skipped as an identical page);
- `surgewatch --redis URL --nodes @FILE --interval 1` in tmux 200x60, then the same with `--servers @FILE`:
  CPU (% of one core) and RSS over SECONDS after WARMUP each; PAIRS such pairs, alternated, and the median
  of their ratios judged (one pair's ratio moves by a third on this shared VM: the console without servers
  alone swings by +-0.4 points of a core between runs).
Then, against the same replicas and in the same run, where a scrape's CPU goes at the console's cadence (every
replica every 5 s, a poll a second), outside the console: our ServingCollector alone, and the least any Python
client can do (bench/serving_sweep.py's BareGet: a GET on a kept-alive asyncio connection read to its
Content-Length, no HTTP library, no parse), each as CPU microseconds a scrape beside the budget that 1.2x of the
measured console without servers leaves.
A run whose console did not show the fleet (or the Service panel) is not measured and exits 1; a measured run
exits 0 and says whether the target was met or MISSED.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from console import CAPTURE, PY, measure_in_tmux, serve_until_killed, stop_all  # noqa: E402  # this directory: run as `python bench/console_serving.py`

VLLM = ROOT.parent / "shared" / "fixtures" / "vllm-datadog.prom"
TARGET = 1.2


def advancing_page(page: str, replica: int) -> Callable[[], str]:
    """The page as a live server serves it: every counter, bucket and count up by a few requests per scrape."""
    served = 0

    def serve() -> str:
        nonlocal served
        served += 1
        step = 3 + replica % 5
        out = []
        for ln in page.split("\n"):
            if not ln or ln.startswith("#"):
                out.append(ln)
                continue
            name = ln.split("{", 1)[0].split(" ", 1)[0]
            head, _, value = ln.rpartition(" ")
            try:
                v = float(value)
            except ValueError:
                out.append(ln)
                continue
            if name.endswith(("_bucket", "_count", "_total")):
                v += served * step  # new requests, all in the smallest bucket: buckets stay monotonic
            elif name.endswith("_sum"):
                v += served * step * 0.05
            out.append(f"{head} {v:g}")
        return "\n".join(out)
    return serve


def serve_replicas(replicas: int, port_file: str) -> None:
    page = VLLM.read_text()
    serve_until_killed([advancing_page(page, r) for r in range(replicas)], port_file)


async def cadence_cpu_us(urls: list[str], seconds: float, how: str) -> float:
    """CPU microseconds a scrape of this process scraping `urls` as the console does (each every 5 s, a poll
    a second, 10 s of warm-up): `how` "ours" through ServingCollector, "fetch" our fetcher only (no parse, no
    window), "bare" with BareGet (no HTTP library, no parse)."""
    import asyncio
    import time

    from serving_sweep import BareGet

    from collectors.scrape import PageFetcher
    from collectors.serving import ServingCollector

    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(64)  # the collector's concurrency
    conns: dict[str, BareGet] = {}
    collector = ServingCollector(urls, min_interval_s=5.0) if how == "ours" else None
    fetcher = PageFetcher(2.0, 64, keepalive_s=30.0)
    scrapes = 0

    async def bare_get(url: str) -> None:
        hp = url.split("/")[2]
        async with sem:
            if how == "fetch":
                await fetcher.fetch(url)
                return
            if url not in conns:
                host, port = hp.rsplit(":", 1)
                conns[url] = (await loop.create_connection(BareGet, host, int(port)))[1]
            await conns[url].get(hp)

    async def poll(k: int) -> None:
        nonlocal scrapes
        if collector is not None:
            sample = await collector.poll()
            if any(r.status != "up" for r in sample.replicas):
                raise RuntimeError("a replica was not read")
        elif k % 5 == 0:
            await asyncio.gather(*(bare_get(u) for u in urls))
        if k % 5 == 0:
            scrapes += len(urls)

    try:
        t0 = time.monotonic()
        k = 0
        while time.monotonic() - t0 < 10:
            await poll(k)
            k += 1
            await asyncio.sleep(max(0.0, t0 + k - time.monotonic()))
        c0, scrapes, t0, k = time.process_time(), 0, time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            await poll(k)
            k += 1
            await asyncio.sleep(max(0.0, t0 + k - time.monotonic()))
        return (time.process_time() - c0) * 1e6 / max(1, scrapes)
    finally:
        for c in conns.values():
            if c.transport is not None:
                c.transport.close()
        await fetcher.aclose()
        if collector is not None:
            await collector.aclose()


def wait_for(file: Path, lines: int) -> bool:
    for _ in range(300):
        if file.exists() and len(file.read_text().split()) == lines:
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--replicas", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "replicas":
        serve_replicas(a.replicas, a.arg[0])
        return 0
    if not shutil.which("tmux"):
        print("tmux is not installed: the console is measured in a real terminal (tmux): not measured")
        return 1
    for f in (CAPTURE, VLLM):
        if not f.exists():
            print(f"{f} is missing (the shared fixtures beside the checkout): not measured")
            return 1

    import asyncio

    import redis.asyncio as aioredis

    from quotas.store import QuotaStore
    from sim.valkey import ValkeyProcess

    tmp = Path(tempfile.mkdtemp(prefix="swbench-serving-"))
    nodes_file, servers_file = tmp / "nodes.txt", tmp / "servers.txt"
    helpers: list[subprocess.Popen[bytes]] = []
    with ValkeyProcess() as vk:
        async def seed() -> None:
            c = aioredis.Redis.from_url(vk.url)
            await QuotaStore(c).init()
            await c.aclose()

        asyncio.run(seed())
        try:
            helpers.append(subprocess.Popen([PY, str(ROOT / "bench" / "console.py"), "--nodes", str(a.nodes),
                                             "--gpus", str(a.gpus), "--role", "nodes", "--arg", str(nodes_file),
                                             "--arg", "30"]))
            helpers.append(subprocess.Popen([PY, __file__, "--replicas", str(a.replicas), "--role", "replicas",
                                             "--arg", str(servers_file)]))
            if not (wait_for(nodes_file, a.nodes) and wait_for(servers_file, a.replicas)):
                print("the loopback nodes or replicas did not start within 30 s: not measured")
                return 1
            gpus = a.nodes * a.gpus
            print(f"setup: {a.nodes} nodes x {a.gpus} GPUs = {gpus} GPUs, {a.replicas} vLLM replicas (the real "
                  f"page, counters advancing every scrape), 5 tiers; {a.seconds:.0f} s per measurement after "
                  f"{a.warmup:.0f} s warm-up; 2-core VM")
            venv_sw = ROOT / ".venv" / "bin" / "surgewatch"
            sw = str(venv_sw) if venv_sw.exists() else "surgewatch"
            base = f"{sw} --redis {vk.url} --nodes @{nodes_file} --interval 1"
            ratios: list[float] = []
            cpus: list[tuple[float, float]] = []
            for k in range(max(1, a.pairs)):
                cpu0, rss0, screen0 = measure_in_tmux("console", base, a.seconds, a.warmup)
                cpu1, rss1, screen1 = measure_in_tmux("console-serving", f"{base} --servers @{servers_file}",
                                                      a.seconds, a.warmup)
                shown0 = f"GPUs {gpus}" in screen0
                shown1 = f"GPUs {gpus}" in screen1 and "opt-125m" in screen1  # the model's row in the Service panel
                print(f"pair {k + 1}: without servers {cpu0:5.2f} % of one core, {rss0:6.1f} MB RSS (fleet shown: "
                      f"{'yes' if shown0 else 'NO'}); with {a.replicas} replicas {cpu1:5.2f} %, {rss1:6.1f} MB "
                      f"(fleet and Service panel shown: {'yes' if shown1 else 'NO'}); ratio "
                      f"{cpu1 / cpu0 if cpu0 > 0 else float('nan'):.2f}x", flush=True)
                if not (shown0 and shown1 and cpu0 > 0 and rss0 > 0 and rss1 > 0):
                    print(f"NOT MEASURED: a console did not show what it watches; no target judged\n{screen1}")
                    return 1
                ratios.append(cpu1 / cpu0)
                cpus.append((cpu0, cpu1))
            ratio = statistics.median(ratios)
            mean0, mean1 = (statistics.fmean(c[i] for c in cpus) for i in (0, 1))
            print(f"mean CPU over the pairs: without {mean0:.2f} %, with {mean1:.2f} %: {mean1 / mean0:.2f}x")
            judged = gpus == 128 and a.replicas == 128  # the setup; another one is a figure, not a verdict
            verdict = "not judged (not 128 GPUs and 128 replicas)"
            if judged:
                verdict = "met" if ratio <= TARGET else "MISSED"
            print(f"ratio with/without servers, median of {len(ratios)} pairs: {ratio:.3f}x (pairs: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}; target <= {TARGET}x): {verdict}")
            urls = servers_file.read_text().split()
            ours_us, fetch_us, bare_us = (asyncio.run(cadence_cpu_us(urls, a.seconds, how))
                                          for how in ("ours", "fetch", "bare"))
            budget_us = (TARGET - 1) * mean0 / 100 * 1e6 / (len(urls) / 5)
            print(f"where a scrape goes, at the console's cadence ({len(urls)} replicas every 5 s, a poll a second), "
                  f"outside the console: ServingCollector {ours_us:.0f} us of CPU a scrape, of which our fetcher "
                  f"(aiohttp) {fetch_us:.0f} us and parse, window and per-model view {ours_us - fetch_us:.0f} us; "
                  f"no HTTP library and no parse (BareGet) {bare_us:.0f} us; the budget {TARGET}x of the console "
                  f"without servers ({mean0:.2f} %) leaves: {budget_us:.0f} us a scrape, all the console does included")
            return 0  # measured (met or MISSED, said above); exit 1 is for a run that measured nothing
        finally:
            stop_all(helpers)


if __name__ == "__main__":
    sys.exit(main())
