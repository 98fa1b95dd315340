"""`surgewatch demo`: the viral surge end to end, with no Redis, no GPU and no configuration.

This is the one module that joins the simulated world (`sim/`) and the console (`tui/`): the world
runs in a background thread with its own event loop (embedded Valkey, simulated nodes on loopback,
surge traffic through the real limiter) and the console watches it like any real deployment,
through Redis and the nodes' /metrics.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING, Any

from surgewatch.settings import Settings

if TYPE_CHECKING:
    from sim.runner import WorldThread
    from sim.world import DemoConfig

DEMO_NODE_INTERVAL_S = 1.0  # the simulated nodes change every second; scrape them as often


def register(sub: argparse._SubParsersAction) -> None:
    """Add `demo` to the `surgewatch` parser."""
    p = sub.add_parser(
        "demo",
        help="the viral surge end to end: embedded Valkey, simulated GPU fleet, surge traffic, console",
        description=(
            "Start an embedded Valkey, a simulated GPU fleet serving dcgm-exporter /metrics on loopback and "
            "surge traffic through the real limiter, then open the console on it. Cut the free tier "
            "(select it, press e, type 3/1d) and watch rejections jump and the fleet cool."
        ),
    )
    p.add_argument("--redis-port", type=int, metavar="P", help="port of the embedded Valkey (default: a free one)")
    # dest differs from the global --nodes (a URL list) so the two never clash in the namespace
    p.add_argument("--nodes", dest="demo_nodes", type=int, default=16, metavar="N", help="simulated nodes (default 16)")
    p.add_argument("--gpus-per-node", type=int, default=8, metavar="N", help="GPUs per node (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same run (default 0)")
    p.add_argument("--headless", action="store_true", help="no screen: print one JSON object per simulated second")
    p.add_argument("--duration", type=int, metavar="SECONDS", help="headless: simulated seconds to run (required)")
    p.add_argument(
        "--quota-change", action="append", default=[], metavar="T:TIER:LIMIT/WINDOW",
        help="headless: at simulated second T set TIER's quota through the store, e.g. 60:free:3/1d (repeatable)",
    )
    p.add_argument(
        "--speed", type=float, default=1.0, metavar="X",
        help="simulated seconds per wall second (default 1; headless: 0 = as fast as the server answers)",
    )
    p.add_argument("--no-serve-nodes", action="store_true", help="headless: do not serve the nodes' /metrics")
    p.add_argument("--guard", choices=("propose", "auto"), metavar="propose|auto",
                   help="run the guard (surgewatch guard, default policy) on the surge: propose (the console's "
                   "Guard panel: a accepts, x dismisses) or auto (it applies its steps itself)")
    # dest differs from the global --record so that `surgewatch --record F demo` and `demo --record F` both work
    p.add_argument("--record", dest="demo_record", metavar="FILE",
                   help="record what the console sees (headless too: every source and quota change) into FILE")
    p.add_argument(
        "--screenshot",
        metavar="FILE.svg",
        help="no terminal: run the console off-screen until the surge peaks, save an SVG of it "
        "(the README's picture), exit",
    )
    p.set_defaults(func=run)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl+C, so the finally blocks stop the server and the node servers
    raise KeyboardInterrupt


def run(args: argparse.Namespace, settings: Settings) -> int:
    from quotas.errors import Unreachable
    from quotas.model import QuotaError
    from sim.world import DemoConfig, QuotaChange
    from surgewatch.recording.format import RecordingError

    try:
        changes = tuple(QuotaChange.parse(c) for c in args.quota_change)
        config = DemoConfig(
            nodes=args.demo_nodes,
            gpus_per_node=args.gpus_per_node,
            seed=args.seed,
            speed=args.speed,
            serve_nodes=not (args.headless and args.no_serve_nodes),
            quota_changes=changes,
            prefix=settings.prefix,
            guard=args.guard,
        )
        if args.redis_port is not None and not 1 <= args.redis_port <= 65535:
            raise ValueError(f"invalid --redis-port {args.redis_port}: from 1 to 65535")
        if args.headless and (args.duration is None or args.duration < 1):
            raise ValueError("--headless needs --duration SECONDS (a whole number from 1)")
        if not args.headless and (changes or args.duration is not None):
            raise ValueError("--duration and --quota-change apply to --headless runs only")
        if not args.headless and args.speed == 0:
            raise ValueError("--speed 0 (as fast as possible) is for --headless runs only")
        record = args.demo_record or args.record
        if record and (args.speed == 0 or args.no_serve_nodes or args.screenshot):
            raise ValueError("--record needs the world in real time with its nodes served: "
                             "not with --speed 0, --no-serve-nodes or --screenshot")
    except (QuotaError, ValueError) as e:
        print(f"surgewatch demo: {e}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        if args.headless and record:
            return record_headless(config, settings, args.duration, record, redis_port=args.redis_port)
        if args.headless:
            from sim.runner import run_headless

            return run_headless(config, args.duration, redis_port=args.redis_port)
        if args.screenshot:
            return save_screenshot(config, settings, args.screenshot, redis_port=args.redis_port)
        return run_interactive(config, settings, redis_port=args.redis_port, record=record)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `surgewatch demo --headless ... | head`: the reader left; stop quietly (the server is already stopped)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (QuotaError, RecordingError) as e:
        print(f"surgewatch demo: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, Unreachable, OSError) as e:
        print(f"surgewatch demo: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def demo_settings(settings: Settings, redis_url: str, node_urls: list[str],
                  server_urls: Sequence[str] = ()) -> Settings:
    """The console's settings for the demo world: its Redis, its nodes and their inference servers, scraped
    every second."""
    return replace(settings, redis_url=redis_url, nodes=tuple(node_urls), servers=tuple(server_urls),
                   node_interval_s=DEMO_NODE_INTERVAL_S)


def demo_subtitle(world: WorldThread) -> str:
    """What the console's header says: where the world is and how a second terminal joins it (with the
    nodes' file: a console given only the Redis URL would show no fleet)."""
    from sim.runner import join_command

    join = join_command(world.redis_url, world.nodes_file, world.servers_file)
    return f"demo · Redis {world.redis_url} · join: {join} · cut: quota set free 3/1d"


