"""The guard against no action and the README's manual cut, side by side on the same simulated surge.

    python bench/guard.py [--seed 7] [--duration 120] [--speed 1]

Each scenario is `surgewatch demo --headless --speed 1 --no-serve-nodes` with the same seed: no action;
`--quota-change 60:free:3/1d` (the README's manual cut); `--guard auto` (the built-in policy). For each:
seconds with more than 10 % of GPUs throttling, the peak GPU temperature, the free tier's admitted
requests and the paid tiers' refused requests, then the issue's three targets for the guard.

Real time (`--speed 1`, the three scenarios side by side, each on its own Valkey): a tier cap is counted
per second of the server's clock, so a run faster than real time would squeeze many simulated seconds
into one of the cap's seconds. The per-user limits' windows (hours, days) do not mind the speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAID = ("plus", "pro", "team", "enterprise")


def start(seed: int, duration: int, speed: float, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tui.cli", "demo", "--headless", "--speed", f"{speed:g}", "--no-serve-nodes",
           "--seed", str(seed), "--duration", str(duration), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def measure(proc: subprocess.Popen[str], duration: int) -> dict[str, float]:
    out, _ = proc.communicate(timeout=max(600, 3 * duration))
    if proc.returncode != 0:
        raise SystemExit(f"bench/guard.py: a scenario exited {proc.returncode}")
    rows = [json.loads(ln) for ln in out.splitlines()]
    gpus = 128  # the demo's 16 nodes x 8 GPUs
    return {
        "throttling_s": sum(1 for r in rows if r["throttled"] > 0.10 * gpus),
        "peak_temp_c": max(r["gpu_temp_max"] for r in rows),
        "free_admitted": sum(r["tiers"]["free"]["accepted_rps"] for r in rows),
        "paid_refused": sum(r["tiers"][t]["rejected_rps"] for r in rows for t in PAID),
        "changes": sum(len(r["quota_changes"]) for r in rows),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=int, default=120)
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (see above)")
    args = ap.parse_args()
    procs = {
        "no action": start(args.seed, args.duration, args.speed),
        "manual cut 60:free:3/1d": start(args.seed, args.duration, args.speed, "--quota-change", "60:free:3/1d"),
        "guard auto (default policy)": start(args.seed, args.duration, args.speed, "--guard", "auto"),
    }
    runs = {name: measure(p, args.duration) for name, p in procs.items()}
    print(f"seed {args.seed}, {args.duration} simulated s at speed {args.speed:g}, 128 GPUs")
    print(f"{'scenario':30} {'>10% throttling s':>18} {'peak °C':>8} {'free admitted':>14} {'paid refused':>13} "
          f"{'changes':>8}")
    for name, r in runs.items():
        print(f"{name:30} {r['throttling_s']:>18} {r['peak_temp_c']:>8.1f} {r['free_admitted']:>14,} "
              f"{r['paid_refused']:>13,} {r['changes']:>8}")
    none, cut, g = runs["no action"], runs["manual cut 60:free:3/1d"], runs["guard auto (default policy)"]
    checks = [
        ("throttling seconds <= 1/3 of no action", g["throttling_s"] <= none["throttling_s"] / 3,
         f"{g['throttling_s']} vs {none['throttling_s'] / 3:.1f}"),
        ("paid refused <= no action", g["paid_refused"] <= none["paid_refused"],
         f"{g['paid_refused']} vs {none['paid_refused']}"),
        ("free admitted >= manual cut", g["free_admitted"] >= cut["free_admitted"],
         f"{g['free_admitted']:,} vs {cut['free_admitted']:,} ({g['free_admitted'] / cut['free_admitted']:.0%})"),
    ]
    for what, ok, figures in checks:
        print(f"{'met    ' if ok else 'MISSED '} {what}: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
