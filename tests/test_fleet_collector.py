"""Fleet scraping against real HTTP servers on loopback (no mocked HTTP)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collectors.dcgm import PageError, filter_page, parse_page
from collectors.fleet import MAX_PAGE_BYTES, FleetCollector
from collectors.samples import NodeSample
from tests.conftest import L4_CAPTURE

L4 = L4_CAPTURE.read_bytes()


class LoopbackNode:
    """A minimal HTTP/1.1 server (keep-alive) on a loopback port, whose behaviour a test switches."""

    active = 0  # requests being answered right now, across every node (for the concurrency bound)
    max_active = 0

    def __init__(self, mode: str = "ok", body: bytes = L4, tls: ssl.SSLContext | None = None) -> None:
        self.mode, self.body, self.tls = mode, body, tls
        self.port = 0
        self.hits = 0
        self.connections = 0  # TCP connections accepted
        self.requests: list[str] = []  # each request's line and headers, as received
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/metrics"

    async def start(self) -> LoopbackNode:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._conns):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._conns.add(writer)
        self.connections += 1
        try:
            while line := await reader.readline():
                asked = [line]
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    asked.append(line)
                self.hits += 1
                self.requests.append(b"".join(asked).decode("latin-1"))
                if self.mode == "hang":
                    await asyncio.sleep(3600)
                if self.mode == "hangs up":  # the request read, the connection closed without a word
                    break
                if self.mode == "cut short":  # a length declared, a part sent, the connection closed
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(self.body), self.body[:100]))
                    await writer.drain()
                    break
                if self.mode == "endless":  # chunked, no length: 64 KiB chunks until the reader gives up
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
                    chunk = b"# " + b"x" * (65536 - 3) + b"\n"
                    for _ in range(4 * MAX_PAGE_BYTES // len(chunk)):  # ends at 4x the limit all the same
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    continue
                if self.mode == "slow":
                    LoopbackNode.active += 1
                    LoopbackNode.max_active = max(LoopbackNode.max_active, LoopbackNode.active)
                    try:
                        await asyncio.sleep(0.05)
                    finally:
                        LoopbackNode.active -= 1
                status, body, extra = {
                    "ok": ("200 OK", self.body, ""),
                    "slow": ("200 OK", self.body, ""),
                    "closes": ("200 OK", self.body, ""),
                    "gzip": ("200 OK", gzip.compress(self.body), "Content-Encoding: gzip\r\n"),
                    "moved": ("301 Moved Permanently", b"", f"Location: http://127.0.0.1:{self.port}/elsewhere\r\n"),
                    "500": ("500 Internal Server Error", b"boom\n", ""),
                    "garbage": ("200 OK", b"<html><body>It works!</body></html>\n", ""),
                }[self.mode]
                head = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n{extra}"
                        f"Content-Length: {len(body)}\r\n\r\n")
                writer.write(head.encode() + body)
                await writer.drain()
                if self.mode == "closes":  # answered, then the idle kept connection is closed (no "Connection: close")
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(writer)
            self._tasks.discard(task)
            writer.close()


@pytest.fixture
async def nodes() -> AsyncIterator[dict[str, LoopbackNode]]:
    """Five loopback nodes: the L4 capture, one hanging, one failing, one serving garbage, one flapping."""
    ns = {
        m: await LoopbackNode(m if m != "flappy" else "ok").start() for m in ("ok", "hang", "500", "garbage", "flappy")
    }
    try:
        yield ns
    finally:
        for n in ns.values():
            await n.stop()


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_l4_capture_parses_to_its_values() -> None:
    """The real dcgm-exporter L4 page gives the values its README lists."""
    (g,) = parse_page(L4.decode(), "n1")
    assert (g.node, g.index, g.uuid, g.name) == ("n1", 0, "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c", "NVIDIA L4")
    assert (g.util_pct, g.mem_util_pct, g.temp_c, g.power_w, g.sm_clock_mhz) == (0, 0, 31, 16.365, 210)
    assert (g.mem_used_mib, g.mem_total_mib) == (0, 22563 + 0 + 470)
    assert (g.pcie_replay, g.remapped_rows, g.xid, g.throttle, g.status) == (0, 0, None, (), "ok")
    assert g.ecc_uncorrected is None and g.temp_slowdown_c is None and g.power_limit_w is None


def test_filter_keeps_only_used_series_and_labels() -> None:
    """The pre-parse filter drops unused series and labels, keeping gpu/UUID/modelName."""
    body = filter_page(L4.decode())
    assert "DCGM_FI_PROF_PCIE" not in body and "ENC_UTIL" not in body and "pci_bus_id" not in body
    assert "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{" in body  # profiling fields are read (issue 12)
    assert "Hostname" not in body and "DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",UUID=" in body


def test_throttle_and_xid_gauges_decode() -> None:
    """dcgm-exporter's throttle bitmask and XID gauge decode like NVML's."""
    page = (
        'DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{gpu="0",UUID="GPU-a",pci_bus_id="x"} 36\n'
        'DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-a",err_code="79",err_msg="GPU has fallen off the bus"} 79\n'
        'DCGM_FI_DEV_CLOCKS_EVENT_REASONS{gpu="1",UUID="GPU-b"} 8\n'
        'DCGM_FI_DEV_XID_ERRORS{gpu="1",UUID="GPU-b"} 0\n'
        'DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-b"} NaN\n'
    )
    a, b = parse_page(page, "n")
    assert a.throttle == ("power_cap", "thermal") and a.xid == 79
    assert b.throttle == ("hw_slowdown",) and b.xid is None and b.temp_c is None


@pytest.mark.parametrize("text", ["<html>It works</html>", "DCGM_FI_DEV_GPU_TEMP{gpu=\"0\" 31", "\x00\x01\x02"])
def test_garbage_page_raises_page_error(text: str) -> None:
    """Non-Prometheus text raises PageError with a short message."""
    with pytest.raises(PageError, match="not Prometheus text"):
        parse_page(text, "n")


def test_prometheus_page_without_gpus_is_fine() -> None:
    """A valid page with no DCGM series (a GPU-less agent) gives zero GPUs, not an error."""
    assert parse_page("# HELP up x\nnode_load1 0.5\n", "n") == ()


async def test_sweep_marks_each_bad_node_and_never_waits_for_the_hanging_one(nodes: dict[str, LoopbackNode]) -> None:
    """Good node up with values; 500, garbage and hang each get their own error; the hang does not block."""
    urls = [n.url for n in nodes.values()]
    c = FleetCollector(urls, timeout_s=1.5, min_interval_s=0, wait_s=0.75)
    try:
        s1 = await c.poll()
        by = {n.url: n for n in s1.nodes}
        assert [n.url for n in s1.nodes] == urls and s1.source == "scrape"
        ok = by[nodes["ok"].url]
        assert (ok.status, ok.error, len(ok.gpus), ok.gpus[0].temp_c) == ("up", None, 1, 31)
        assert ok.latency_ms is not None and ok.latency_ms >= 0
        down, garbage = by[nodes["500"].url], by[nodes["garbage"].url]
        assert down.status == "down" and down.error is not None and down.error.startswith("HTTP 500")
        assert garbage.error is not None and garbage.error.startswith("not Prometheus text")
        # the sweep came back while the hanging node was still in flight
        assert by[nodes["hang"].url].error == "not scraped yet"
        await asyncio.sleep(1.0)
        s2 = await c.poll()
        hang = {n.url: n for n in s2.nodes}[nodes["hang"].url]
        assert (hang.status, hang.error) == ("down", "timed out after 1.5 s")
    finally:
        await c.aclose()


async def test_node_down_keeps_last_values_ages_then_fresh(nodes: dict[str, LoopbackNode]) -> None:
    """A node that goes down keeps last-known GPUs as stale with a growing age, then comes back fresh."""
    clock = Clock()
    node = nodes["flappy"]
    c = FleetCollector([node.url], timeout_s=1.0, min_interval_s=5.0, clock=clock)
    try:
        up = (await c.poll()).nodes[0]
        assert up.status == "up" and up.gpus[0].status == "ok"
        await node.stop()
        clock.t += 5
        down = (await c.poll()).nodes[0]
        assert down.status == "down" and "cannot connect" in (down.error or "")
        assert down.taken_at == up.taken_at and down.checked_at == clock.t
        assert down.gpus[0].status == "stale" and down.gpus[0].temp_c == 31
        clock.t += 10
        later = (await c.poll()).nodes[0]
        assert later.taken_at == up.taken_at and clock.t - later.taken_at == 15  # the age grows
        await node.start()  # same port
        clock.t += 5
        back = (await c.poll()).nodes[0]
    finally:
        await c.aclose()
    assert back.status == "up" and back.error is None and back.taken_at == clock.t
    assert back.gpus[0].status == "ok"


async def test_node_is_never_scraped_faster_than_min_interval(nodes: dict[str, LoopbackNode]) -> None:
    """Polls within min_interval_s reuse the last scrape; the next one scrapes again."""
    clock = Clock()
    node = nodes["ok"]
    c = FleetCollector([node.url], min_interval_s=5.0, clock=clock)
    try:
        await c.poll()
        clock.t += 1
        s = await c.poll()
        assert node.hits == 1 and s.nodes[0].status == "up"
        clock.t += 4
        await c.poll()
    finally:
        await c.aclose()
    assert node.hits == 2


async def test_an_unchanged_page_is_not_parsed_again_and_a_changed_one_is(nodes: dict[str, LoopbackNode]) -> None:
    """Re-scraping the same page reuses its GPUs (same objects); a page with new values is read anew."""
    clock = Clock()
    node = nodes["ok"]
    c = FleetCollector([node.url], min_interval_s=5.0, clock=clock)
    try:
        first = (await c.poll()).nodes[0]
        clock.t += 5
        again = (await c.poll()).nodes[0]
        node.body = _with_temp(L4, 77)
        clock.t += 5
        changed = (await c.poll()).nodes[0]
    finally:
        await c.aclose()
    assert node.hits == 3
    assert again.gpus is first.gpus and again.taken_at == first.taken_at + 5
    assert first.gpus[0].temp_c == 31 and changed.gpus[0].temp_c == 77


async def test_scrapes_of_a_node_reuse_one_kept_alive_connection(nodes: dict[str, LoopbackNode]) -> None:
    """Three scrapes of a node, 5 s apart, go over one connection; a restarted node gets a new one."""
    clock = Clock()
    node = nodes["flappy"]
    c = FleetCollector([node.url], min_interval_s=5.0, clock=clock)
    try:
        for _ in range(3):
            assert (await c.poll()).nodes[0].status == "up"
            clock.t += 5
        assert (node.hits, node.connections) == (3, 1)
        await node.stop()
        assert (await c.poll()).nodes[0].status == "down"  # the kept connection is gone with the node
        await node.start()
        clock.t += 5
        assert (await c.poll()).nodes[0].status == "up"
    finally:
        await c.aclose()
    assert (node.hits, node.connections) == (4, 2)


def _with_temp(page: bytes, temp_c: int) -> bytes:
    """The page with its DCGM_FI_DEV_GPU_TEMP value replaced."""
    lines = page.split(b"\n")
    out = [ln.rsplit(b" ", 1)[0] + b" %d" % temp_c if ln.startswith(b"DCGM_FI_DEV_GPU_TEMP{") else ln for ln in lines]
    return b"\n".join(out)


async def test_per_node_interval_lets_a_local_agent_be_faster(nodes: dict[str, LoopbackNode]) -> None:
    """A node given a 1 s interval is scraped every second while the others wait their 5 s."""
    clock = Clock()
    fast, slow = nodes["ok"], nodes["flappy"]
    c = FleetCollector([fast.url, slow.url], min_interval_s=5.0, node_intervals={fast.url: 1.0}, clock=clock)
    try:
        for _ in range(3):
            await c.poll()
            clock.t += 1
    finally:
        await c.aclose()
    assert (fast.hits, slow.hits) == (3, 1)


async def test_concurrency_bound_is_enforced() -> None:
    """Eight slow nodes swept with concurrency=3: never more than 3 requests in flight, all read."""
    slow = [await LoopbackNode("slow").start() for _ in range(8)]
    LoopbackNode.active = LoopbackNode.max_active = 0
    c = FleetCollector([n.url for n in slow], concurrency=3, min_interval_s=0, wait_s=None)
    try:
        s = await c.poll()
    finally:
        await c.aclose()
        for n in slow:
            await n.stop()
    assert all(n.status == "up" for n in s.nodes) and LoopbackNode.max_active == 3


async def test_concurrency_bound_holds(nodes: dict[str, LoopbackNode]) -> None:
    """With concurrency=1 the sweep still covers every node, one at a time."""
    urls = [nodes[k].url for k in ("ok", "500", "garbage", "flappy")]
    c = FleetCollector(urls, concurrency=1, min_interval_s=0, wait_s=None)
    try:
        s = await c.poll()
    finally:
        await c.aclose()
    assert [n.status for n in s.nodes] == ["up", "down", "down", "up"]


def test_fixture_path_exists() -> None:
    """The shared dcgm-exporter capture is where conftest says."""
    assert Path(L4_CAPTURE).is_file()


async def one_poll(*nodes: LoopbackNode, timeout_s: float = 30) -> tuple[NodeSample, ...]:
    """One sweep of started loopback nodes (in order), then the collector and the nodes stopped."""
    c = FleetCollector([n.url for n in nodes], min_interval_s=0, wait_s=None)
    try:
        async with asyncio.timeout(timeout_s):  # a hang guard
            return (await c.poll()).nodes
    finally:
        await c.aclose()
        for n in nodes:
            await n.stop()


async def test_oversized_page_is_refused() -> None:
    """A node serving more than the real MAX_PAGE_BYTES is marked down with a clear error: refused on its declared
    length, or (chunked, without one) as soon as more than the limit has come, never read whole; a page of exactly
    the limit is read."""
    at_limit = L4 + b"# " + b"x" * (MAX_PAGE_BYTES - len(L4) - 3) + b"\n"
    assert len(at_limit) == MAX_PAGE_BYTES
    fits = await LoopbackNode("ok", at_limit).start()
    declared = await LoopbackNode("ok", at_limit + b"\n").start()
    endless = await LoopbackNode("endless").start()
    ok, big, chunked = await one_poll(fits, declared, endless, timeout_s=60)  # the endless one cut off at the limit
    assert ok.status == "up" and ok.error is None and len(ok.gpus) == 1
    assert (big.status, big.error) == ("down", f"page too large ({MAX_PAGE_BYTES + 1} bytes)")
    assert (chunked.status, chunked.error) == ("down", f"page too large (over {MAX_PAGE_BYTES} bytes)")


async def test_a_redirect_is_an_error_named_by_its_status_and_not_followed() -> None:
    """A node answering 301 is down with "HTTP 301 Moved Permanently"; its Location is never asked for."""
    moved = await LoopbackNode("moved").start()
    (node,) = await one_poll(moved)
    assert (node.status, node.error) == ("down", "HTTP 301 Moved Permanently")
    assert moved.hits == 1 and moved.requests[0].startswith("GET /metrics HTTP/1.1")


async def test_a_gzip_page_over_the_bound_once_decoded_is_refused_while_reading() -> None:
    """A small gzip body declaring its (compressed) length but decoding past MAX_PAGE_BYTES is refused, never read
    whole; the same page under the bound, gzipped, is read."""
    bomb = await LoopbackNode("gzip", L4 + b"# " + b"x" * MAX_PAGE_BYTES + b"\n").start()
    small = await LoopbackNode("gzip").start()
    refused, read = await one_poll(bomb, small)
    assert (refused.status, refused.error) == ("down", f"page too large (over {MAX_PAGE_BYTES} bytes)")
    assert read.status == "up" and read.gpus[0].temp_c == 31


async def test_a_node_that_closes_its_kept_connection_is_read_again_on_the_next_scrape() -> None:
    """A node closing each connection after answering (without saying so) is up on every scrape, over a new one."""
    clock = Clock()
    node = await LoopbackNode("closes").start()
    c = FleetCollector([node.url], min_interval_s=5.0, clock=clock)
    try:
        async with asyncio.timeout(30):
            for _ in range(3):
                assert (await c.poll()).nodes[0].status == "up"
                clock.t += 5
    finally:
        await c.aclose()
        await node.stop()
    assert (node.hits, node.connections) == (3, 3)


async def test_scrapes_go_through_the_environment_s_proxy_unless_no_proxy_names_the_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HTTP_PROXY set, a node is asked through that proxy (absolute URL, our headers, the proxy's credentials
    from its URL); NO_PROXY exempts one."""
    proxy, direct = await LoopbackNode().start(), await LoopbackNode().start()
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://scraper:s3cret@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    behind = "http://gpu-node.invalid:9400/metrics"  # resolvable by nobody: only the proxy can answer it
    exempt = direct.url.replace("127.0.0.1", "localhost")
    c = FleetCollector([behind, exempt], min_interval_s=0, wait_s=None)
    try:
        async with asyncio.timeout(30):
            via_proxy, not_via = (await c.poll()).nodes
    finally:
        await c.aclose()
        for n in (proxy, direct):
            await n.stop()
    assert via_proxy.status == "up" and not_via.status == "up"
    (asked,) = proxy.requests
    assert asked.startswith(f"GET {behind} HTTP/1.1\r\n")
    assert "User-Agent: surgewatch\r\n" in asked and "Accept: text/plain;version=0.0.4\r\n" in asked
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'scraper:s3cret').decode()}\r\n" in asked
    assert direct.hits == 1 and "Proxy-Authorization" not in direct.requests[0]  # the proxy's secret stays its own


