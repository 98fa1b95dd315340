"""The guard against no action and the README's manual cut, side by side on the same simulated surge.

    python bench/guard.py [--seed 7] [--duration 300] [--windows 120,180] [--speed 1] [--logs DIR]

Each scenario is `surgewatch demo --headless --speed 1 --no-serve-nodes` with the same seed: no action;
`--quota-change 60:free:3/1d` (the README's manual cut); `--guard auto` (the built-in policy). For each:
seconds with more than 10 % of GPUs throttling, the peak GPU temperature, the free tier's admitted
requests and the paid tiers' refused requests, then the issue's targets for the guard; beside them,
the admitted requests (any tier) that timed out in the GPUs' queues (admitted, then never served), and what
the admitted users felt: the highest e2e p99 of the fleet's inference servers (a row's `e2e_p99_s`, over 10
simulated seconds) and the seconds it was above the SLO (10 s). The same
runs are also read up to each of `--windows` (their first N simulated seconds): the manual cut's gain
is all at the start (free runs at its full daily limit into a throttling fleet for 60 s) and its cost
comes after (3/1d holds free far below what the cooled fleet carries), so a short window and the whole
surge tell different stories, and both are printed.

Real time (`--speed 1`, the three scenarios side by side, each on its own Valkey): a tier cap is counted
per second of the server's clock, so a run faster than real time would squeeze many simulated seconds
into one of the cap's seconds. The per-user limits' windows (hours, days) do not mind the speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAID = ("plus", "pro", "team", "enterprise")
SLO_S = 10.0  # the default e2e p99 SLO (surgewatch.thresholds' e2e_p99_slo_s)


def start(seed: int, duration: int, speed: float, *extra: str, log: Path | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "surgewatch.cli", "demo", "--headless", "--speed", f"{speed:g}", "--no-serve-nodes",
           "--seed", str(seed), "--duration", str(duration), *extra]
    err = subprocess.DEVNULL if log is None else log.open("w")  # the demo's stderr: the guard's log
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)


def rows_of(proc: subprocess.Popen[str], duration: int) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=max(600, 3 * duration))
    if proc.returncode != 0:
        raise SystemExit(f"bench/guard.py: a scenario exited {proc.returncode}")
    rows = [json.loads(ln) for ln in out.splitlines()]
    if len(rows) < duration:  # a scenario cut short would make its sums look like a calmer fleet
        raise SystemExit(f"bench/guard.py: a scenario printed {len(rows)} of {duration} seconds: not measured")
    return rows


def measure(rows: list[dict[str, Any]]) -> dict[str, float]:
    gpus = 128  # the demo's 16 nodes x 8 GPUs
    return {
        "throttling_s": sum(1 for r in rows if r["throttled"] > 0.10 * gpus),
        "peak_temp_c": max(r["gpu_temp_max"] for r in rows),
        "free_admitted": sum(r["tiers"]["free"]["accepted_rps"] for r in rows),
        "paid_refused": sum(r["tiers"][t]["rejected_rps"] for r in rows for t in PAID),
        "changes": sum(len(r["quota_changes"]) for r in rows),
        "timed_out": sum(r.get("timed_out", 0) for r in rows),
        "e2e_p99_max_s": max((r["e2e_p99_s"] for r in rows if r.get("e2e_p99_s") is not None), default=0.0),
        "over_slo_s": sum(1 for r in rows if (r.get("e2e_p99_s") or 0.0) > SLO_S),
    }


def report(runs: dict[str, dict[str, float]]) -> bool:
    """Print the table and the verdicts; False when there was nothing to compare."""
    print(f"{'scenario':30} {'>10% throttling s':>18} {'peak °C':>8} {'free admitted':>14} {'paid refused':>13} "
          f"{'changes':>8} {'timed out':>10} {'e2e p99 max s':>14} {'s over SLO':>11}")
    for name, r in runs.items():
        print(f"{name:30} {r['throttling_s']:>18} {r['peak_temp_c']:>8.1f} {r['free_admitted']:>14,} "
              f"{r['paid_refused']:>13,} {r['changes']:>8} {r['timed_out']:>10,} {r['e2e_p99_max_s']:>14.1f} "
              f"{r['over_slo_s']:>11}")
    none, cut, g = runs[NONE], runs[CUT], runs[GUARD]
    if none["throttling_s"] == 0 or cut["free_admitted"] == 0:
        # without a surge (or without free traffic) every comparison below would be met by nothing happening
        print("NOT MEASURED: the no-action run never throttled or the cut admitted no free request: the surge "
              "did not happen in this window, nothing to compare")
        return False
    checks = [
        ("throttling seconds <= 1/3 of no action", g["throttling_s"] <= none["throttling_s"] / 3,
         f"{g['throttling_s']} vs {none['throttling_s'] / 3:.1f}"),
        ("paid refused <= no action", g["paid_refused"] <= none["paid_refused"],
         f"{g['paid_refused']} vs {none['paid_refused']}"),
        ("free admitted >= manual cut", g["free_admitted"] >= cut["free_admitted"],
         f"{g['free_admitted']:,} vs {cut['free_admitted']:,} ({g['free_admitted'] / cut['free_admitted']:.0%})"),
        ("timed out <= manual cut", g["timed_out"] <= cut["timed_out"], f"{g['timed_out']:,} vs {cut['timed_out']:,}"),
    ]
    for what, ok, figures in checks:
        print(f"{'met    ' if ok else 'MISSED '} {what}: {figures}")
    return True


NONE, CUT, GUARD = "no action", "manual cut 60:free:3/1d", "guard auto (default policy)"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=int, default=300)
    ap.add_argument("--windows", default="120,180", help="also report the first N simulated seconds (comma-separated)")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (see above)")
    ap.add_argument("--logs", type=Path, help="a directory for each scenario's stderr (the guard's log)")
    args = ap.parse_args()
    try:
        windows = sorted({int(w) for w in args.windows.split(",") if w.strip()} | {args.duration})
    except ValueError:
        ap.error(f"invalid --windows {args.windows!r}: seconds, comma-separated, e.g. 120,180")
    if windows[0] < 1 or windows[-1] > args.duration:
        ap.error(f"invalid --windows {args.windows!r}: each from 1 to --duration ({args.duration})")
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)

    def log(name: str) -> Path | None:
        return None if args.logs is None else args.logs / f"seed{args.seed}-{name}.log"

    procs = {
        NONE: start(args.seed, args.duration, args.speed, log=log("none")),
        CUT: start(args.seed, args.duration, args.speed, "--quota-change", "60:free:3/1d", log=log("cut")),
        GUARD: start(args.seed, args.duration, args.speed, "--guard", "auto", log=log("guard")),
    }
    # read the three at once: a scenario whose pipe nobody reads fills it (about 90 rows) and stops until it is
    # read, so reading them one after another paused the second and third runs for minutes mid-surge
    with ThreadPoolExecutor(len(procs)) as pool:
        futures = {name: pool.submit(rows_of, p, args.duration) for name, p in procs.items()}
        rows = {name: f.result() for name, f in futures.items()}
    measured = True
    for w in windows:
        print(f"\nseed {args.seed}, the first {w} of {args.duration} simulated s at speed {args.speed:g}, 128 GPUs")
        measured = report({name: measure([r for r in rs if r["t"] <= w]) for name, rs in rows.items()}) and measured
    return 0 if measured else 1


if __name__ == "__main__":
    sys.exit(main())
