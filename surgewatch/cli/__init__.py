"""The `surgewatch` command: global options, then a subcommand; none opens the console.

Each subcommand lives in its own module of this package (`quota`, `collect`, `demo`, ...) and registers
itself, so this module only wires them. It imports nothing heavy at start: `surgewatch quota list` must not pay for
Textual.

The global options are accepted on either side of the subcommand (`surgewatch --redis URL quota list` and
`surgewatch quota list --redis URL`): they are declared once here and copied onto every subcommand's parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from surgewatch.settings import ConfigError, Settings, resolve

# (flags, add_argument keywords) of every global option: the one list both positions are built from
_GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--redis",), dict(
        metavar="URL", help="Redis URL (else SURGEWATCH_REDIS_URL, else REDIS_URL, else the config file)",
    )),
    (("--redis-cluster",), dict(
        action="store_true", help="the Redis URL names a Redis Cluster: use the cluster client without detecting it",
    )),
    (("--nodes",), dict(metavar="URLS|@FILE", help="comma-separated /metrics URLs, or @FILE with one URL a line")),
    (("--servers",), dict(
        metavar="URLS|@FILE",
        help="inference servers' /metrics (vLLM, NIM, SGLang, TGI, Triton): comma-separated URLs, or @FILE",
    )),
    (("--prometheus",), dict(
        metavar="URL", help="read the fleet from a Prometheus server's HTTP API instead of scraping",
    )),
    (("--prometheus-lookback",), dict(
        metavar="DURATION", help="how far back Prometheus' history is read for a target that is down (default 1h)",
    )),
    (("--interval",), dict(metavar="SECONDS", type=float, help="refresh interval of the console (default 1)")),
    (("--read-only",), dict(action="store_true", help="no edit bindings; nothing is written")),
    (("--wall",), dict(action="store_true", help="wall-screen mode: read-only, large KPIs, cycles panels")),
    (("--record",), dict(metavar="FILE", help="record what the console shows into FILE (see `replay`)")),
)


def _add_globals_after(parser: argparse.ArgumentParser) -> None:
    """Accept the global options after the subcommand too, on `parser` and every parser below it.

    default=SUPPRESS leaves the value given before the subcommand (or the top-level default) in place unless the
    option is repeated after it. An option the subcommand declares itself (snapshot's --redis, demo's --nodes N)
    keeps its own meaning: it is not overridden.
    """
    group = parser.add_argument_group("global options (also accepted before the command)")
    for flags, kwargs in _GLOBAL_OPTIONS:
        if any(flag in parser._option_string_actions for flag in flags):
            continue
        group.add_argument(*flags, **{**kwargs, "default": argparse.SUPPRESS})
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_globals_after(child)


def build_parser() -> argparse.ArgumentParser:
    from surgewatch.cli import collect as collectors_cli
    from surgewatch.cli import demo as demo_cmd
    from surgewatch.cli import guard as guard_cmd
    from surgewatch.cli import quota as quotas_cli
    from surgewatch.cli import record as record_cmd
    from surgewatch.cli import replay as replay_cmd
    from surgewatch.cli import rls as rls_cmd
    from surgewatch.cli import serve as serve_cmd

    p = argparse.ArgumentParser(
        prog="surgewatch",
        description="Console for GPU inference fleets under a surge: GPU health, per-tier traffic, live quotas.",
        epilog="Global options may also follow the command: `surgewatch quota list --redis URL`.",
    )
    for flags, kwargs in _GLOBAL_OPTIONS:
        p.add_argument(*flags, **kwargs)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    quotas_cli.register(sub)
    collectors_cli.register(sub)
    demo_cmd.register(sub)
    record_cmd.register(sub)
    replay_cmd.register(sub)
    guard_cmd.register(sub)
    serve_cmd.register(sub)
    rls_cmd.register(sub)
    for child in sub.choices.values():
        _add_globals_after(child)
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
    from surgewatch.cli.replay import joined_times

    parser = build_parser()
    args = parser.parse_args(joined_times(list(sys.argv[1:] if argv is None else argv)))
    try:
        settings = settings_from(args)
    except ConfigError as e:
        print(f"surgewatch: {e}", file=sys.stderr)
        return 2
    if args.record is not None and args.command not in (None, "demo"):
        print(f"surgewatch: --record records the console or the demo, not `{args.command}`", file=sys.stderr)
        return 2
    if args.command is None:
        from surgewatch.frontends import NoFrontEnd, front_ends

        try:
            return front_ends().run_console(settings, record=args.record)
        except NoFrontEnd as e:
            print(f"surgewatch: {e}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args, settings))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `quota history | head`: the reader left. Python's recipe: no traceback, exit 1
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit would raise again
        return 1


if __name__ == "__main__":
    sys.exit(main())
