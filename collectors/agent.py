"""`surgewatch agent`: this node's NVML readings under dcgm-exporter's metric names, plus host load.

For nodes without dcgm-exporter: the fleet collector (and any Prometheus) scrapes an agent exactly like
dcgm-exporter. The metrics come from a custom prometheus-client collector that renders the latest
immutable samples at scrape time (no gauges set every tick); the samples come from the same GPU and
host collectors the console uses, polled by runners in an asyncio loop. With no GPU (no driver, no
library, no device) host metrics are still served and a log line says why there are no GPU series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from collectors.gpu import GpuCollector
from collectors.host import HostCollector
from collectors.metrics import BY_NAME, METRICS, render_family
from collectors.reasons import encode_reasons
from collectors.runner import Reading, Runner
from collectors.samples import GpuSample, GpusSample, HostSample

log = logging.getLogger(__name__)

GPU_LABELS = ("gpu", "UUID", "modelName", "Hostname")

# how each exported metric is read from a GpuSample (None: n/a, not exported); names, help texts and
# types come from the one table, collectors.metrics
_GET: dict[str, Callable[[GpuSample], Any]] = {
    "DCGM_FI_DEV_GPU_UTIL": lambda g: g.util_pct,
    "DCGM_FI_DEV_MEM_COPY_UTIL": lambda g: g.mem_util_pct,
    "DCGM_FI_DEV_FB_USED": lambda g: g.mem_used_mib,
    "DCGM_FI_DEV_FB_FREE":
        lambda g: None if g.mem_total_mib is None or g.mem_used_mib is None else g.mem_total_mib - g.mem_used_mib,
    "DCGM_FI_DEV_GPU_TEMP": lambda g: g.temp_c,
    "DCGM_FI_DEV_SLOWDOWN_TEMP": lambda g: g.temp_slowdown_c,
    "DCGM_FI_DEV_SHUTDOWN_TEMP": lambda g: g.temp_shutdown_c,
    "DCGM_FI_DEV_POWER_USAGE": lambda g: g.power_w,
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": lambda g: g.power_limit_w,
    "DCGM_FI_DEV_SM_CLOCK": lambda g: g.sm_clock_mhz,
    "DCGM_FI_DEV_MAX_SM_CLOCK": lambda g: g.sm_clock_max_mhz,
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": lambda g: encode_reasons(g.throttle),
    "DCGM_FI_DEV_FAN_SPEED": lambda g: g.fan_pct,
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": lambda g: g.ecc_uncorrected,
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": lambda g: g.remapped_rows_uncorrectable,
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS":
        lambda g: None if g.remapped_rows is None or g.remapped_rows_uncorrectable is None
        else g.remapped_rows - g.remapped_rows_uncorrectable,
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": lambda g: g.pcie_replay,
    "DCGM_FI_DEV_XID_ERRORS": lambda g: g.xid or 0,
}
# (metric, help, value of a GpuSample or None when n/a), in the table's order
GPU_METRICS: tuple[tuple[str, str, Callable[[GpuSample], Any]], ...] = tuple(
    (m.name, m.help, _GET[m.name]) for m in METRICS if m.name in _GET
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class AgentExporter:
    """A prometheus-client collector over the latest samples (replaced whole, so reads need no lock)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.gpus: GpusSample | None = None
        self.host: HostSample | None = None

    def render(self) -> bytes:
        """The page: GPU series typed as dcgm-exporter types them, then the agent's status and host load."""
        return "".join(self._families()).encode("utf-8")

    def _families(self) -> Iterator[str]:
        gpus = self.gpus
        if gpus is not None and gpus.gpus:
            live = [g for g in gpus.gpus if g.status == "ok"]  # a lost GPU has no values to export
            for name, help_text, get in GPU_METRICS:
                samples = [(self._labels(g), float(v)) for g in live if (v := get(g)) is not None]
                yield render_family(name, help_text, BY_NAME[name].type, GPU_LABELS, samples)
        status = "unknown" if gpus is None else gpus.status
        yield render_family("surgewatch_agent_gpu_status", "1 for the NVML status of this node.", "gauge",
                            ("status",), [((status,), 1.0)])
        host = self.host
        if host is not None:
            yield from self._host(host)

    def _labels(self, g: GpuSample) -> tuple[str, ...]:
        return (str(g.index), g.uuid or "", g.name or "", self.hostname)

    def _host(self, h: HostSample) -> Iterator[str]:
        lab = ("Hostname",)
        for name, help_text, v in (
            ("surgewatch_host_cpu_pct", "Host CPU use, all cores (in %).", h.cpu_pct),
            ("surgewatch_host_load1", "Load average over 1 minute.", h.load_1),
            ("surgewatch_host_load5", "Load average over 5 minutes.", h.load_5),
            ("surgewatch_host_load15", "Load average over 15 minutes.", h.load_15),
            ("surgewatch_host_mem_used_mib", "Memory used (in MiB).", h.mem_used_mib),
            ("surgewatch_host_mem_total_mib", "Memory total (in MiB).", h.mem_total_mib),
            ("surgewatch_host_swap_used_mib", "Swap used (in MiB).", h.swap_used_mib),
            ("surgewatch_host_swap_total_mib", "Swap total (in MiB).", h.swap_total_mib),
            # rates need two readings: until then they are left out, never served as a zero
            ("surgewatch_host_net_rx_bps", "Network receive rate (bytes/s).", h.net_rx_bps),
            ("surgewatch_host_net_tx_bps", "Network transmit rate (bytes/s).", h.net_tx_bps),
            ("surgewatch_host_disk_read_bps", "Disk read rate (bytes/s).", h.disk_read_bps),
            ("surgewatch_host_disk_write_bps", "Disk write rate (bytes/s).", h.disk_write_bps),
        ):
            if v is not None:
                yield render_family(name, help_text, "gauge", lab, [((self.hostname,), float(v))])
        yield render_family("surgewatch_host_cpu_core_pct", "CPU use per core (in %).", "gauge", ("Hostname", "core"),
                            [((self.hostname, str(i)), pct) for i, pct in enumerate(h.cpu_per_core_pct)])


