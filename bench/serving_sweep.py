"""Benchmark: one sweep of 512 inference-server replicas on loopback, CPU of the sweeping process.

A helper process (this script with --serve N) serves N ports from one asyncio loop, each answering
with the real vLLM page (../shared/fixtures/vllm-datadog.prom) whose request counter and e2e
histogram advance on every answer, so every sweep parses every page and computes every replica's
rates and quantiles (no identical-page skip). The sweeping process runs ServingCollector (one aiohttp
session keeping one connection per replica, concurrency 64, as for --nodes); reported: wall and CPU
(time.process_time) of one sweep, median of --repeat sweeps after two warm-up sweeps, the helper's CPU over
the same sweeps (psutil), and peers in the same run with the same bound: fetching every page with one
kept-alive httpx client per replica (bench/httpx_peer.py: how surgewatch scraped before aiohttp) and parsing
it whole with prometheus-client; and fetching only, through our own fetcher (collectors.scrape.PageFetcher:
the floor our HTTP path sets, whatever the parse); and fetching with no HTTP library at all (BareGet: a GET
written on a kept-alive asyncio connection and read to its Content-Length), the floor under any Python
fetcher on this machine (the kernel's loopback path and the event loop).

    .venv/bin/python bench/serving_sweep.py [--replicas 512] [--repeat 5]

Exit 1 when a measurement could not be made (a replica not read, the helper not starting).
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
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402
from httpx_peer import httpx_clients  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from collectors.scrape import PageFetcher  # noqa: E402
from collectors.serving import ServingCollector  # noqa: E402

PAGE = ROOT.parent / "shared" / "fixtures" / "vllm-datadog.prom"
TARGET_CPU_MS = 300.0
_E2E = 'vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="facebook/opt-125m"} 1.0'
_OK = 'vllm:request_success_total{finished_reason="length",model_name="facebook/opt-125m"} 1.0'


def page_at(n: int, base: str) -> bytes:
    """The real page after n more requests (under 1 s each): counters and the e2e histogram advance."""
    text = base.replace(_OK, _OK[:-3] + f"{1 + n}.0")
    text = text.replace(_E2E, _E2E[:-3] + f"{1 + n}.0")
    for le in ("2.5", "5.0", "10.0", "15.0", "20.0", "30.0", "40.0", "50.0", "60.0", "+Inf"):
        old = f'vllm:e2e_request_latency_seconds_bucket{{le="{le}",model_name="facebook/opt-125m"}} 1.0'
        text = text.replace(old, old[:-3] + f"{1 + n}.0")
    return text.encode()


async def serve(n: int) -> None:
    base = PAGE.read_text()
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while await reader.readline():
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                served += 1
                body = page_at(served, base)
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                writer.write(head + body)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024) for _ in range(n)]
    print(json.dumps({"ports": [s.sockets[0].getsockname()[1] for s in servers]}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes


class BareGet(asyncio.Protocol):
    """The least an asyncio client can do for a page: one kept-alive connection, a GET written, the answer
    read up to its Content-Length (no HTTP library, no chunking, no errors handled). The floor under any
    Python fetcher on this machine: the kernel's loopback path and the event loop's own work."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.want: asyncio.Future[bytes] | None = None
        self.end = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection's transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.end < 0 and (h := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:h]).lower()
            at = head.index(b"content-length:") + 15
            self.end = h + 4 + int(head[at:head.index(b"\r\n", at) if b"\r\n" in head[at:] else len(head)])
        if 0 <= self.end <= len(self.buf) and self.want is not None and not self.want.done():
            self.want.set_result(bytes(self.buf[:self.end]))
            del self.buf[:self.end]
            self.end = -1

    async def get(self, host_port: str) -> bytes:
        assert self.transport is not None
        self.want = asyncio.get_running_loop().create_future()
        self.transport.write(f"GET /metrics HTTP/1.1\r\nHost: {host_port}\r\nUser-Agent: surgewatch\r\n\r\n".encode())
        async with asyncio.timeout(10):
            return await self.want


async def timed(fn: Callable[[], Awaitable[Any]], helper: psutil.Process) -> tuple[float, float, float]:
    h0 = sum(helper.cpu_times()[:2])
    w, c = time.perf_counter(), time.process_time()
    await fn()
    w, c = (time.perf_counter() - w) * 1000, (time.process_time() - c) * 1000
    return w, c, (sum(helper.cpu_times()[:2]) - h0) * 1000


