"""A/B of limiter libraries on sw_check_many batches: server µs per decision of 1,000 fresh users a call.

Loads each library file (or a folder of `*.lua` parts, like `quotas/lua`) side by side in one Valkey
under its own name, gives each a tier of its own at 20/1d, then the variants take turns, round after
round, each deciding a batch of 1,000 users it has never seen. Prints the median and the minimum of
`INFO commandstats` FCALL µs per decision for each.

    .venv/bin/python bench/batch_ab.py OLD.lua quotas/lua --rounds 60
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
from pathlib import Path

import redis.asyncio as aioredis

from sim.valkey import ValkeyProcess

BATCH = 1000


def source(path: Path) -> str:
    """A library file's text, or a folder's parts joined in name order (as quotas/library.py does)."""
    if path.is_dir():
        return "\n".join(p.read_text() for p in sorted(path.glob("*.lua")))
    return path.read_text()


def renamed(text: str, suffix: str) -> str:
    """The library under another name, every `sw_*` function suffixed, so variants load side by side."""
    text = re.sub(r"^#!lua name=\w+", f"#!lua name=sw{suffix}", text, count=1)
    return re.sub(r"'(sw_\w+)'", lambda m: f"'{m.group(1)}{suffix}'", text)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    with ValkeyProcess() as server:
        r = aioredis.Redis.from_url(server.url)
        suffixes = [f"_{chr(ord('a') + i)}" for i in range(len(args.variants))]
        for suf, path in zip(suffixes, args.variants, strict=True):
            await r.function_load(renamed(source(path), suf), replace=True)
            key = f"surgewatch:{{batch{suf}}}:quota"
            reply = await r.fcall(f"sw_set{suf}", 1, key, "set", "bench", "", "", "1", "", "20", "86400", "", "0",
                                  "enforce")
            assert reply[0] == b"ok", reply
        per_decision: dict[str, list[float]] = {s: [] for s in suffixes}
        for rnd in range(args.rounds):
            for suf in suffixes:
                pairs = [x for u in range(BATCH) for x in (f"r{rnd}u{u}", "1")]
                await r.config_resetstat()
                reply = await r.fcall(f"sw_check_many{suf}", 1, f"surgewatch:{{batch{suf}}}:quota", *pairs)
                assert reply.startswith(b"20 0 "), reply[:40]  # admitted: the quota is there
                stats = await r.info("commandstats")
                per_decision[suf].append(stats["cmdstat_fcall"]["usec"] / BATCH)
        print(f"{args.rounds} rounds of sw_check_many with {BATCH:,} fresh users; server us per decision")
        for suf, path in zip(suffixes, args.variants, strict=True):
            xs = per_decision[suf]
            print(f"  {statistics.median(xs):6.2f} (min {min(xs):5.2f})  {path}")
        await r.aclose()


if __name__ == "__main__":
    asyncio.run(main())
