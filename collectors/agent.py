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
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from collectors.gpu import GpuCollector
from collectors.host import HostCollector
from collectors.reasons import encode_reasons
from collectors.runner import Reading, Runner
from collectors.samples import GpuSample, GpusSample, HostSample

log = logging.getLogger(__name__)

GPU_LABELS = ("gpu", "UUID", "modelName", "Hostname")

# (metric, help, value of a GpuSample or None when n/a)
GPU_METRICS: tuple[tuple[str, str, Any], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda g: g.util_pct),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", lambda g: g.mem_util_pct),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda g: g.mem_used_mib),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).",
     lambda g: None if g.mem_total_mib is None or g.mem_used_mib is None else g.mem_total_mib - g.mem_used_mib),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda g: g.temp_c),
    ("DCGM_FI_DEV_SLOWDOWN_TEMP", "Slowdown temperature threshold (in C).", lambda g: g.temp_slowdown_c),
    ("DCGM_FI_DEV_SHUTDOWN_TEMP", "Shutdown temperature threshold (in C).", lambda g: g.temp_shutdown_c),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda g: g.power_w),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "Power management limit (in W).", lambda g: g.power_limit_w),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lambda g: g.sm_clock_mhz),
    ("DCGM_FI_DEV_MAX_SM_CLOCK", "Maximum SM clock frequency (in MHz).", lambda g: g.sm_clock_max_mhz),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Current clock event (throttle) reasons (NVML bitmask).",
     lambda g: encode_reasons(g.throttle)),
    ("DCGM_FI_DEV_FAN_SPEED", "Fan speed (in %).", lambda g: g.fan_pct),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Volatile uncorrectable (double-bit) ECC errors.", lambda g: g.ecc_uncorrected),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "Rows remapped for uncorrectable errors.",
     lambda g: g.remapped_rows_uncorrectable),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "Rows remapped for correctable errors.",
     lambda g: None if g.remapped_rows is None or g.remapped_rows_uncorrectable is None
     else g.remapped_rows - g.remapped_rows_uncorrectable),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "PCIe replay counter.", lambda g: g.pcie_replay),
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error seen (0: none).", lambda g: g.xid or 0),
)


class AgentExporter:
    """A prometheus-client collector over the latest samples (replaced whole, so reads need no lock)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.gpus: GpusSample | None = None
        self.host: HostSample | None = None

    def collect(self) -> Iterator[Metric]:
        gpus = self.gpus
        if gpus is not None and gpus.gpus:
            live = [g for g in gpus.gpus if g.status == "ok"]  # a lost GPU has no values to export
            for name, help_text, get in GPU_METRICS:
                fam = GaugeMetricFamily(name, help_text, labels=GPU_LABELS)
                for g in live:
                    v = get(g)
                    if v is not None:
                        fam.add_metric(self._labels(g), float(v))
                if fam.samples:
                    yield fam
        status = GaugeMetricFamily("surgewatch_agent_gpu_status", "1 for the NVML status of this node.",
                                   labels=("status",))
        status.add_metric(("unknown" if gpus is None else gpus.status,), 1.0)
        yield status
        host = self.host
        if host is not None:
            yield from self._host(host)

    def _labels(self, g: GpuSample) -> tuple[str, ...]:
        return (str(g.index), g.uuid or "", g.name or "", self.hostname)

    def _host(self, h: HostSample) -> Iterator[Metric]:
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
            ("surgewatch_host_net_rx_bps", "Network receive rate (bytes/s).", h.net_rx_bps),
            ("surgewatch_host_net_tx_bps", "Network transmit rate (bytes/s).", h.net_tx_bps),
            ("surgewatch_host_disk_read_bps", "Disk read rate (bytes/s).", h.disk_read_bps),
            ("surgewatch_host_disk_write_bps", "Disk write rate (bytes/s).", h.disk_write_bps),
        ):
            if v is not None:
                yield _one(name, help_text, lab, (self.hostname,), v)
        cores = GaugeMetricFamily(
            "surgewatch_host_cpu_core_pct", "CPU use per core (in %).", labels=("Hostname", "core")
        )
        for i, pct in enumerate(h.cpu_per_core_pct):
            cores.add_metric((self.hostname, str(i)), pct)
        yield cores


def _one(name: str, help_text: str, labels: tuple[str, ...], values: tuple[str, ...], v: float) -> Metric:
    fam = GaugeMetricFamily(name, help_text, labels=labels)
    fam.add_metric(values, float(v))
    return fam


class Agent:
    """Polls GPUs and host, serves /metrics; `start()` then `run()` (or `stop()`), see `serve`."""

    def __init__(self, host: str = "0.0.0.0", port: int = 9400, *, interval_s: float = 1.0, nvml: Any = None) -> None:
        self.bind_host, self.port, self.interval_s = host, port, interval_s
        self.gpu = GpuCollector(nvml)
        self.host = HostCollector()
        self.exporter = AgentExporter(self.host.hostname)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.exporter)
        self._server: Any = None
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
        self._server, _ = start_http_server(self.port, addr=self.bind_host, registry=self.registry)
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