async def bench(ports: list[int], repeat: int, helper: psutil.Process) -> dict[str, Any]:
    urls = [f"http://127.0.0.1:{p}/metrics" for p in ports]
    sc = ServingCollector(urls, min_interval_s=0, wait_s=None, timeout_s=10)
    try:
        await sc.poll()
        s = await sc.poll()
        bad = [r.error for r in s.replicas if r.status != "up" or r.models[0].e2e_p99_s is None]
        if bad:
            raise RuntimeError(f"{len(bad)} replicas not read: {bad[:3]}")
        ours = [await timed(sc.poll, helper) for _ in range(repeat)]
    finally:
        await sc.aclose()
    clients = httpx_clients(urls, 10)
    fetcher = PageFetcher(10, 64, keepalive_s=30.0)
    sem = asyncio.Semaphore(64)

    async def one(url: str) -> int:
        async with sem:
            r = await clients[url].get(url)
            r.raise_for_status()
            return sum(len(f.samples) for f in text_string_to_metric_families(r.text))

    async def fetch_one(url: str) -> int:
        async with sem:
            return len(await fetcher.fetch(url))

    loop = asyncio.get_running_loop()
    bare = {p: (await loop.create_connection(BareGet, "127.0.0.1", p))[1] for p in ports}

    async def bare_one(p: int) -> int:
        async with sem:
            return len(await bare[p].get(f"127.0.0.1:{p}"))

    async def bare_sweep() -> None:
        await asyncio.gather(*(bare_one(p) for p in ports))

    async def peer_sweep() -> None:
        await asyncio.gather(*(one(u) for u in urls))

    async def fetch_sweep() -> None:
        await asyncio.gather(*(fetch_one(u) for u in urls))

    try:
        await peer_sweep()
        await fetch_sweep()
        await bare_sweep()
        peer = [await timed(peer_sweep, helper) for _ in range(repeat)]
        fetch = [await timed(fetch_sweep, helper) for _ in range(repeat)]
        floor = [await timed(bare_sweep, helper) for _ in range(repeat)]
    finally:
        for b in bare.values():
            if b.transport is not None:
                b.transport.close()
        for c in clients.values():
            await c.aclose()
        await fetcher.aclose()
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    return {"ours": [med(ours, i) for i in range(3)], "peer": [med(peer, i) for i in range(3)],
            "fetch": [med(fetch, i) for i in range(3)], "bare": [med(floor, i) for i in range(3)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 3 * max(a.replicas, a.serve) + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if a.serve:
        asyncio.run(serve(a.serve))
        return 0
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(a.replicas)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ports = json.loads(line)["ports"] if line else []
        if len(ports) != a.replicas:
            print("could not measure: the helper did not start", file=sys.stderr)
            return 1
        r = asyncio.run(bench(ports, a.repeat, psutil.Process(proc.pid)))
    except Exception as e:
        print(f"could not measure: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    (ow, oc, oh), (pw, pc, ph), (fw, fc, _), (bw, bc, _) = r["ours"], r["peer"], r["fetch"], r["bare"]
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; {a.replicas} replicas, "
          f"page {PAGE.stat().st_size} bytes (the real vLLM capture, counters advancing every answer)")
    print(f"ours (ServingCollector): wall {ow:6.0f} ms, CPU {oc:6.0f} ms; helper serving the pages {oh:5.0f} ms CPU")
    print(f"peer (httpx, a kept-alive client per replica, prometheus-client full parse): wall {pw:6.0f} ms, "
          f"CPU {pc:6.0f} ms; "
          f"helper {ph:5.0f} ms CPU  -> {pc / oc:.1f}x our CPU")
    print(f"floor (our fetcher, aiohttp, fetching every page, no parse): wall {fw:6.0f} ms, CPU {fc:6.0f} ms "
          f"-> parsing and the window's figures cost {oc - fc:.0f} ms of ours")
    print(f"bare (no HTTP library: a GET written on a kept-alive asyncio connection, read to its Content-Length): "
          f"wall {bw:6.0f} ms, CPU {bc:6.0f} ms ({1000 * bc / a.replicas:.0f} us a page; our fetcher "
          f"{fc / bc:.2f}x it)")
    print(f"target: one sweep <= {TARGET_CPU_MS:g} ms CPU: {'met' if oc <= TARGET_CPU_MS else 'MISSED'}")
    busy = "the sweeping process (its CPU ~ its wall)" if oc >= 0.8 * ow else (
        "not the sweeping process: wall > its CPU (the helper and other processes share the machine's cores)")
    print(f"what saturated: {busy}; of its CPU, {100 * fc / oc:.0f}% is the HTTP fetch floor above")
    return 0


if __name__ == "__main__":
    sys.exit(main())
