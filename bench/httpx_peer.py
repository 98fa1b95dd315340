"""The benches' httpx peer: one httpx client per server keeping one connection alive, as surgewatch
scraped until it moved to aiohttp (collectors/scrape.py). A peer measured beside ours in the same run."""

from __future__ import annotations

import ssl

import httpx

HEADERS = {"Accept": "text/plain;version=0.0.4", "User-Agent": "surgewatch"}


def httpx_clients(urls: list[str], timeout_s: float) -> dict[str, httpx.AsyncClient]:
    """One client per URL, one kept-alive connection each, one shared TLS context (building one costs ms)."""
    tls: ssl.SSLContext = httpx.create_ssl_context()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30.0)
    return {u: httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits, headers=HEADERS,
                                 follow_redirects=False, verify=tls) for u in urls}
