"""`surgewatch serve`'s log: access lines and warnings only, bounded in rate and in line length.

A flood (thousands of refused requests, a storm of connection errors) must cost the disk a few lines a
second, never megabytes: the handler lets `lines_per_window` lines through per window and then counts,
and the next window opens with one line saying how many were left out. No scrape is logged: httpx and
httpcore say one line per request at INFO, so serve keeps them at WARNING.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from tui.serve_svg import visible_controls

LINES_PER_WINDOW = 50
WINDOW_S = 10.0
MAX_LINE_CHARS = 2000  # a traceback or a hostile header cut to this (its first lines say what it was)
QUIET_LOGGERS = ("httpx", "httpcore")  # one INFO line per scrape: not the wall's business


class RedactedAccessLog(AbstractAccessLogger):
    """Method, path and status: never the query string (it may hold `?token=`) nor any header."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # the path is the client's: a control character in it is written visible, never raw
        self.logger.info("%s %s %s %.3fs", request.method, visible_controls(request.path[:200]), response.status, time)


class RateLimitedHandler(logging.StreamHandler):
    """At most `lines` records per `window_s`, each at most MAX_LINE_CHARS; the rest counted, then said."""

    def __init__(self, stream: TextIO, lines: int = LINES_PER_WINDOW, window_s: float = WINDOW_S) -> None:
        super().__init__(stream)
        self.lines, self.window_s = lines, window_s
        self._window_start = time.monotonic()
        self._passed = 0
        self.suppressed = 0  # in the current window
        self.suppressed_total = 0

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + f" … ({len(text)} chars, cut)"

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            self._say_suppressed()
            self._window_start, self._passed = now, 0
        if self._passed >= self.lines:
            self.suppressed += 1
            self.suppressed_total += 1
            return
        self._passed += 1
        super().emit(record)

    def _say_suppressed(self) -> None:
        if self.suppressed:
            note = logging.LogRecord("surgewatch.serve", logging.WARNING, __file__, 0,
                                     "log rate limit: %d lines left out in %.0f s (at most %d per %.0f s)",
                                     (self.suppressed, self.window_s, self.lines, self.window_s), None)
            super().emit(note)
            self.suppressed = 0

    def close(self) -> None:
        self.acquire()
        try:
            self._say_suppressed()  # the last window's count is not lost at exit
        finally:
            self.release()
        super().close()


def configure(stream: TextIO) -> RateLimitedHandler:
    """The process's one log handler: serve's own lines at INFO, everything else at WARNING, all rate-limited."""
    handler = RateLimitedHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("surgewatch.serve").setLevel(logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


__all__ = ["RateLimitedHandler", "RedactedAccessLog", "configure"]
