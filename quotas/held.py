"""Connections the limiter keeps checked out of a redis.asyncio client's pool, for its hot path.

redis-py 8 checks a connection out of the pool and back in for every command, with its observability
hooks: more Python per call than the server spends deciding (bench/README.md). `Limiter.check` sends
one pre-encoded command per decision on a connection it keeps instead. The connections still come
from the client's pool, so its address, credentials, TLS, database, timeouts and `max_connections`
apply; at most `keep` idle ones are kept, the rest go back after use.

This is the one module that uses redis-py below its client API: the names in `WIRE_INTERNALS` (written
against redis-py 5 to 8; `pyproject.toml` bounds the version). Where a release lacks one, `pool_of`
answers None and the limiter goes through the public `client.fcall` (slower, never wrong);
`tests/test_seams.py` fails naming what is missing.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

# redis-py below the client API: the pool's check-out/in and a connection's raw send and read
POOL_INTERNALS = ("get_connection", "release", "connection_class")
CONNECTION_INTERNALS = ("send_packed_command", "read_response", "disconnect")
WIRE_INTERNALS = tuple(f"pool.{n}" for n in POOL_INTERNALS) + tuple(f"connection.{n}" for n in CONNECTION_INTERNALS)


def missing_internals(client: Any) -> list[str]:
    """The names of `WIRE_INTERNALS` that this client's pool or connection class lacks."""
    pool = getattr(client, "connection_pool", None)
    missing = [f"pool.{n}" for n in POOL_INTERNALS if not hasattr(pool, n)]
    conn_cls = getattr(pool, "connection_class", None)
    return missing + [f"connection.{n}" for n in CONNECTION_INTERNALS if not hasattr(conn_cls, n)]


class HeldConnections:
    """A small stack of idle connections taken from `pool`; `call` sends one packed command on one."""

    def __init__(self, pool: Any, keep: int = 16) -> None:
        self.pool = pool
        self.keep = keep
        self._idle: list[Any] = []

    @staticmethod
    def pool_of(client: Any) -> Any | None:
        """The pool to hold connections of, or None where the hot path must go through the client
        (a cluster client routes by slot; a single-connection client shares its one connection)."""
        pool = getattr(client, "connection_pool", None)
        if pool is None or getattr(client, "single_connection_client", False) or getattr(client, "connection", None):
            return None
        if missing_internals(client):
            return None  # a redis-py without what `call` uses: the public path
        return pool

    async def call(self, packed: bytes) -> Any:
        """Send `packed` (one RESP command) and read its reply; a server error reply raises ResponseError."""
        idle = self._idle
        conn = idle.pop() if idle else await self.pool.get_connection()
        try:
            await conn.send_packed_command(packed, False)
            reply = await conn.read_response()
        except ResponseError:
            await self._put(conn)  # an error reply was read whole: the connection is in step
            raise
        except BaseException:
            # a reply not read whole (a timeout, a cancellation, a dropped connection) would be read by
            # the next caller as its own: that connection is never used again (redis-py has closed it)
            await self._drop(conn)
            raise
        await self._put(conn)
        return reply

    async def _put(self, conn: Any) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(conn)
        else:
            await self.pool.release(conn)  # more callers at once than we keep: back to the pool

    async def _drop(self, conn: Any) -> None:
        try:
            await conn.disconnect()
        finally:
            await self.pool.release(conn)

    async def aclose(self) -> None:
        """Give every held connection back to the pool."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self.pool.release(conn)
