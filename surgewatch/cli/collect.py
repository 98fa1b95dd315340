"""`surgewatch agent` and `surgewatch snapshot`.

Handlers take `(args, settings)` with the resolved `surgewatch.settings.Settings`. The snapshot's own
`--nodes/--servers/--redis/--prometheus` default to SUPPRESS and
so never clobber the global options; when given after the subcommand they win.
Exit codes: 0 ran (failing sources are reported in the output), 1 agent could not serve, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import urlsplit

from collectors.nodes import NodeListError, parse_nodes, redact_url
from surgewatch.frontends import listen_host
from surgewatch.settings import SERVER_EXAMPLE, Settings

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    """Add this layer's subcommands to the `surgewatch` parser."""
    a = sub.add_parser(
        "agent",
        help="serve this node's GPUs (dcgm-exporter names) and host load on /metrics",
        description="Serve NVML readings under dcgm-exporter metric names plus host metrics, "
        "for nodes without dcgm-exporter.",
    )
    a.add_argument("--host", default="0.0.0.0", metavar="H", help="address to listen on (default 0.0.0.0)")
    a.add_argument("--port", default=9400, type=int, metavar="PORT", help="port (default 9400, dcgm-exporter's)")
    a.set_defaults(func=agent_command)

    s = sub.add_parser(
        "snapshot",
        help="run every collector once and print the result (table or --json)",
        description="Run every configured collector once: local GPUs and host, remote nodes, "
        "Prometheus, per-tier traffic. Exit 0 even when a source fails (see errors).",
    )
    s.add_argument("--json", action="store_true", help="print JSON for scripts")
    s.add_argument(
        "--nodes",
        default=argparse.SUPPRESS,
        metavar="URLS|@FILE",
        help="comma-separated /metrics URLs, or @FILE with one URL a line",
    )
    s.add_argument(
        "--servers",
        default=argparse.SUPPRESS,
        metavar="URLS|@FILE",
        help="inference servers' /metrics URLs (vLLM, NIM, SGLang, TGI, Triton), or @FILE with one URL a line",
    )
    s.add_argument("--redis", default=argparse.SUPPRESS, metavar="URL", help="Redis URL for per-tier traffic")
    s.add_argument("--prometheus", default=argparse.SUPPRESS, metavar="URL", help="Prometheus server to query")
    s.add_argument("--no-local", action="store_true", help="skip the local NVML and host collectors")
    s.set_defaults(func=snapshot_command)


def _err(msg: str) -> None:
    print(f"surgewatch: {msg}", file=sys.stderr)


def agent_command(args: argparse.Namespace, settings: Settings) -> int:
    from collectors.agent import serve

    if not 0 <= args.port <= 65535:
        _err(f"invalid port {args.port}: a number from 0 to 65535")
        return EXIT_BAD_INPUT
    try:
        host = listen_host(args.host)
    except ValueError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    return serve(host, args.port)


def _check_url(url: str, what: str, schemes: tuple[str, ...]) -> str:
    try:
        p = urlsplit(url)
        p.port  # noqa: B018 - raises on a bad port
    except ValueError:
        p = None
    if p is None or p.scheme not in schemes or not (p.hostname or p.path):
        raise NodeListError(f"invalid {what} URL {redact_url(url)!r}: accepted schemes {', '.join(schemes)}")
    return url


def snapshot_command(args: argparse.Namespace, settings: Settings) -> int:
    from surgewatch.snapshot import render_text, take_snapshot

    try:
        raw_nodes = getattr(args, "nodes", None)
        nodes = parse_nodes(raw_nodes if raw_nodes is not None else list(settings.nodes))
        raw_servers = getattr(args, "servers", None)
        # checked here (exit 2 on a bad entry), read into the snapshot's `serving` key
        servers = parse_nodes(raw_servers if raw_servers is not None else list(settings.servers), "server",
                              SERVER_EXAMPLE)
        redis_url = getattr(args, "redis", None) or settings.redis_url
        prometheus = getattr(args, "prometheus", None) or settings.prometheus
        if redis_url:
            from quotas.model import QuotaError, validate_redis_url

            try:
                validate_redis_url(redis_url)  # one server, cluster startup nodes, or Sentinel
            except QuotaError as e:
                raise NodeListError(str(e)) from None
        if prometheus:
            _check_url(prometheus, "Prometheus", ("http", "https"))
    except NodeListError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    doc = asyncio.run(
        take_snapshot(
            redis_url=redis_url,
            prefix=settings.prefix,
            nodes=nodes,
            prometheus=prometheus,
            local=not args.no_local,
            prometheus_lookback_s=settings.prometheus_lookback_s,
            redis_cluster=settings.redis_cluster,
            servers=servers,
        )
    )
    if args.json:
        try:  # JSON has no NaN or Infinity: a script's parser would refuse the whole document
            text = json.dumps(doc, indent=2, allow_nan=False)
        except ValueError as e:  # every source screens its figures: one that leaks is a bug, named, never written
            _err(f"snapshot: a figure that is not a finite number reached the document ({e}): not written")
            return EXIT_ERROR
        print(text)
    else:
        print(render_text(doc), end="")
    return EXIT_OK
