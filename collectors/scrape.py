"""Fetching /metrics pages over HTTP: one aiohttp session per collector, and what a failure is called.

The node and inference-server scrapes (collectors.sweep, for collectors.fleet and collectors.serving)
go through a PageFetcher: one `aiohttp.ClientSession` whose connector keeps one connection alive per
server between scrapes and is bounded by the collector's concurrency. aiohttp's request path costs
about a third of the CPU of one kept-alive httpx client per server, which a replica sweep mostly was
(one sweep of 512 replicas serving the 21 KB vLLM page, fetch only: 47 ms of CPU against 163 ms;
bench/serving_sweep.py).

Prometheus mode (collectors.prometheus, collectors.serving_prometheus) keeps httpx: a few queries a
poll. `scrape_error` names the failures of both libraries the same way.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import sys
import urllib.request
from typing import NamedTuple

import aiohttp
from yarl import URL

from collectors.dcgm import PageError
from collectors.runner import describe_error
from quotas.safe import safe

MAX_PAGE_BYTES = 8 * 1024 * 1024  # a node serving more than this is broken, not a GPU server
HEADERS = {"Accept": "text/plain;version=0.0.4", "User-Agent": "surgewatch"}
READ_CHUNK_BYTES = 64 * 1024


def scrape_error(exc: BaseException, timeout_s: float) -> str:
    """A short, credential-free reason for a status column; what a server said is made visible (quotas.safe)."""
    return safe(_scrape_error(exc, timeout_s), 160)


def _scrape_error(exc: BaseException, timeout_s: float) -> str:
    # httpx is Prometheus mode's (it imports it): a console scraping nodes does not load it (megabytes), and
    # an httpx error cannot exist in a process that never imported httpx
    hx = sys.modules.get("httpx")
    # aiohttp's ServerTimeoutError and ConnectionTimeoutError are TimeoutErrors too
    if isinstance(exc, TimeoutError) or (hx and isinstance(exc, hx.TimeoutException)):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}".strip()
    if hx and isinstance(exc, hx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}".strip()
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({_words(exc.os_error) or 'refused'})"
    if hx and isinstance(exc, hx.ConnectError):
        return f"cannot connect ({_words(exc) or 'refused'})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected before answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"page cut short ({_words(exc) or 'truncated'})"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection lost ({_words(exc) or type(exc).__name__})"
    if isinstance(exc, PageError):
        return str(exc)
    return describe_error(exc)[:120]


def _words(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:80]


class _Target(NamedTuple):
    """A scraped URL as every fetch of it needs it: parsed once, its proxy read once."""

    url: URL
    proxy: URL | None  # from the environment (_env_proxy)
    proxy_auth: dict[str, str] | None  # the proxy's credentials, as a Proxy-Authorization header
    tls: ssl.SSLContext | bool


def _env_proxy(url: URL) -> tuple[URL | None, dict[str, str] | None]:
    """The proxy HTTP(S)_PROXY / ALL_PROXY name for `url` (None where NO_PROXY exempts it), as httpx read
    them; credentials in the proxy's URL become a Proxy-Authorization header (aiohttp's `proxy=` drops them)."""
    proxies = urllib.request.getproxies_environment()
    if not proxies or (url.host and urllib.request.proxy_bypass(url.host)):  # NO_PROXY (no_proxy), on Linux
        return None, None
    raw = proxies.get(url.scheme or "http") or proxies.get("all")
    if not raw:
        return None, None
    proxy = URL(raw)
    if proxy.user is None:
        return proxy, None
    secret = base64.b64encode(f"{proxy.user}:{proxy.password or ''}".encode()).decode("ascii")
    return proxy.with_user(None), {"Proxy-Authorization": f"Basic {secret}"}


class PageFetcher:
    """GETs /metrics pages for one collector: one aiohttp session, made on the first fetch (inside the
    running loop) and closed by `aclose`.

    - `concurrency` connections at most in flight; one connection per server is kept alive for
      `keepalive_s` (the caller's: past its next scrape), so a sweep does not reconnect.
    - Every fetch is bounded by `timeout_s`, and a page by MAX_PAGE_BYTES (decoded, so a gzip bomb stops
      too): a broken server must not eat the console's memory.
    - No redirect is followed: a 3xx is an error like any non-2xx ("HTTP 301 Moved Permanently").
    - TLS is verified against the system's default context (ssl.create_default_context): an internal
      CA in the system store, or named by SSL_CERT_FILE / SSL_CERT_DIR, works.
    - HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY are honoured as httpx honoured them: read once per
      URL, on its first fetch. Not through aiohttp's trust_env, which also sends ~/.netrc credentials
      and re-reads the environment in a worker thread on every request (two thread hops per scrape:
      measured 330 us of CPU per fetch against 85 us).
    """

    def __init__(self, timeout_s: float, concurrency: int, keepalive_s: float) -> None:
        self.timeout_s = timeout_s
        self.concurrency = max(1, concurrency)
        self.keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            limit_per_host=0,  # URLs on one host:port (distinct paths) must not queue behind each other
            keepalive_timeout=self.keepalive_s,
        )
        # the fetch's own asyncio.timeout bounds it; aiohttp's default (300 s total) would only add a timer
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),  # a scrape carries no cookies from one server to the next
            trust_env=False,
        )
        return self._session

    async def fetch(self, url: str) -> bytes:
        """The page at `url`; raises aiohttp's errors, TimeoutError, PageError (too large)."""
        session = self._session or self._open()
        t = self._targets.get(url)
        if t is None:  # a URL parsed once (a twentieth of a fetch's CPU), not on every scrape
            parsed = URL(url)
            t = self._targets[url] = _Target(parsed, *_env_proxy(parsed),
                                             tls=self._tls_context() if parsed.scheme == "https" else True)
        # through a proxy, plain http is asked of the proxy itself; https tunnels (CONNECT) with proxy_headers
        tunnel = t.url.scheme == "https"
        async with asyncio.timeout(self.timeout_s):
            async with session.get(t.url, allow_redirects=False, proxy=t.proxy, ssl=t.tls,
                                   headers=None if tunnel else t.proxy_auth,
                                   proxy_headers=t.proxy_auth if tunnel else None) as r:
                if not 200 <= r.status < 300:
                    raise aiohttp.ClientResponseError(
                        r.request_info, r.history, status=r.status, message=r.reason or "", headers=r.headers
                    )
                declared = r.content_length
                if declared is not None and declared > MAX_PAGE_BYTES:
                    raise PageError(f"page too large ({declared} bytes)")
                if declared is not None and r.headers.get("Content-Encoding", "identity") == "identity":
                    return await r.read()  # the declared length is what arrives: within the bound
                return await _read_bounded(r.content)

    def _tls_context(self) -> ssl.SSLContext:
        # built on the first https fetch (15 ms of loading the system's CAs, once; none for plain http), so
        # SSL_CERT_FILE as the process has it then counts
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _read_bounded(stream: aiohttp.StreamReader) -> bytes:
    """The decoded body, refused as soon as more than MAX_PAGE_BYTES has come (never read whole)."""
    chunks, size = [], 0
    async for chunk in stream.iter_chunked(READ_CHUNK_BYTES):
        size += len(chunk)
        if size > MAX_PAGE_BYTES:
            raise PageError(f"page too large (over {MAX_PAGE_BYTES} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)
