"""`rediss://` against a server that speaks plain text: named at once, not after a TLS timeout.

A plain-text Redis reads a TLS ClientHello as the start of an inline command and waits for its end, so
the client's handshake only ends at its timeout, as "unreachable". One plain-text PING first (a loopback
round trip) tells the two apart: a server that answers `+PONG` (or `-NOAUTH`) in plain text is not
speaking TLS, and the URL is wrong.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from quotas.model import QuotaError


async def plain_text_answer(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when the server at host:port answers a plain-text PING as Redis does."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
    return line.startswith((b"+PONG", b"-NOAUTH", b"-ERR", b"-WRONGPASS"))


async def refuse_tls_mismatch(url: str, timeout_s: float = 1.0) -> None:
    """QuotaError (exit 2) when a `rediss://` URL names a server that speaks plain text; else nothing."""
    parts = urlsplit(url.split(",", 1)[0])
    if parts.scheme != "rediss" or not parts.hostname:
        return
    port = parts.port or 6379
    if await plain_text_answer(parts.hostname, port, timeout_s):
        raise QuotaError(
            f"rediss:// asks for TLS, but the server at {parts.hostname}:{port} speaks plain text: "
            "use redis:// (or enable TLS on the server)"
        )
