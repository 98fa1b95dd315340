"""The sweep when servers hang: who gets the concurrency's slots first, a one-shot read's deadline, and a
snapshot with more hanging servers than the sweep's concurrency. Real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from collectors.serving import ServingCollector
from surgewatch.serving_json import NOT_READ
from surgewatch.snapshot import take_snapshot
from tests.test_serving_collector import vllm_page
from tui.testing import MetricsNode


class PathServer:
    """An HTTP server on 127.0.0.1 that answers by path: /hang/... never answers (until closed), /fail/...
    is an HTTP 500, anything else a vLLM page; `paths` lists the requests in the order they arrived."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.port = 0
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # one connection is kept alive across scrapes
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.paths.append(path)
                if path.startswith("/hang/"):
                    await self._release.wait()
                    return
                status, body = ("500 Internal Server Error", b"boom") if path.startswith("/fail/") \
                    else ("200 OK", vllm_page(waiting=7).encode())
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PathServer]:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._release.set()
            self._server.close()
            await self._server.wait_closed()


async def test_a_server_whose_last_scrape_failed_is_asked_after_the_others() -> None:
    """One slot: the first sweep asks in the given order; the next asks the server that answered first."""
    async with PathServer().running() as srv:
        c = ServingCollector([srv.url("/fail/a"), srv.url("/ok/b")], concurrency=1, min_interval_s=0, wait_s=None,
                             timeout_s=5.0)
        try:
            first = await c.poll()
            await c.poll()
        finally:
            await c.aclose()
    assert [r.status for r in first.replicas] == ["down", "up"]
    assert srv.paths == ["/fail/a", "/ok/b", "/ok/b", "/fail/a"]


async def test_give_up_names_the_servers_never_read_and_keeps_what_the_others_said() -> None:
    """At a one-shot read's end, a server fetching and one waiting for a slot are NOT_READ; one read stays up."""
    async with PathServer().running() as srv:
        c = ServingCollector([srv.url("/ok/a"), srv.url("/hang/b"), srv.url("/ok/c")], concurrency=1,
                             min_interval_s=1000, wait_s=None, timeout_s=60.0)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(20):
                s = await c.poll(deadline=loop.time())
                while s.replicas[0].status != "up" or "/hang/b" not in srv.paths:  # /ok/c waits behind /hang/b
                    s = await c.poll(deadline=loop.time() + 0.05)
            s = await c.give_up(NOT_READ)
        finally:
            await c.aclose()
    a, b, c_ = s.replicas
    assert a.status == "up" and s.models[0].figures.waiting == 7
    assert (b.status, b.error, c_.status, c_.error) == ("down", NOT_READ, "down", NOT_READ)
    assert "/ok/c" not in srv.paths


async def test_snapshot_reads_a_healthy_server_behind_more_hanging_servers_than_the_sweeps_concurrency() -> None:
    """70 servers that never answer (the sweep asks 64 at a time) and one that does: the healthy one's figures
    are in `serving`, each hanging one is down "timed out", and the source is not lost as a whole."""
    async with PathServer().running() as srv:
        hanging = [srv.url(f"/hang/{i}") for i in range(70)]
        with MetricsNode(vllm_page(waiting=7)) as healthy:
            doc = await take_snapshot(redis_url=None, prefix="surgewatch:", nodes=[], prometheus=None, local=False,
                                      servers=[*hanging, healthy.url])
    assert "serving" not in doc["errors"] and doc["serving"] is not None
    replicas = {r["url"]: r for r in doc["serving"]["replicas"]}
    assert replicas[healthy.url]["status"] == "up"
    (m,) = doc["serving"]["models"]
    assert m["waiting"] == 7 and m["replicas_up"] == 1
    assert {(replicas[u]["status"], replicas[u]["error"]) for u in hanging} == {("down", "timed out after 2 s")}