def demo_app(world: WorldThread, settings: Settings, recorder: Any = None) -> Any:
    """The console on a started world: the one app factory, pointed at the world's Redis and nodes."""
    from surgewatch.frontends import front_ends

    return front_ends().demo_app(demo_settings(settings, world.redis_url, world.node_urls, world.server_urls),
                                 subtitle=demo_subtitle(world), recorder=recorder)


def run_interactive(
    config: DemoConfig, settings: Settings, *, redis_port: int | None = None, record: str | None = None
) -> int:
    """Start the world, open the console on it, and stop everything when the console closes."""
    from sim.runner import WorldThread
    from surgewatch.recording.writer import Recorder

    recorder = Recorder(record) if record else None  # a bad FILE is refused before anything starts
    world = WorldThread(config, redis_port=redis_port)
    try:
        world.start()
        app = demo_app(world, settings, recorder)
        app.run()
        return int(app.return_code or 0)
    finally:
        world.stop()
        if recorder is not None:
            recorder.close()


RECORD_TAIL_S = 1.5  # after the last tick: one more scrape and traffic poll, so the recording holds it


def record_headless(
    config: DemoConfig, settings: Settings, duration_s: int, record: str, *, redis_port: int | None = None
) -> int:
    """`demo --headless --record FILE`: the world in real time, its tick lines on stdout, and the
    headless recorder (the console's collectors and quota feed) recording it."""
    import asyncio
    import json
    import threading
    import time

    from sim.runner import WorldThread, join_command
    from sim.world import Tick
    from surgewatch.recording.daemon import record as record_world
    from surgewatch.recording.writer import Recorder

    recorder = Recorder(record)
    done = threading.Event()
    ended_at: list[float] = []

    def on_tick(tick: Tick) -> None:  # the world's thread
        if tick.t <= duration_s:
            sys.stdout.write(json.dumps(tick.to_json(), separators=(", ", ": ")) + "\n")
            sys.stdout.flush()
        if tick.t >= duration_s and not done.is_set():
            ended_at.append(time.monotonic())
            done.set()

    def over() -> bool:
        return done.is_set() and time.monotonic() - ended_at[0] >= RECORD_TAIL_S

    world = WorldThread(config, redis_port=redis_port, on_tick=on_tick)
    try:
        world.start()
        print(f"surgewatch demo: recording into {record}; join with: "
              f"{join_command(world.redis_url, world.nodes_file, world.servers_file)}", file=sys.stderr, flush=True)
        asyncio.run(record_world(demo_settings(settings, world.redis_url, world.node_urls, world.server_urls),
                                 recorder, stop=over))
    finally:
        world.stop()
        recorder.close()
    return 0


SCREENSHOT_SIZE = (160, 48)
SCREENSHOT_AT_S = 40  # simulated seconds: the fleet is hot and throttling, free is being refused


def save_screenshot(config: DemoConfig, settings: Settings, path: str, *, redis_port: int | None = None) -> int:
    """Run the console off-screen on the world until the surge peaks, then save an SVG of the screen."""
    import asyncio
    from pathlib import Path

    from sim.runner import WorldThread

    target = Path(path)
    ticks: list[object] = []
    world = WorldThread(config, redis_port=redis_port, on_tick=ticks.append)

    async def shoot() -> None:
        app = demo_app(world, settings)
        async with app.run_test(size=SCREENSHOT_SIZE) as pilot:
            while len(ticks) < SCREENSHOT_AT_S:
                await pilot.pause(0.2)
            await pilot.pause(1.5)  # one more scrape and traffic poll, so every panel shows the peak
            app.save_screenshot(target.name, str(target.parent))

    try:
        world.start()
        asyncio.run(shoot())
    finally:
        world.stop()
    print(f"surgewatch demo: saved {target}", file=sys.stderr)
    return 0
