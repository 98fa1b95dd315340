"""`surgewatch rls`: Envoy's rate limit service, deciding with the live quotas (quotas/rls/server.py).

grpcio and xds-protos (the `rls` extra) are imported only when the command runs, so `surgewatch --help`,
the console and the other commands never load them. Exit codes: 0 stopped by a signal; 1 a port cannot be
bound; 2 bad input (a flag, the [rls] table, a missing extra); 4 Redis unreachable at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from surgewatch.frontends import listen_host
from surgewatch.settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_UNREACHABLE = 0, 1, 2, 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rls", help="Envoy's rate limit service (gRPC), enforcing the live quotas",
        description="Answer Envoy's envoy.service.ratelimit.v3.RateLimitService with the live per-tier quotas. "
        "Descriptor keys, default tier and user, and each tier's fail-open policy: the config file's [rls] table.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8081, help="gRPC port (default 8081, as envoyproxy/ratelimit; 0: any)")
    p.add_argument("--metrics-port", type=int, default=6070, help="/metrics port (default 6070; 0: any)")
    p.add_argument("--domain", default="surgewatch", help="the rate limit domain answered (default surgewatch)")
    p.add_argument(
        "--redis-timeout", type=float, default=0.25, metavar="SECONDS",
        help="how long a decision waits for Redis before the tier's fail-open policy decides (default 0.25; keep "
        "it below Envoy's rate limit timeout, or Envoy's failure_mode_deny decides instead)",
    )
    p.set_defaults(func=rls_command)


def _err(msg: str) -> None:
    from quotas.errors import redact

    print(f"surgewatch rls: {redact(msg)}", file=sys.stderr)


def rls_command(args: argparse.Namespace, settings: Settings) -> int:
    for name in ("port", "metrics_port"):
        if not 0 <= getattr(args, name) <= 65535:
            _err(f"invalid --{name.replace('_', '-')} {getattr(args, name)}: a port from 0 to 65535")
            return EXIT_BAD_INPUT
    if not 0.01 <= args.redis_timeout <= 10:
        _err(f"invalid --redis-timeout {args.redis_timeout:g}: from 0.01 to 10 seconds")
        return EXIT_BAD_INPUT
    if not args.domain or len(args.domain) > 128 or not args.domain.isprintable():
        _err("invalid --domain: 1 to 128 printable characters")
        return EXIT_BAD_INPUT
    try:
        args.host = listen_host(args.host)
    except ValueError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    if not settings.redis_url:
        _err("no Redis URL: pass --redis URL, or set SURGEWATCH_REDIS_URL or REDIS_URL")
        return EXIT_BAD_INPUT
    try:
        from quotas.rls import server
    except ImportError as e:
        _err(f"the rate limit service needs the rls extra (pip install 'surgewatch[rls]'): {e}")
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_main(server, args, settings))
    except KeyboardInterrupt:
        return EXIT_OK


async def _main(server: Any, args: argparse.Namespace, settings: Settings) -> int:
    from quotas.connect import open_client, retry_once
    from quotas.errors import Unreachable
    from quotas.model import QuotaError
    from quotas.rls.gate import Gate

    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal)
    try:
        client = await open_client(settings.redis_url or "", prefix=settings.prefix,
                                   force_cluster=settings.redis_cluster, socket_connect_timeout=1,
                                   socket_timeout=2, retry=retry_once())
    except Unreachable as e:
        _err(str(e))
        return EXIT_UNREACHABLE
    except (ValueError, QuotaError) as e:
        _err(f"invalid Redis URL: {e}")
        return EXIT_BAD_INPUT
    rls = settings.rls
    gate = Gate(client, prefix=settings.prefix, fail_open=rls.fail_open, default_tier=rls.default_tier,
                default_user=rls.default_user, timeout_s=args.redis_timeout,
                batch_window_s=rls.batch_window_ms / 1000.0, batch_limit=rls.batch_limit)

    def ready(grpc_port: int, metrics_port: int) -> None:
        # one line a supervisor (or a test that asked for port 0) can read
        print(f"surgewatch rls: domain {args.domain} on {args.host}:{grpc_port}, "
              f"metrics on {args.host}:{metrics_port}/metrics", flush=True)

    try:
        await server.serve(gate, host=args.host, port=args.port, metrics_port=args.metrics_port,
                           domain=args.domain, mapping=server.Mapping(rls.tier_key, rls.user_key),
                           ready=ready, stop=stop)
    except OSError as e:
        _err(str(e))
        return EXIT_ERROR
    finally:
        await gate.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 2)
    return EXIT_OK
