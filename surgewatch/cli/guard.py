"""`surgewatch guard`: the surge autopilot's loop on the console's own collectors.

It reads what the console reads (local GPUs, the fleet's nodes or Prometheus, the Redis traffic),
looks once per `interval_s`, and logs one line whenever its state changes (a frozen guard says why
once, not every second). Its steps and proposals go through the quota store and the guard's board
in Redis, so every console shows them. SIGINT/SIGTERM end it (exit 0); its overrides then lapse by
themselves. Exit 2 for a bad policy or option, with a message naming the setting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from typing import Any

from surgewatch.guard.policy import DEFAULT_POLICY, GuardMode, Policy, freshness_problem, load_policy
from surgewatch.plan import SCRAPE_TIMEOUT_S
from surgewatch.settings import ConfigError, Settings, config_path, load_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "guard",
        help="the surge autopilot: sheds the cheapest tiers first when the fleet runs hot, within a policy",
        description=(
            "Watch the fleet and the tiers like the console does; when a signal of the policy stays above its "
            "target, propose (or, with --mode auto, apply) a temporary override of the first tier in the "
            "shedding order, previewed and audited; give capacity back when the fleet is calm."
        ),
    )
    p.add_argument("--policy", metavar="FILE", help="a TOML file with a [guard] table (default: the [guard] "
                   "table of surgewatch.toml, else the built-in policy: --print-policy)")
    p.add_argument("--mode", choices=("propose", "auto"), help="propose (default): proposals in every console, "
                   "nothing written; auto: apply the steps")
    p.add_argument("--dry-run", action="store_true", help="write nothing, propose nothing: log what it would do")
    p.add_argument("--print-policy", action="store_true", help="print the built-in policy, documented, and exit")
    p.set_defaults(func=run)


def guard_actor() -> str:
    return f"guard@{socket.gethostname()}"


def _say(text: str) -> None:
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    print(f"{stamp} {text}", flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.print_policy:
        print(DEFAULT_POLICY, end="")
        return 0
    try:
        policy = load_policy(args.policy, load_file(config_path()))
    except ConfigError as e:
        print(f"surgewatch guard: {e}", file=sys.stderr)
        return 2
    # scraped here (not through Prometheus, whose own scrape interval the readings' age follows)
    problem = None if settings.prometheus else freshness_problem(
        policy, scrape_interval_s=settings.node_interval_s, scrape_timeout_s=SCRAPE_TIMEOUT_S,
        gpus=bool(settings.nodes), servers=bool(settings.servers))
    if problem:
        print(f"surgewatch guard: {problem}", file=sys.stderr)
        return 2
    mode: GuardMode = args.mode or policy.mode
    if not settings.redis_url:
        print("surgewatch guard: no Redis configured: give --redis URL (or set REDIS_URL)", file=sys.stderr)
        return 2
    if settings.read_only and mode == "auto" and not args.dry_run:
        print("surgewatch guard: --read-only: --mode auto writes quotas (use --dry-run)", file=sys.stderr)
        return 2
    args.dry_run = args.dry_run or settings.read_only  # read-only writes nothing: no proposal, no status
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    what = ("dry run, read-only: nothing written" if settings.read_only else "dry run") if args.dry_run else mode
    _say(f"{guard_actor()} starts ({what}) on {settings.redis_url_shown}; shedding order "
         f"{', '.join(policy.order)}; protected {', '.join(policy.protect) or 'none'}")
    try:
        asyncio.run(_main(settings, policy, mode, args.dry_run))
    except KeyboardInterrupt:
        pass
    _say("stopped; its overrides lapse by themselves")
    return 0


async def _main(settings: Settings, policy: Policy, mode: GuardMode, dry_run: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await guard_loop(settings, policy, mode=mode, dry_run=dry_run, stop=stop)


async def guard_loop(
    settings: Settings, policy: Policy, *, mode: GuardMode, dry_run: bool = False,
    stop: asyncio.Event | None = None, say: Any = _say, actor: str | None = None,
) -> None:
    """Run the collectors the console would run and one guard on them until `stop` is set."""
    from collectors.runner import Reading, Runner
    from collectors.samples import Source
    from quotas.store import QuotaStore
    from surgewatch.guard.board import Board
    from surgewatch.guard.loop import Guard
    from surgewatch.guard.signals import observe
    from surgewatch.plan import plan, redis_connector

    assert settings.redis_url is not None
    # one server, a cluster (detected, or --redis-cluster) or Sentinel, as the console opens it; a guard started
    # while Redis is down waits for it (it could not act anyway: the freeze rule)
    connector = redis_connector(settings)
    said = ""
    while True:
        try:
            client = await connector.client()
            break
        except Exception as e:
            if str(e) != said:  # once a fault, not every 2 s for as long as Redis stays down
                said = str(e)
                say(f"guard: Redis not reachable yet ({e}); nothing is done until it is")
            if stop is not None and stop.is_set():
                return
            await asyncio.sleep(2.0)
    store = QuotaStore(client, prefix=settings.prefix, timeout_s=3.0)
    readings: dict[Source, Reading[Any]] = {}
    tasks = []
    collectors = []
    for spec in plan(settings, client):
        if spec.name == Source.HOST:
            continue
        collector = spec.make()
        collectors.append(collector)
        runner = Runner(collector, interval_s=spec.interval_s, timeout_s=spec.timeout_s,
                        backoff_max_s=spec.backoff_max_s)

        def keep(r: Reading[Any], name: Source = spec.name) -> None:
            readings[name] = r

        tasks.append(asyncio.create_task(runner.run(keep), name=f"guard-{spec.name}"))
    guard = Guard(store, policy, actor=actor or guard_actor(), mode=mode, dry_run=dry_run,
                  board=None if settings.read_only else Board(client, settings.prefix),
                  say=lambda text: say(f"guard: {text}"))
    try:
        while stop is None or not stop.is_set():
            obs = observe(policy, now=time.time(), traffic=readings.get(Source.TRAFFIC),
                          fleet=readings.get(Source.FLEET), gpus=readings.get(Source.GPUS),
                          serving=readings.get(Source.SERVING))
            await guard.step(obs)
            if stop is None:
                await asyncio.sleep(policy.interval_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), policy.interval_s)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in collectors:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.aclose(), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 2)
