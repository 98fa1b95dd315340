"""The `surgewatch` command: global options, then a subcommand; none opens the console.

Each layer registers its own subcommands (`quotas.commands`, `collectors.commands`, `tui.demo_cmd`), so this
module only wires them. It imports nothing heavy at start: `surgewatch quota list` must not pay for
Textual.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from collectors.config import ConfigError, Settings, resolve


def build_parser() -> argparse.ArgumentParser:
    from collectors import commands as collectors_cli
    from collectors import record_cmd
    from quotas import commands as quotas_cli
    from tui import demo_cmd, guard_cmd, replay_cmd, serve_cmd

    p = argparse.ArgumentParser(
        prog="surgewatch",
        description="Console for GPU inference fleets under a surge: GPU health, per-tier traffic, live quotas.",
    )
    p.add_argument(
        "--redis", metavar="URL", help="Redis URL (else SURGEWATCH_REDIS_URL, else REDIS_URL, else the config file)"
    )
    p.add_argument(
        "--redis-cluster", action="store_true",
        help="the Redis URL names a Redis Cluster: use the cluster client without detecting it",
    )
    p.add_argument("--nodes", metavar="URLS|@FILE", help="comma-separated /metrics URLs, or @FILE with one URL a line")
    p.add_argument(
        "--servers", metavar="URLS|@FILE",
        help="inference servers' /metrics (vLLM, NIM, SGLang, TGI, Triton): comma-separated URLs, or @FILE",
    )
    p.add_argument(
        "--prometheus", metavar="URL", help="read the fleet from a Prometheus server's HTTP API instead of scraping"
    )
    p.add_argument(
        "--prometheus-lookback", metavar="DURATION",
        help="how far back Prometheus' history is read for a target that is down (default 1h)",
    )
    p.add_argument("--interval", metavar="SECONDS", type=float, help="refresh interval of the console (default 1)")
    p.add_argument("--read-only", action="store_true", help="no edit bindings; nothing is written")
    p.add_argument("--wall", action="store_true", help="wall-screen mode: read-only, large KPIs, cycles panels")
    p.add_argument("--record", metavar="FILE", help="record what the console shows into FILE (see `replay`)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    quotas_cli.register(sub)
    collectors_cli.register(sub)
    demo_cmd.register(sub)
    record_cmd.register(sub)
    replay_cmd.register(sub)
    guard_cmd.register(sub)
    serve_cmd.register(sub)
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    return resolve(
        redis=args.redis,
        nodes=getattr(args, "nodes", None),
        prometheus=getattr(args, "prometheus", None),
        servers=getattr(args, "servers", None),
        interval=args.interval,
        prometheus_lookback=getattr(args, "prometheus_lookback", None),
        read_only=args.read_only,
        wall=args.wall,
        redis_cluster=getattr(args, "redis_cluster", False),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as e:
        print(f"surgewatch: {e}", file=sys.stderr)
        return 2
    if args.record is not None and args.command not in (None, "demo"):
        print(f"surgewatch: --record records the console or the demo, not `{args.command}`", file=sys.stderr)
        return 2
    if args.command is None:
        from tui.app import run_console

        return run_console(settings, record=args.record)
    try:
        return int(args.func(args, settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
