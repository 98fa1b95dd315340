"""Simulated nodes serving dcgm-exporter-style `/metrics` on loopback, many per process.

Each node gets its own loopback port (so the fleet collector sees one URL per node, as in a real
fleet) served by a small asyncio server inside the simulation's event loop: hundreds of nodes cost
a few sockets, not threads. The text is rendered from the one metric table
(`collectors.metrics`: dcgm-exporter's names, help texts and types), with dcgm-exporter's labels,
and re-rendered only when the node's state changed.

A node that is down closes every connection without answering, as a host that died mid-request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial

from collectors.metrics import METRICS, MetricSpec, render_family
from sim.fleet import Fleet, Node
from sim.serving import render_page

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"]
MAX_HEADER_BYTES = 16384

# metric -> how to read it from a GpuState/GpuSpec pair. Names, help texts and types come from the
# one table (collectors.metrics), so the simulator's pages are typed as dcgm-exporter's are (the
# counters keep their names, no `_total`).
_WHAT: dict[str, str] = {
    "DCGM_FI_DEV_SM_CLOCK": "sm_clock",
    "DCGM_FI_DEV_MAX_SM_CLOCK": "max_sm_clock",
    "DCGM_FI_DEV_MEM_CLOCK": "mem_clock",
    "DCGM_FI_DEV_GPU_TEMP": "temp",
    "DCGM_FI_DEV_SLOWDOWN_TEMP": "slowdown",
    "DCGM_FI_DEV_SHUTDOWN_TEMP": "shutdown",
    "DCGM_FI_DEV_POWER_USAGE": "power",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_limit",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "energy",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "zero",
    "DCGM_FI_DEV_GPU_UTIL": "util",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "mem_util",
    "DCGM_FI_DEV_FB_FREE": "fb_free",
    "DCGM_FI_DEV_FB_USED": "fb_used",
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": "throttle",
    "DCGM_FI_DEV_XID_ERRORS": "xid",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "ecc_dbe",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "zero",
}
_METRICS: list[MetricSpec] = [m for m in METRICS if m.name in _WHAT]


def _value(what: str, node: Node, g: int) -> float:
    s, spec = node.gpus[g], node.specs[g]
    match what:
        case "sm_clock":
            return round(s.sm_clock_mhz)
        case "max_sm_clock":
            return spec.max_sm_clock_mhz
        case "mem_clock":
            return spec.mem_clock_mhz
        case "temp":
            return round(s.temp_c)  # dcgm reports whole degrees
        case "slowdown":
            return spec.slowdown_c
        case "shutdown":
            return spec.shutdown_c
        case "power":
            return round(s.power_w, 3)
        case "power_limit":
            return spec.power_limit_w
        case "energy":
            return round(s.energy_mj)
        case "util":
            return round(s.util_pct)
        case "mem_util":
            return round(s.util_pct * 0.6)
        case "fb_free":
            return round(spec.mem_total_mib - s.mem_used_mib)
        case "fb_used":
            return round(s.mem_used_mib)
        case "throttle":
            return s.throttle_mask
        case "xid":
            return s.xid
        case "ecc_dbe":
            return s.ecc_dbe
    return 0


class NodeCollector:
    """The families of one simulated node's GPUs, in Prometheus' text format."""

    def __init__(self, node: Node, driver_version: str) -> None:
        self.node = node
        self.driver_version = driver_version

    def collect(self) -> Iterator[str]:
        node = self.node
        label_sets = [
            [str(i.index), i.uuid, i.pci_bus_id, i.device, spec.model_name, node.hostname, self.driver_version]
            for i, spec in zip(node.identities, node.specs, strict=False)
        ]
        for m in _METRICS:
            what = _WHAT[m.name]
            yield render_family(m.name, m.help, m.type, LABELS,
                                [(labels, _value(what, node, g)) for g, labels in enumerate(label_sets)])


class NodeExporter:
    """One node's `/metrics` page, rendered once per state change."""

    def __init__(self, node: Node, driver_version: str) -> None:
        self.node = node
        self.collector = NodeCollector(node, driver_version)
        self._page = b""
        self._version = -1

    def page(self) -> bytes:
        if self._version != self.node.version:
            self._page = "".join(self.collector.collect()).encode("utf-8")
            self._version = self.node.version
        return self._page


class ServingExporter:
    """One node's inference server `/metrics` (vLLM's names, sim/serving.py), rendered once per step."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._page = b""
        self._version = -1

    def page(self) -> bytes:
        if self._version != self.node.version:
            self._page = render_page(self.node.serving).encode("utf-8")
            self._version = self.node.version
        return self._page


def _response(status: str, body: bytes, content_type: str = CONTENT_TYPE) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


class FleetServer:
    """Serves every node of a fleet, one loopback port each, from the running event loop: their GPUs'
    dcgm-exporter pages, or (`serving=True`) their inference servers' pages."""

    def __init__(self, fleet: Fleet, host: str = "127.0.0.1", *, serving: bool = False) -> None:
        self.fleet = fleet
        self.host = host
        self.exporters: list[NodeExporter | ServingExporter] = [
            ServingExporter(n) if serving else NodeExporter(n, fleet.driver_version) for n in fleet.nodes]
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self.ports: list[int] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://{self.host}:{p}/metrics" for p in self.ports]

    async def start(self) -> FleetServer:
        try:
            for exp in self.exporters:
                server = await asyncio.start_server(
                    partial(self._serve, exp), self.host, 0, limit=MAX_HEADER_BYTES,
                )
                self._servers.append(server)
                self.ports.append(server.sockets[0].getsockname()[1])
        except BaseException:
            await self.stop()
            raise
        return self

    async def _serve(self, exp: NodeExporter | ServingExporter, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                if not exp.node.up:
                    return  # a dead host: the connection drops with no answer
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if not exp.node.up:
                    return
                request_line = head.split(b"\r\n", 1)[0].split()
                if len(request_line) < 2 or request_line[0] not in (b"GET", b"HEAD"):
                    writer.write(_response("405 Method Not Allowed", b"only GET\n", "text/plain"))
                elif request_line[1].split(b"?", 1)[0] != b"/metrics":
                    writer.write(_response("404 Not Found", b"try /metrics\n", "text/plain"))
                else:
                    body = exp.page()
                    writer.write(_response("200 OK", b"" if request_line[0] == b"HEAD" else body))
                await writer.drain()
        except ConnectionError:
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        """Close every listening socket and every open connection."""
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        # together, bounded once: one socket after another, 2 s each, a demo of 32 servers could take a minute
        # to stop on a loaded machine (a SIGTERM answered late)
        waits = [asyncio.ensure_future(server.wait_closed()) for server in self._servers]
        if waits:
            _, late = await asyncio.wait(waits, timeout=2.0)
            for w in late:
                w.cancel()
        self._servers.clear()
