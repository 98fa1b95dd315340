"""`surgewatch serve`: the wall console for browsers, one collection for every viewer.

One wall console (the real app, `--wall`: read-only, no edit binding) runs headless in this process and
collects once. Once a second, while anyone watches, its screen is exported as SVG (Textual's own
screenshot), gzip'd once, and the same bytes go to every viewer's websocket: N viewers cost the nodes and
Redis what none costs, and this process about one export a second. The page (tui/serve_page.py) is
self-contained: no font, script or style from anywhere but this server. Nothing a browser sends reaches
the app except three whitelisted commands (pause the panel cycle, previous and next panel): no key,
click or message can write to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractAccessLogger

from surgewatch.settings import Settings
from tui.serve_page import FULL_PAGE, LOGIN_PAGE, PAGE

log = logging.getLogger("surgewatch.serve")
COOKIE = "surgewatch_wall"
FONT_FACE = re.compile(r"@font-face\s*\{[^}]*\}")  # Rich's SVG links its font from a CDN: the page never does
COMMENT = re.compile(r"<!--.*?-->", re.S)
COMMANDS = {"pause": ("action_pause_cycle", ()), "prev": ("action_panel", (-1,)), "next": ("action_panel", (1,))}


def cookie_value(token: str) -> str:
    """What the login cookie holds: derived from the token (it survives a restart), never the token."""
    return hmac.new(token.encode(), b"surgewatch serve login", hashlib.sha256).hexdigest()


def clean_svg(svg: str) -> str:
    """The screenshot without its web-font links (the browser's own monospace font takes their place)."""
    return COMMENT.sub("", FONT_FACE.sub("", svg))


class RedactedAccessLog(AbstractAccessLogger):
    """Method, path and status: never the query string (it may hold `?token=`) nor any header."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time)


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    public_url: str | None = None
    max_viewers: int = 20
    size: tuple[int, int] = (160, 48)
    frame_s: float = 1.0


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
                svg = clean_svg(self.app.export_screenshot(title="surgewatch wall"))
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
        return await handler(request)

    async def page(self, request: web.Request) -> web.Response:
        if len(self.viewers) >= self.options.max_viewers:
            return web.Response(status=503, text=FULL_PAGE.replace("{max}", str(self.options.max_viewers)),
                                content_type="text/html")
        html = PAGE.replace("{base}", self._base())
        return web.Response(text=html, content_type="text/html", headers={
            "Cache-Control": "no-store",
            # nothing from anywhere else, whatever ends up in the page
            "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "img-src 'self' data:; connect-src 'self'",
        })

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20, compress=False, max_msg_size=4096)
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
                    self._command(msg.data)
        finally:
            self.viewers.discard(ws)
        return ws

    def _command(self, data: str) -> None:
        """The only browser input there is: pause/resume the panel cycle, previous or next panel."""
        try:
            name = json.loads(data).get("cmd")
        except (ValueError, AttributeError):
            return
        if name in COMMANDS and self.app is not None and getattr(self.app, "overview", None) is not None:
            method, args = COMMANDS[name]
            self.app.call_later(getattr(self.app.overview, method), *args)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"viewers": len(self.viewers), "frames": self.frames_made,
                                  "last_frame_at": self._frame_at or None})

    def web_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self.page)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/health", self.health)
        return app

    # ----- running
    async def run(self, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
        self.app = self._make_app()
        console = asyncio.create_task(self.app.run_async(headless=True, size=self.options.size))
        frames = asyncio.create_task(self._frames())
        runner = web.AppRunner(self.web_app(), access_log_class=RedactedAccessLog,
                               access_log=logging.getLogger("surgewatch.serve.access"))
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.port)
        try:
            await site.start()
            if ready is not None:
                ready.set()
            waiters = [console] + ([asyncio.create_task(stop.wait())] if stop is not None else [])
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            frames.cancel()
            for ws in list(self.viewers):
                with contextlib.suppress(Exception):
                    await ws.close(code=1012, message=b"server restarting")
            await runner.cleanup()
            if self.app.is_running:
                self.app.exit()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(console, 5)


__all__ = ["ServeOptions", "WallServer", "clean_svg", "cookie_value"]
