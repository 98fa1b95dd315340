"""`surgewatch serve`: the wall console for browsers, one collection for every viewer.

One wall console (the real app, `--wall`: read-only, no edit binding) runs headless in this process and
collects once. Once a second, while anyone watches, its screen is exported as SVG (Textual's own
screenshot), gzip'd once, and the same bytes go to every viewer's websocket: N viewers cost the nodes and
Redis what none costs, and this process about one export a second. The page (tui/serve_page.py) is
self-contained: no font, script or style from anywhere but this server. Nothing a browser sends reaches
the app except three whitelisted commands (pause the panel cycle, previous and next panel): no key,
click or message can write to Redis; anything else is refused with a named reason. What keeps it
answering under a flood (connection bounds, the websocket's Origin check) is tui/serve_guard.py; its
log, rate-limited, is tui/serve_log.py; what the screenshot becomes for a page is tui/serve_svg.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from aiohttp import WSMsgType, web

from surgewatch.frontends import ServeOptions
from surgewatch.settings import Settings
from tui.serve_guard import (
    BACKLOG,
    ConnectionGuard,
    DescriptorWatch,
    connection_budget,
    host_allowed,
    is_loopback,
    origin_allowed,
)
from tui.serve_log import RedactedAccessLog
from tui.serve_page import FULL_PAGE, LOGIN_PAGE, PAGE
from tui.serve_svg import visible_controls, wall_svg

log = logging.getLogger("surgewatch.serve")
COOKIE = "surgewatch_wall"
COMMANDS = {"pause": ("action_pause_cycle", ()), "prev": ("action_panel", (-1,)), "next": ("action_panel", (1,))}
MAX_MESSAGE_BYTES = 4096  # a command is a dozen bytes; anything near this is not one
SHUTDOWN_S = 2.0  # at SIGTERM: what a handler in flight gets before its connection is cut


def cookie_value(token: str) -> str:
    """What the login cookie holds: derived from the token (it survives a restart), never the token."""
    return hmac.new(token.encode(), b"surgewatch serve login", hashlib.sha256).hexdigest()


def command_of(data: str) -> tuple[str | None, str | None]:
    """(command, None) for one of the three commands, else (None, why it is refused)."""
    try:
        message = json.loads(data)
    except ValueError:
        return None, "not JSON"
    name = message.get("cmd") if isinstance(message, dict) else None
    if not isinstance(name, str):
        return None, 'not a command: {"cmd": "pause" | "prev" | "next"} expected'
    if name not in COMMANDS:
        return None, f"unknown command {visible_controls(name[:40])!r}"
    return name, None


class WallServer:
    """The headless wall app, its frame loop and the HTTP/websocket server in one event loop."""

    def __init__(self, settings: Settings, options: ServeOptions, **app_overrides: Any) -> None:
        self.settings = replace(settings, wall=True, read_only=True)
        self.options = options
        self._app_overrides = app_overrides
        self.viewers: set[web.WebSocketResponse] = set()
        self.app: Any = None
        self._frame: bytes = b""
        self._frame_svg = ""
        self._frame_at = 0.0
        self.frames_made = 0  # exports so far (one per changed second while watched, whatever the viewers)
        budget = connection_budget(options.max_connections, len(settings.nodes))
        # room for every viewer's socket and page load; the rest may wait for a login, oldest closed first
        self.guard = ConnectionGuard(budget, max(4, min(64, budget - 2 * options.max_viewers)))
        self.descriptors = DescriptorWatch()
        self.refused_messages = 0

    # ----- the console
    def _make_app(self) -> Any:
        from tui.app import create_app

        return create_app(self.settings, **self._app_overrides)

    async def _frames(self) -> None:
        while True:
            await asyncio.sleep(self.options.frame_s)
            if not self.viewers or self.app is None or not self.app.is_running:
                continue
            try:
                svg = wall_svg(self.app.export_screenshot(title="surgewatch wall"))
            except Exception as e:  # mid-recompose: the next second's frame
                log.debug("frame skipped: %s", e)
                continue
            now = time.time()
            if svg != self._frame_svg:
                self._frame_svg, self._frame = svg, gzip.compress(svg.encode(), 6)
                self.frames_made += 1
                await self._broadcast(self._frame)
            self._frame_at = now
            await self._broadcast(json.dumps({"type": "tick", "at": now}))

    async def _broadcast(self, data: bytes | str) -> None:
        for ws in list(self.viewers):
            try:
                if isinstance(data, bytes):
                    await asyncio.wait_for(ws.send_bytes(data), 5)
                else:
                    await asyncio.wait_for(ws.send_str(data), 5)
            except Exception:
                self.viewers.discard(ws)  # gone or too slow: its page reconnects by itself
                with contextlib.suppress(Exception):
                    await ws.close()

    # ----- HTTP
    def _base(self) -> str:
        """Where the page's URLs start: relative to the page, or built from --public-url."""
        return self.options.public_url.rstrip("/") + "/" if self.options.public_url else "./"

    def _authorized(self, request: web.Request) -> bool:
        token = self.options.token
        if token is None:
            return True
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), cookie_value(token).encode())

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = self.options.token
        if token is None and is_loopback(self.options.host) and \
                not host_allowed(request.host, self.options.host, self.options.public_url):
            # no login on loopback: only a browser that asked for this machine by a loopback name gets in
            return web.Response(status=421, text="misdirected: this wall answers on its loopback address only\n")
        given = request.query.get("token")
        if token is not None and given is not None:
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html")
            # accepted once: from now on the cookie, and the token leaves the address bar
            resp = web.HTTPSeeOther(self._base() + request.path.rsplit("/", 1)[-1])
            secure = bool(self.options.public_url and self.options.public_url.startswith("https:"))
            resp.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="Strict", secure=secure)
            return resp
        if not self._authorized(request):
            return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html",
                                headers={"WWW-Authenticate": 'Bearer realm="surgewatch"'})
        self.guard.authenticated(request.transport)  # no longer counted among those waiting for a login
        return await handler(request)

    async def page(self, request: web.Request) -> web.Response:
        if len(self.viewers) >= self.options.max_viewers:
            return web.Response(status=503, text=FULL_PAGE.replace("{max}", str(self.options.max_viewers)),
                                content_type="text/html")
        nonce = secrets.token_urlsafe(16)
        html = PAGE.replace("{base}", self._base()).replace("{nonce}", nonce)
        return web.Response(text=html, content_type="text/html", headers={
            "Cache-Control": "no-store",
            # nothing from anywhere else, whatever ends up in the page; the page's one script runs by its
            # nonce, so a handler attribute that got into a frame (onerror=...) never runs
            "Content-Security-Policy": f"default-src 'self'; script-src 'nonce-{nonce}'; "
                                       "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'",
        })

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request, self.options.public_url):
            # a page elsewhere (same site or not) must not get the wall with the viewer's cookie
            log.warning("websocket refused: Origin %s is not this server's page", visible_controls(str(origin)[:100]))
            return web.Response(status=403, text="websocket refused: not opened from this server's page\n")
        ws = web.WebSocketResponse(heartbeat=20, compress=False, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        if len(self.viewers) >= self.options.max_viewers:
            await ws.send_str(json.dumps({"type": "full", "max": self.options.max_viewers}))
            await ws.close(code=4000, message=b"too many viewers")
            return ws
        self.viewers.add(ws)
        try:
            await ws.send_str(json.dumps({"type": "hello", "frame_s": self.options.frame_s, "at": time.time()}))
            if self._frame:
                await ws.send_bytes(self._frame)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    name, why = command_of(msg.data)
                elif msg.type == WSMsgType.ERROR:  # aiohttp closes with 1009 (too big) or 1002 (malformed)
                    name, why = None, f"over {MAX_MESSAGE_BYTES} bytes or malformed: closed ({ws.close_code})"
                else:
                    name, why = None, "binary message"
                if name is not None:
                    self._command(name)
                elif why is not None:
                    await self._refuse(ws, why)
        finally:
            self.viewers.discard(ws)
        return ws

    async def _refuse(self, ws: web.WebSocketResponse, why: str) -> None:
        """A message that is not a command: said to the page and in the log (rate-limited), nothing done."""
        self.refused_messages += 1
        log.info("websocket message refused: %s", why)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.send_str(json.dumps({"type": "refused", "reason": why})), 5)

    def _command(self, name: str) -> None:
        """The only browser input there is: pause/resume the panel cycle, previous or next panel."""
        if self.app is not None and getattr(self.app, "overview", None) is not None:
            method, args = COMMANDS[name]
            self.app.call_later(getattr(self.app.overview, method), *args)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"viewers": len(self.viewers), "frames": self.frames_made,
                                  "last_frame_at": self._frame_at or None, "state": self.descriptors.state,
                                  "connections": {"open": self.guard.open_count, "max": self.guard.max_open,
                                                  "evicted": self.guard.evicted, "refused": self.guard.refused},
                                  "refused_messages": self.refused_messages})

    def web_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self.page)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/health", self.health)
        return app

    # ----- running
    async def run(self, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
        self.app = self._make_app()
        self.descriptors.install(asyncio.get_running_loop())
        # keepalive_timeout: aiohttp starts this timer at accept, so it also closes a client that never
        # sends a request or sends its headers a byte at a time; shutdown_timeout bounds SIGTERM
        runner = web.AppRunner(self.web_app(), access_log_class=RedactedAccessLog,
                               access_log=logging.getLogger("surgewatch.serve.access"),
                               keepalive_timeout=self.options.client_timeout_s, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        assert runner.server is not None
        self.guard.install(runner.server)
        site = web.TCPSite(runner, self.options.host, self.options.port, backlog=BACKLOG)
        try:
            await site.start()  # before the console starts: an app torn down while it mounts dies in Textual
        except BaseException:
            await runner.cleanup()
            raise
        console = asyncio.create_task(self.app.run_async(headless=True, size=self.options.size))
        frames = asyncio.create_task(self._frames())
        try:
            if ready is not None:
                ready.set()
            waiters = [console] + ([asyncio.create_task(stop.wait())] if stop is not None else [])
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            frames.cancel()
            for ws in list(self.viewers):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=1012, message=b"server restarting"), 1)
            self.guard.close_all()  # hundreds of idle sockets must not hold the exit
            await runner.cleanup()
            if self.app.is_running:
                self.app.exit()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(console, 5)


__all__ = ["ServeOptions", "WallServer", "command_of", "cookie_value"]
