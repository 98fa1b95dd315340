"""A/B of limiter libraries: server µs per single decision of Lua variants against limits' sliding window counter.

Loads each given library file side by side in one Valkey under its own name (its functions renamed
`sw_*_a`, `sw_*_b`, ...), then the variants and the counter take turns, round after round: 1,000 fresh
users x 2 requests (so half are first requests, as in bench/limiter.py) of quota 600/1m (or another
`--pattern`: `flood`, 70 % refused; `alternate`, every refusal right after an admission), sent as single
decisions (`FCALL sw_check_many_X 1 KEY USER 1`; the counter's own script by EVALSHA), pipelined so the
server never idles, or `--sequential`. The server is pinned to CPU 0 and this process to CPU 1 where the
machine allows. Prints each variant's median µs per call (INFO commandstats) and its ratio to the counter.

    git show ff1c2d8:quotas/surgewatch.lua > /tmp/old.lua
    .venv/bin/python bench/lua_ab.py /tmp/old.lua quotas/lua --rounds 400

A variant is a library file, or a folder of `*.lua` parts joined in name order (the shipped library,
`quotas/lua/`, as `quotas.library.library_source()` joins it; one file, `quotas/surgewatch.lua`, before).

Each variant decides on a tier of its own, so one library's counter hashes never shape another's. 400
rounds take about a minute, long enough for the minute's counter hashes to grow as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import limits
import redis.asyncio as aioredis

from sim.valkey import ValkeyProcess

SWC_LUA = Path(limits.__file__).parent / "resources/redis/lua_scripts/acquire_sliding_window.lua"


def quota_key(name: str) -> str:
    """Each variant its own tier, so that one variant's counter hashes never shape another's."""
    return f"surgewatch:{{bench-{name}}}:quota"


# Traffic patterns, 2,000 decisions per round: (quota limit per minute, description, the round's users in order)
PATTERNS: dict[str, tuple[int, str, Callable[[str], list[str]]]] = {
    # half of them first requests, half second ones, all admitted (as in bench/limiter.py)
    "fresh": (600, "1,000 fresh users x 2 requests each, all admitted",
              lambda p: [f"{p}-{i % 1000}" for i in range(2000)]),
    # a free tier cut to 3 a minute while its users keep asking: 70 % refused, refusals in long runs
    "flood": (3, "200 users x 10 requests each at 3/1m, 70 % refused",
              lambda p: [f"{p}-{i % 200}" for i in range(2000)]),
    # the worst case for reading first only while refusing: every refusal follows an admission
    "alternate": (3, "1,000 fresh users, each followed by a refused request of one user over quota",
                  lambda p: [f"{p}-{i // 2}" if i % 2 == 0 else f"{p}-over" for i in range(2000)]),
}


def library_text(path: Path) -> str:
    """A library file's text, or a folder's `*.lua` parts joined in name order (as quotas/library.py does)."""
    return "\n".join(p.read_text() for p in sorted(path.glob("*.lua"))) if path.is_dir() else path.read_text()


def renamed(source: str, suffix: str) -> str:
    """The library under another name, every `sw_*` function suffixed, so variants load side by side."""
    source = re.sub(r"^#!lua name=\w+", f"#!lua name=sw{suffix}", source, count=1)
    return re.sub(r"'(sw_[a-z_]+)'", lambda m: f"'{m.group(1)}_{suffix}'", source)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", type=Path,
                    help="library files or folders of parts (each with sw_set and sw_check_many)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--sequential", action="store_true", help="one call at a time instead of pipelines of 1,000")
    ap.add_argument("--pattern", choices=sorted(PATTERNS), default="fresh", help="the traffic of a round")
    args = ap.parse_args()
    limit, described, users_of = PATTERNS[args.pattern]
    server = ValkeyProcess().start()
    c = aioredis.Redis.from_url(server.url)
    try:
        pid = int((await c.info("server"))["process_id"])
        if (os.cpu_count() or 1) >= 2:
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pid)], capture_output=True)
            os.sched_setaffinity(0, {1})
        names = []
        for k, path in enumerate(args.variants):
            suffix = chr(ord("a") + k)
            await c.function_load(renamed(library_text(path), suffix), replace=True)
            names.append(suffix)
        # each variant stores the quota as it reads it (the shipped library's sw_set takes kind, actor,
        # reason, expect, create, for_s, limit, window_s, cap, paused, mode; the prototypes ignore them)
        for name in names:
            await c.fcall(f"sw_set_{name}", 1, quota_key(name), "set", "bench", "", "", "1", "", str(limit), "60", "",
                          "0", "enforce")
        check = await c.fcall(f"sw_check_many_{names[0]}", 1, quota_key(names[0]), "probe", 1)
        assert check.split()[0] == str(limit).encode(), f"the quota is not in place: {check!r}"
        sha = await c.script_load(SWC_LUA.read_text())
        us: dict[str, list[float]] = {n: [] for n in [*names, "swc"]}
        for r in range(args.rounds):
            order = [*names, "swc"] if r % 2 == 0 else ["swc", *reversed(names)]
            for name in order:
                await c.config_resetstat()
                pipe = c.pipeline(transaction=False)
                for u in users_of(f"{name}-{r}"):
                    call: tuple[str | int, ...]
                    if name == "swc":
                        key = f"LIMITS:{{LIMITER/{u}/{limit}/1/minute}}"
                        call = ("EVALSHA", sha, 2, f"{key}/-1", key, limit, 60, 1)
                    else:
                        call = ("FCALL", f"sw_check_many_{name}", 1, quota_key(name), u, 1)
                    if args.sequential:
                        await c.execute_command(*call)
                    else:
                        pipe.execute_command(*call)
                if not args.sequential:
                    await pipe.execute()
                st = await c.info("commandstats")
                us[name].append(st["cmdstat_evalsha" if name == "swc" else "cmdstat_fcall"]["usec_per_call"])
        mode = "sequential" if args.sequential else "pipelined by 2,000"
        print(f"{args.rounds} rounds of {described}, {mode}; median us per call (min)")
        # medians, and minima: on a shared VM the noise only ever adds time, so the least of the rounds is
        # the steadiest estimate of a call's own cost
        swc, swc_min = statistics.median(us["swc"]), min(us["swc"])
        for k, name in enumerate(names):
            m = statistics.median(us[name])
            print(f"  {m:6.2f} ({min(us[name]):6.2f})  ratio to the counter {m / swc:.3f} "
                  f"(of minima {min(us[name]) / swc_min:.3f})  {args.variants[k]}")
        print(f"  {swc:6.2f} ({min(us['swc']):6.2f})  limits sliding window counter ({SWC_LUA.name})")
    finally:
        await c.aclose()
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
