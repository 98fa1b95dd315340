"""`surgewatch serve`: options, the checks that refuse a bad or unsafe start (exit 2), then the server."""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

from surgewatch.frontends import ServeOptions, front_ends, is_loopback, listen_host
from surgewatch.settings import Settings

TOKEN_ENV = "SURGEWATCH_SERVE_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve` to the `surgewatch` parser."""
    p = sub.add_parser(
        "serve",
        help="serve the wall console to browsers (read-only, one collection for every viewer)",
        description=(
            "Serve the wall console (read-only, large KPIs, cycling panels) to browsers. The global options "
            "(--redis, --nodes, --prometheus, ...) say what it watches; it collects once for every viewer."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--token", metavar="TOKEN",
                   help=f"login token; prefer the environment variable {TOKEN_ENV}: a --token on the command line "
                   "is visible to every local user in `ps` and /proc. Without a token: loopback only")
    p.add_argument("--public-url", metavar="URL", help="the address browsers use (behind a proxy or tunnel)")
    p.add_argument("--max-viewers", type=int, default=20, metavar="N", help="viewers at once (default 20)")
    p.add_argument("--size", default="160x48", metavar="COLSxROWS", help="the wall's size in cells (default 160x48)")
    p.add_argument("--client-timeout", type=float, default=10.0, metavar="S",
                   help="close a connection idle or still sending its request after S seconds (default 10)")
    p.add_argument("--max-connections", type=int, default=256, metavar="N",
                   help="open connections at once, all clients (default 256; fewer if `ulimit -n` is lower)")
    p.add_argument("--insecure-no-token", action="store_true",
                   help="allow a non-loopback --host without a token (anyone who can reach it can watch)")
    p.set_defaults(func=run)


def parse_size(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"invalid --size {text!r}: COLSxROWS, e.g. 160x48") from None
    if not (40 <= cols <= 400 and 12 <= rows <= 200):
        raise ValueError(f"invalid --size {text!r}: from 40x12 to 400x200")
    return cols, rows


def run(args: argparse.Namespace, settings: Settings) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        args.host = listen_host(args.host)
        if not 1 <= args.port <= 65535:
            raise ValueError(f"invalid --port {args.port}: from 1 to 65535")
        if args.max_viewers < 1:
            raise ValueError(f"invalid --max-viewers {args.max_viewers}: at least 1")
        if not 0.5 <= args.client_timeout <= 600:
            raise ValueError(f"invalid --client-timeout {args.client_timeout}: from 0.5 to 600 seconds")
        if not 8 <= args.max_connections <= 100_000:
            raise ValueError(f"invalid --max-connections {args.max_connections}: from 8 to 100000")
        if args.public_url is not None and urlsplit(args.public_url).scheme not in ("http", "https"):
            raise ValueError(f"invalid --public-url {args.public_url!r}: an http:// or https:// URL")
        if not is_loopback(args.host) and token is None and not args.insecure_no_token:
            raise ValueError(f"refusing to serve on {args.host} without a token: give --token (or {TOKEN_ENV}), "
                             "or --insecure-no-token to let anyone who can reach it watch")
        options = ServeOptions(args.host, args.port, token, args.public_url, args.max_viewers, parse_size(args.size),
                               client_timeout_s=args.client_timeout, max_connections=args.max_connections)
    except ValueError as e:
        print(f"surgewatch serve: {e}", file=sys.stderr)
        return 2
    if args.token:
        print(f"surgewatch serve: warning: --token is visible to local users in `ps`; set {TOKEN_ENV} instead",
              file=sys.stderr)
    return serve(settings, options)


def serve(settings: Settings, options: ServeOptions) -> int:
    """The wall console served to browsers (the UI's front end: surgewatch.frontends)."""
    return front_ends().serve(settings, options)