def _handler(exporter: AgentExporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404, "try /metrics")
                return
            body = exporter.render()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    return Handler


class Agent:
    """Polls GPUs and host, serves /metrics; `start()` then `run()` (or `stop()`), see `serve`."""

    def __init__(self, host: str = "0.0.0.0", port: int = 9400, *, interval_s: float = 1.0, nvml: Any = None) -> None:
        self.bind_host, self.port, self.interval_s = host, port, interval_s
        self.gpu = GpuCollector(nvml)
        self.host = HostCollector()
        self.exporter = AgentExporter(self.host.hostname)
        self._server: ThreadingHTTPServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._gpu_status: str | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind_host in ("0.0.0.0", "") else self.bind_host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        """Take a first reading of both sources, then listen (so the first scrape has data)."""
        gpu_runner = Runner(self.gpu, interval_s=self.interval_s, timeout_s=10.0)
        host_runner = Runner(self.host, interval_s=self.interval_s, timeout_s=5.0)
        await self._on_gpu(await gpu_runner.poll_once())
        await self._on_host(await host_runner.poll_once())
        # a small threaded HTTP server of the standard library: prometheus-client's would rename
        # dcgm-exporter's counters (it appends `_total`)
        self._server = ThreadingHTTPServer((self.bind_host, self.port), _handler(self.exporter))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="agent-http", daemon=True).start()
        self.port = int(self._server.server_port)
        log.info("surgewatch agent serving %s", self.url)
        self._tasks = [
            asyncio.create_task(gpu_runner.run(self._on_gpu)),
            asyncio.create_task(host_runner.run(self._on_host)),
        ]

    async def _on_gpu(self, reading: Reading) -> None:
        sample = reading.sample
        if isinstance(sample, GpusSample):
            self.exporter.gpus = sample
            if sample.status != self._gpu_status:
                self._gpu_status = sample.status
                if sample.status == "ok":
                    log.info("serving %d GPU(s)", len(sample.gpus))
                else:
                    log.warning("no GPU series: %s (host metrics are still served)", sample.message)
        elif reading.error:
            log.warning("no GPU series: %s (host metrics are still served)", reading.error)

    async def _on_host(self, reading: Reading) -> None:
        if isinstance(reading.sample, HostSample):
            self.exporter.host = reading.sample

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        await self.gpu.aclose()
        await self.host.aclose()


async def run_agent(host: str, port: int, *, interval_s: float = 1.0) -> None:
    agent = Agent(host, port, interval_s=interval_s)
    try:
        await agent.start()
    except BaseException:
        await agent.stop()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await agent.stop()


def serve(host: str = "0.0.0.0", port: int = 9400, *, interval_s: float = 1.0) -> int:
    """Run the agent until SIGINT/SIGTERM. Returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s surgewatch-agent %(levelname)s %(message)s")
    try:
        asyncio.run(run_agent(host, port, interval_s=interval_s))
    except OSError as e:
        log.error("cannot serve on %s:%s: %s", host, port, e.strerror or e)
        return 1
    return 0
