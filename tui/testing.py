"""Helpers for tests and benchmarks of the console: a real loopback /metrics node, frozen data, and
reading the screen as text. Nothing here is used by the console itself."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from collectors.runner import Reading
from collectors.samples import (
    FleetSample,
    GpuSample,
    GpusSample,
    HostSample,
    NodeSample,
    Source,
    TierTraffic,
    TrafficSample,
)
from quotas.model import Quota

FROZEN_NOW = 1_780_000_000.0  # a fixed clock for snapshots


def multiply_page(page: str, gpus: int) -> str:
    """A dcgm-exporter page for `gpus` GPUs, made from a one-GPU capture (index and UUID rewritten)."""
    lines = [ln for ln in page.splitlines() if ln and not ln.startswith("#")]
    comments = [ln for ln in page.splitlines() if ln.startswith("#")]
    out = list(comments)
    for i in range(gpus):
        for ln in lines:
            ln = re.sub(r'gpu="\d+"', f'gpu="{i}"', ln)
            ln = re.sub(r'UUID="GPU-[^"]*"', f'UUID="GPU-{i:08d}-0000-0000-0000-000000000000"', ln)
            ln = re.sub(r'device="nvidia\d+"', f'device="nvidia{i}"', ln)
            out.append(ln)
    return "\n".join(out) + "\n"


class MetricsNode:
    """A real HTTP server on 127.0.0.1 serving a Prometheus page at any path; stop/start keep the port.

    HTTP/1.1 with keep-alive, as dcgm-exporter (Go's net/http) serves; stop() also drops the open
    connections, so a stopped node is down for a client that kept one."""

    def __init__(self, page: str | Callable[[], str], port: int = 0) -> None:
        self.page = page
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.hits = 0
        self._conns: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> MetricsNode:
        node = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                node._conns.add(self.connection)

            def finish(self) -> None:
                node._conns.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                node.hits += 1
                body = (node.page() if callable(node.page) else node.page).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes its handler thread, which then closes it
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> MetricsNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def screen_text(app: Any) -> str:
    """What the terminal shows right now, as plain text (one line per row)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def region_text(app: Any, widget: Any) -> list[str]:
    """The rows of the screen inside `widget`'s content region, as the terminal shows them (right-trimmed)."""
    region = widget.content_region
    rows = screen_text(app).splitlines()[region.y: region.y + region.height]
    return [row[region.x: region.x + region.width].rstrip() for row in rows]


def notifications(app: Any) -> list[str]:
    """The messages of the toasts the app raised that are still up (Textual keeps them in a private list: none
    read when a version renames it, and a test that needs one then fails on its own assertion)."""
    return [str(n.message) for n in getattr(app, "_notifications", ())]


def _context(app: Any) -> str:
    """The screen, the screen stack, what has focus and the toasts raised: what a failed wait needs to be read."""
    return (f"{screen_text(app)}\nscreens: {[type(s).__name__ for s in app.screen_stack]}"
            f"\nfocused: {app.screen.focused!r}\nnotifications: {notifications(app)}")


async def wait_until(pilot: Any, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Let the app run until `predicate()` is truthy; fail with the screen when it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}\n{_context(pilot.app)}")
        await pilot.pause(0.05)


# ----- frozen data: the same fleet every time, for snapshot tests
def _q(tier: str, limit: int, window_s: int, cap: int | None = None, *, paused: bool = False, mode: str = "enforce",
       expires_at: float | None = None, version: int = 1) -> Quota:
    return Quota(tier, limit, window_s, cap, paused, mode, expires_at, version, "alice", FROZEN_NOW - 600)  # type: ignore[arg-type]  # frozen test data: mode is one of the Literal's values


def frozen_readings(now: float = FROZEN_NOW, nodes: int = 4, gpus_per_node: int = 8) -> dict[Source, Reading[Any]]:
    """Deterministic readings: local GPUs, a fleet with one down node, a host, five tiers."""
    def gpu(node: str, i: int, k: int) -> GpuSample:
        temp = 45.0 + (k * 7) % 45
        return GpuSample(
            node, i, uuid=f"GPU-{k:04d}", name="NVIDIA L4", util_pct=float((k * 13) % 101),
            mem_util_pct=30.0, mem_used_mib=1024.0 * (k % 20), mem_total_mib=23034.0, temp_c=temp,
            temp_slowdown_c=87.0, power_w=40.0 + k % 30, power_limit_w=72.0, sm_clock_mhz=2040.0 - (k % 5) * 100,
            throttle=("thermal",) if k % 17 == 5 else (), xid=79 if k == 11 else None,
            status="lost" if k == 103 else "ok",
        )

    local = GpusSample(now - 1, tuple(gpu("local", i, i) for i in range(2)), driver_version="580.105.08")
    node_samples = []
    for n in range(nodes):
        url = f"http://10.0.0.{n + 1}:9400/metrics"
        gs = tuple(gpu(url, i, 100 + n * gpus_per_node + i) for i in range(gpus_per_node))
        if n == 1:
            node_samples.append(NodeSample(url, "down", "connection refused", None, now - 95, now - 2, gs))
        else:
            node_samples.append(NodeSample(url, "up", None, 3.2, now - 2, now - 2, gs))
    fleet = FleetSample(now - 2, tuple(node_samples))
    host = HostSample(now - 1, "console-01", 23.5, (20.0, 27.0), 1.25, 0.9, 0.7, 9800.0, 24000.0, 0.0, 2048.0,
                      1.2e6, 3.4e5, 2.0e5, 8.1e5)

    def hist(base: int, k: int) -> tuple[int, ...]:
        return tuple(base + (i * k) % 17 for i in range(900))

    quotas = [
        _q("enterprise", 100000, 86400, None, version=2),
        _q("free", 3, 86400, 500, version=7),
        _q("plus", 50, 3 * 3600, mode="shadow", version=3),
        _q("pro", 600, 60, version=4, expires_at=now + 5400),
        _q("team", 2000, 3600, paused=True, version=5),
    ]
    traffic = TrafficSample(now - 1, (
        TierTraffic("enterprise", quotas[0], 12.0, 0.0, {}, 0.0, 720, 0, {}, 0, hist(10, 3), hist(0, 0)),
        TierTraffic("free", quotas[1], 210.5, 188.2, {"user_quota": 160.0, "tier_cap": 28.2}, 0.0,
                    12630, 11292, {"user_quota": 9600, "tier_cap": 1692}, 0, hist(150, 5), hist(100, 7)),
        TierTraffic("plus", quotas[2], 44.0, 0.0, {}, 6.5, 2640, 0, {}, 390, hist(30, 2), hist(0, 0)),
        TierTraffic("pro", quotas[3], 95.3, 1.2, {"user_quota": 1.2}, 0.0, 5718, 72, {"user_quota": 72}, 0,
                    hist(80, 4), hist(0, 1)),
        TierTraffic("team", quotas[4], 0.0, 35.0, {"paused": 35.0}, 0.0, 0, 2100, {"paused": 2100}, 0,
                    hist(0, 0), hist(30, 3)),
    ))
    return {
        Source.GPUS: Reading("gpu", local, local.taken_at, None, 0, now + 1),
        Source.HOST: Reading("host", host, host.taken_at, None, 0, now + 1),
        Source.FLEET: Reading("fleet", fleet, fleet.taken_at, None, 0, now + 1),
        Source.TRAFFIC: Reading("traffic", traffic, traffic.taken_at, None, 0, now + 1),
    }


def load_frozen(app: Any, readings: dict[Source, Reading[Any]] | None = None) -> None:
    """Feed frozen readings to an app started with `sources=False` (as the collectors would)."""
    from tui.messages import SAMPLED

    readings = readings or frozen_readings(app.clock())
    for source, r in readings.items():
        app.post_message(SAMPLED[Source(source)](r))


async def settle(pilot: Any, rounds: int = 3) -> None:
    """Let posted messages and refreshes run (no timers in frozen apps, so this is deterministic)."""
    for _ in range(rounds):
        await pilot.pause()
    await asyncio.sleep(0)


def frozen_app(
    redis_url: str | None = "redis://127.0.0.1:1/0", *, wall_cycle_s: float | None = None, **settings: Any
) -> Any:
    """The real app with no live sources and a frozen clock: feed it with `load_frozen` (tests, snapshots)."""
    from surgewatch.settings import Settings
    from tui.app import create_app

    extra = {} if wall_cycle_s is None else {"wall_cycle_s": wall_cycle_s}
    return create_app(
        Settings(redis_url=redis_url, **settings),
        sources=False,
        subscribe=False,
        clock=lambda: FROZEN_NOW,
        tick_s=None,
        **extra,
    )


@asynccontextmanager
async def frozen_session(size: tuple[int, int] = (200, 60), **settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    """A frozen app running at `size`, loaded with the frozen readings and settled: `(app, pilot)`."""
    app = frozen_app(**settings)
    async with app.run_test(size=size) as pilot:
        load_frozen(app)
        await settle(pilot)
        yield app, pilot