async def test_a_node_that_hangs_up_or_cuts_its_page_short_is_down_by_name() -> None:
    """A node closing the connection without answering, and one closing it mid-page, are each down with a name."""
    silent, cut = await LoopbackNode("hangs up").start(), await LoopbackNode("cut short").start()
    hung_up, short = await one_poll(silent, cut)
    assert (hung_up.status, hung_up.error) == ("down", "disconnected before answering")
    assert short.status == "down" and (short.error or "").startswith("page cut short (")


def _internal_ca(tmp: Path) -> tuple[Path, ssl.SSLContext]:
    """An internal CA (openssl) and a server context whose certificate it signed for 127.0.0.1."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True, timeout=60)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=surgewatch test CA")
    run("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-out", "node.pem", "-extfile", "san.ext")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "node.pem", tmp / "node.key")
    return tmp / "ca.pem", server


async def test_a_tls_node_signed_by_an_internal_ca_is_read_once_ssl_cert_file_names_the_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An https node whose CA is not in the system store cannot be trusted (down, "cannot connect"); with
    SSL_CERT_FILE naming that CA it is read."""
    ca, server = _internal_ca(tmp_path)
    node = await LoopbackNode(tls=server).start()
    try:
        async with asyncio.timeout(30):
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
            c = FleetCollector([node.url], min_interval_s=0, wait_s=None)
            try:
                (untrusted,) = (await c.poll()).nodes
            finally:
                await c.aclose()
            monkeypatch.setenv("SSL_CERT_FILE", str(ca))
            c = FleetCollector([node.url], min_interval_s=0, wait_s=None)
            try:
                (trusted,) = (await c.poll()).nodes
            finally:
                await c.aclose()
    finally:
        await node.stop()
    assert untrusted.status == "down" and (untrusted.error or "").startswith("cannot connect (")
    assert (trusted.status, trusted.error, trusted.gpus[0].temp_c) == ("up", None, 31)
