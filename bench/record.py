"""Benchmark: the recorder on one simulated hour of a big fleet, against the naive peer in the same run.

    .venv/bin/python bench/record.py [--nodes 128] [--gpus 8] [--minutes 60] [--seeks 200] [--zstd DIR]

What runs (one process, a simulated clock, nothing on the network):
- the console's readings for MINUTES simulated minutes: NODES x GPUS GPUs scraped every 5 s, staggered
  over the 5 s (a fleet reading every second, as the console polls it), every GPU's values changing on
  every scrape (dcgm-exporter run with `-c 5000`: the worst case; the default 30 s refresh is cheaper),
  rounded as dcgm-exporter reports them; 5 live tiers at 1 Hz (rates and 15-minute histories moving
  every second); the host at 1 Hz; no local GPUs (a console off the GPU nodes);
- the real `Recorder` (surgewatch/recording/writer.py), flushed every simulated 0.5 s as its thread would
  be: its CPU is the enqueue calls plus the flushes (encoding, change detection, zlib, SQLite);
- the peer in the same run: the same readings as gzip'd JSON lines (`dataclasses.asdict` of every
  reading, one line each, one gzip stream at level 6): file size and CPU;
- seeks: `Recording.state_at(t)` at SEEKS random seconds of the hour, on a freshly opened file;
- `surgewatch replay FILE --json --every 60` over the hour, as a subprocess (wall time);
- with `--zstd DIR` (a directory holding the `zstandard` package): every stored row recompressed with
  zstd level 3, deltas against the same keyframe as a raw-content dictionary, to size the gain.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collectors.runner import Reading  # noqa: E402
from collectors.samples import (  # noqa: E402
    FleetSample,
    GpuSample,
    GpusSample,
    HostSample,
    NodeSample,
    Source,
    TierTraffic,
    TrafficSample,
)
from quotas.model import Quota  # noqa: E402
from surgewatch.recording.format import decompress  # noqa: E402
from surgewatch.recording.reader import Recording  # noqa: E402
from surgewatch.recording.writer import Recorder  # noqa: E402

START = 1_780_000_000.0
TIERS = {"free": 3, "plus": 200, "pro": 600, "team": 3000, "enterprise": 20000}


class World:
    """Deterministic readings: GPU random walks with dcgm-exporter's rounding, tiers, host."""

    def __init__(self, nodes: int, gpus: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.urls = [f"http://gpu-{n:03d}.dc1:9400/metrics" for n in range(nodes)]
        self.gpus = gpus
        self.state = [[[60.0, 50.0, 300.0, 40000.0] for _ in range(gpus)] for _ in range(nodes)]
        self.nodes: list[NodeSample] = [self._scrape(n, START) for n in range(nodes)]
        self.hist = {t: [self.rng.randrange(50, 500) for _ in range(900)] for t in TIERS}
        self.quotas = {t: Quota(t, lim, 86400, None, False, "enforce", None, 3, "alice", START - 600)
                       for t, lim in TIERS.items()}

    def _scrape(self, n: int, now: float) -> NodeSample:
        url, r, gs = self.urls[n], self.rng, []
        for i, s in enumerate(self.state[n]):
            s[0] = min(90.0, max(30.0, s[0] + r.uniform(-1.5, 1.5)))
            s[1] = min(100.0, max(0.0, s[1] + r.uniform(-8, 8)))
            s[2] = min(700.0, max(80.0, s[2] + r.uniform(-25, 25)))
            s[3] = min(80000.0, max(1000.0, s[3] + r.uniform(-500, 500)))
            gs.append(GpuSample(
                url, i, uuid=f"GPU-{n:04d}{i:04d}-7d1b-4c2e-9a3f-0c1d2e3f4a5b", name="NVIDIA H100 80GB HBM3",
                util_pct=float(round(s[1])), mem_util_pct=float(round(s[1] * 0.6)), mem_used_mib=float(round(s[3])),
                mem_total_mib=81559.0, temp_c=float(round(s[0])), temp_slowdown_c=87.0, temp_shutdown_c=92.0,
                power_w=round(s[2], 3), power_limit_w=700.0, sm_clock_mhz=float(1980 - 15 * round(max(0, s[0] - 80))),
                sm_clock_max_mhz=1980.0, throttle=("thermal",) if s[0] > 85 else (), fan_pct=None,
                ecc_uncorrected=0, remapped_rows=0, pcie_replay=0, xid=None,
            ))
        return NodeSample(url, "up", None, round(r.uniform(1, 4), 2), now, now, tuple(gs))

    def fleet(self, k: int, now: float) -> Reading[Any]:
        for n in range(len(self.urls)):
            if n % 5 == k % 5:  # each node every 5 s, a fifth of them each second
                self.nodes[n] = self._scrape(n, now)
        return Reading("fleet", FleetSample(now, tuple(self.nodes)), now, None, 0, now + 1)

    def traffic(self, now: float) -> Reading[Any]:
        tiers = []
        for t in TIERS:
            h = self.hist[t]
            h.append(max(0, h[-1] + self.rng.randrange(-20, 21)))
            del h[0]
            rej = tuple(x // 7 for x in h)
            tiers.append(TierTraffic(t, self.quotas[t], sum(h[-10:]) / 10, sum(rej[-10:]) / 10,
                                     {"user_quota": sum(rej[-10:]) / 10}, 0.0, sum(h[-60:]), sum(rej[-60:]),
                                     {"user_quota": sum(rej[-60:])}, 0, tuple(h), rej, int(now)))
        return Reading("traffic", TrafficSample(now, tuple(tiers)), now, None, 0, now + 1)

    def host(self, now: float) -> Reading[Any]:
        r = self.rng
        h = HostSample(now, "ops-01", round(r.uniform(5, 30), 1), tuple(round(r.uniform(0, 60), 1) for _ in range(2)),
                       1.2, 1.0, 0.9, round(r.uniform(9000, 9100), 1), 24000.0, 0.0, 2048.0,
                       round(r.uniform(1e5, 1e6)), round(r.uniform(1e5, 1e6)), 0.0, round(r.uniform(0, 1e5)))
        return Reading("host", h, now, None, 0, now + 1)


def naive_line(source: Source, at: float, r: Reading[Any]) -> bytes:
    return (json.dumps({"at": at, "source": str(source), "reading": dataclasses.asdict(r)}) + "\n").encode()


def zstd_size(path: Path, zstd_dir: str) -> tuple[int, int]:
    """(bytes of every row as stored with zlib, as zstd level 3 would store it)."""
    import sqlite3

    sys.path.insert(0, zstd_dir)
    import zstandard  # type: ignore[import-not-found]  # optional: only for this measurement

    conn = sqlite3.connect(path)
    keys: dict[int, bytes] = {}
    zlib_total = zstd_total = 0
    plain = zstandard.ZstdCompressor(level=3)
    for row, base, data in conn.execute("SELECT id, base, data FROM chunks ORDER BY id"):
        raw = decompress(data, None if base is None else keys[base])
        if base is None:
            keys[row] = raw[-32768:]
            out = plain.compress(raw)
        else:
            d = zstandard.ZstdCompressionDict(keys[base], dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            out = zstandard.ZstdCompressor(level=3, dict_data=d).compress(raw)
        zlib_total += len(data)
        zstd_total += len(out)
    return zlib_total, zstd_total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=128)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--seeks", type=int, default=200)
    ap.add_argument("--zstd", metavar="DIR", help="directory holding the zstandard package (optional)")
    args = ap.parse_args()
    seconds = args.minutes * 60
    tmp = Path(tempfile.mkdtemp(prefix="surgewatch-record-bench-"))
    path, naive_path = tmp / "hour.sqlite", tmp / "hour.jsonl.gz"
    world = World(args.nodes, args.gpus)
    now = [START]
    rec = Recorder(path, clock=lambda: now[0], flush_s=3600)  # flushed below, every simulated 0.5 s
    naive = gzip.open(naive_path, "wb", compresslevel=6)  # noqa: SIM115 - one stream across the loop, closed below
    rec_cpu = naive_cpu = 0.0
    local = Reading("gpu", GpusSample(START, (), "no_library", "NVML library not found"), START, None, 0, START + 1)
    t_wall = time.perf_counter()
    for k in range(seconds):
        t = START + k
        readings = {Source.FLEET: world.fleet(k, t + 0.2), Source.TRAFFIC: world.traffic(t + 0.4),
                    Source.HOST: world.host(t + 0.6), Source.GPUS: dataclasses.replace(local, next_poll_at=t + 1)}
        c0 = time.thread_time()
        for source, r in readings.items():
            now[0] = r.sampled_at or t
            rec.reading(source, r)
            if source == Source.TRAFFIC:
                rec.flush()  # the half-second flush
        rec.flush()
        c1 = time.thread_time()
        for source, r in readings.items():
            naive.write(naive_line(source, r.sampled_at or t, r))
        c2 = time.thread_time()
        rec_cpu += c1 - c0
        naive_cpu += c2 - c1
    naive.close()
    rec.close()
    gen_wall = time.perf_counter() - t_wall
    size = path.stat().st_size
    naive_size = naive_path.stat().st_size

    recording = Recording(path)
    rng = random.Random(7)
    seeks = []
    for _ in range(args.seeks):
        at = recording.start + rng.uniform(0, recording.end - recording.start)
        t0 = time.perf_counter()
        state = recording.state_at(at)
        seeks.append(time.perf_counter() - t0)
        assert len(state.readings[Source.FLEET].sample.nodes) == args.nodes  # type: ignore[union-attr]  # the fleet reading was recorded just above
    recording.close()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "surgewatch.cli", "replay", str(path), "--json", "--every", "60"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    json_wall = time.perf_counter() - t0
    docs = out.stdout.count("\n")

    gpus = args.nodes * args.gpus
    print(f"{gpus} GPUs on {args.nodes} nodes scraped every 5 s, 5 tiers and the host at 1 Hz, "
          f"{args.minutes} simulated minutes (generated in {gen_wall:.0f} s wall)")
    print(f"recording: {size / 1e6:.1f} MB  ({size / seconds / 1e3:.1f} kB per second)")
    print(f"peer gzip'd JSON lines: {naive_size / 1e6:.1f} MB  ({naive_size / size:.1f}x the recording)")
    print(f"recorder CPU: {rec_cpu:.1f} s for {seconds} s = {100 * rec_cpu / seconds:.2f} % of a core")
    print(f"peer CPU (asdict + json + gzip): {naive_cpu:.1f} s = {100 * naive_cpu / seconds:.2f} % of a core")
    print(f"seek (state_at, {args.seeks} random seconds, fresh file): median {1e3 * statistics.median(seeks):.1f} ms, "
          f"p95 {1e3 * sorted(seeks)[int(0.95 * len(seeks)) - 1]:.1f} ms, max {1e3 * max(seeks):.1f} ms")
    print(f"replay --json --every 60: {docs} documents in {json_wall:.2f} s (subprocess, wall)")
    if args.zstd:
        zl, zs = zstd_size(path, args.zstd)
        print(f"rows as stored (zlib 6 + keyframe dictionaries): {zl / 1e6:.1f} MB; zstd 3 the same way: "
              f"{zs / 1e6:.1f} MB ({100 * (zl - zs) / zl:+.0f} % saved)")
    for p in (path, naive_path):
        os.unlink(p)


if __name__ == "__main__":
    main()
