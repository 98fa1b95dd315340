"""What keeps `surgewatch serve` answering under a flood, and what it refuses before any work.

- Connections are counted from accept to close. Those that have not yet made an authorized request are
  bounded (the oldest is closed when a new one comes: a slow-loris must keep renewing, and a real viewer,
  who asks at once, gets through); all of them are bounded below the process's file-descriptor limit,
  so the collectors always have descriptors left for the nodes and Redis. Idle and slow-header clients
  are closed by aiohttp's keep-alive timer, which starts at accept (see WallServer.run).
- Running out of descriptors anyway (Errno 24, EMFILE) is a named state (`/health`, one log line), not an
  asyncio traceback a second.
- Without a token (loopback only), a request must name a loopback host, --host or --public-url's host
  in `Host`: a site whose name an attacker points at 127.0.0.1 (DNS rebinding) gets 421, not the wall.
- The websocket is opened from this server's own page only: its `Origin` must be the origin the request
  came to (or `--public-url`'s); `null` or a foreign origin gets 403 whatever cookie comes along.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from surgewatch.frontends import is_loopback

if TYPE_CHECKING:  # the CLI imports is_loopback at every start: aiohttp only when serving
    from aiohttp import web

log = logging.getLogger("surgewatch.serve")

FD_RESERVE = 64  # descriptors kept for the collectors, Redis, logs and Textual, besides two per node
# asyncio accepts up to `backlog` connections in one go before any of them is counted here: the listen
# backlog is kept small, and that many descriptors are kept free for a batch in flight
BACKLOG = 32
DESCRIPTORS_GONE = "out of file descriptors (Errno 24)"
STATE_HOLD_S = 30.0  # a named fault stays named this long after it was last seen


def open_descriptors() -> int:
    """Descriptors this process holds now (Linux's /proc; elsewhere a guess that errs high)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return FD_RESERVE


def connection_budget(wanted: int, nodes: int) -> int:
    """Connections this process may hold open: `wanted`, and never more than its descriptor limit allows."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft - open_descriptors() - FD_RESERVE - 2 * nodes - BACKLOG))


class ConnectionGuard:
    """Every open connection, oldest first, and whether it has made an authorized request yet."""

    def __init__(self, max_open: int, max_unauthenticated: int) -> None:
        self.max_open = max_open
        self.max_unauthenticated = max_unauthenticated
        self._open: dict[asyncio.Transport, bool] = {}  # insertion order is age
        self.evicted = 0  # closed to make room (not yet authenticated, oldest first)
        self.refused = 0  # closed at once: every slot held by authenticated connections

    @property
    def open_count(self) -> int:
        return len(self._open)

    def opened(self, transport: asyncio.Transport) -> None:
        self._open[transport] = False
        # bounded scan: at most max_open entries, once per accepted connection
        waiting = [t for t, authed in self._open.items() if not authed]
        while waiting and (len(waiting) > self.max_unauthenticated or len(self._open) > self.max_open):
            oldest = waiting.pop(0)
            self._open.pop(oldest, None)
            self.evicted += 1
            oldest.abort()
        if len(self._open) > self.max_open:
            self._open.pop(transport, None)
            self.refused += 1
            transport.abort()

    def closed(self, transport: asyncio.Transport) -> None:
        self._open.pop(transport, None)

    def authenticated(self, transport: asyncio.Transport | None) -> None:
        if transport is not None and transport in self._open:
            self._open[transport] = True

    def close_all(self) -> None:
        """At shutdown: every connection closed now, not after its client's goodbye."""
        for transport in list(self._open):
            transport.abort()
        self._open.clear()

    def install(self, server: web.Server) -> None:
        """Count `server`'s connections (aiohttp's low-level server tells its manager of each one)."""
        made, lost = server.connection_made, server.connection_lost
        transports: dict[Any, asyncio.Transport] = {}  # handler -> its transport, while open

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            transports[handler] = transport
            self.opened(transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            transport = transports.pop(handler, None)
            if transport is not None:
                self.closed(transport)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]


class DescriptorWatch:
    """Errno 24 from anywhere in the loop (asyncio's accept, a handler) turned into a named state."""

    def __init__(self) -> None:
        self.last_seen = 0.0
        self.count = 0

    @property
    def state(self) -> str:
        return DESCRIPTORS_GONE if self.last_seen and time.monotonic() - self.last_seen < STATE_HOLD_S else "ok"

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
                self.saw(exc)
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    def saw(self, exc: OSError) -> None:
        if self.state == "ok":  # one line when it starts, not one per failed accept
            log.warning("%s: new connections wait until some close (%s)", DESCRIPTORS_GONE, exc.strerror)
        self.last_seen = time.monotonic()
        self.count += 1


def host_allowed(request_host: str, listen_host: str, public_url: str | None) -> bool:
    """The `Host` a request names is this server's: a loopback name, the listening host or --public-url's."""
    name = urlsplit(f"http://{request_host}").hostname or ""
    public = urlsplit(public_url).hostname if public_url else None
    return is_loopback(name) or name == listen_host.lower() or name == public


def origin_of(url: str) -> str:
    """scheme://host[:port], lower-case, the scheme's default port left out (as browsers send Origin)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def origin_allowed(origin: str | None, request: web.BaseRequest, public_url: str | None) -> bool:
    """A browser's websocket must come from the page this server served: its own origin or --public-url's.

    No Origin at all is a non-browser client (it carries the token itself: a page cannot leave it out)."""
    if origin is None:
        return True
    served = {origin_of(f"{request.scheme}://{request.host}")}
    if public_url:
        served.add(origin_of(public_url))
    return origin.strip().lower() != "null" and origin_of(origin.strip()) in served - {""}


__all__ = ["BACKLOG", "ConnectionGuard", "DescriptorWatch", "connection_budget", "host_allowed", "is_loopback",
           "origin_allowed", "origin_of"]
