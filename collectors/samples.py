"""Immutable, timestamped samples: what collectors return and what the console renders.

`None` in a field means "n/a": the source does not report it (an unsupported NVML field, a metric a
node does not export). Units are in the names. Timestamps are epoch seconds (`time.time()`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from quotas.model import Quota


class Source(StrEnum):
    """The console's data sources: the keys of its readings, its worker groups, `snapshot`'s sections."""

    GPUS = "gpus"  # local GPUs (NVML)
    HOST = "host"  # local host (psutil)
    FLEET = "fleet"  # remote nodes (scrape or Prometheus)
    TRAFFIC = "traffic"  # per-tier traffic and quotas (Redis)


GpuStatus = Literal["ok", "lost", "stale"]
NodeStatus = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one moment, local (NVML) or remote (a node's /metrics)."""

    node: str  # "local", or the node's URL
    index: int
    uuid: str | None = None
    name: str | None = None
    util_pct: float | None = None
    mem_util_pct: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    temp_c: float | None = None
    temp_slowdown_c: float | None = None
    temp_shutdown_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: float | None = None
    sm_clock_max_mhz: float | None = None
    throttle: tuple[str, ...] = ()  # decoded clock-event reasons, e.g. ("thermal", "power_cap")
    fan_pct: float | None = None
    ecc_uncorrected: int | None = None
    remapped_rows: int | None = None
    pcie_replay: int | None = None
    processes: int | None = None
    xid: int | None = None  # last XID error seen, None when none
    status: GpuStatus = "ok"
    remapped_rows_uncorrectable: int | None = None  # the part of remapped_rows from uncorrectable errors


@dataclass(frozen=True, slots=True)
class GpusSample:
    """All local GPUs from one NVML poll. `status` is "ok", or why there are no GPUs."""

    taken_at: float
    gpus: tuple[GpuSample, ...] = ()
    status: Literal["ok", "no_library", "no_driver", "no_gpus", "error"] = "ok"
    message: str = ""
    driver_version: str | None = None


@dataclass(frozen=True, slots=True)
class HostSample:
    """Host load from psutil. Rates are per second since the previous sample."""

    taken_at: float
    hostname: str
    cpu_pct: float
    cpu_per_core_pct: tuple[float, ...]
    load_1: float
    load_5: float
    load_15: float
    mem_used_mib: float
    mem_total_mib: float
    swap_used_mib: float
    swap_total_mib: float
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One remote node's scrape. A down node keeps its last-known GPUs, with their `taken_at`."""

    url: str  # never holds credentials: redact before building a sample
    status: NodeStatus
    error: str | None
    latency_ms: float | None
    taken_at: float  # when these GPU values were read (the last good scrape for a down node)
    checked_at: float  # when the node was last tried
    gpus: tuple[GpuSample, ...] = ()


@dataclass(frozen=True, slots=True)
class FleetSample:
    """Every configured node after one sweep."""

    taken_at: float
    nodes: tuple[NodeSample, ...] = ()
    source: Literal["scrape", "prometheus"] = "scrape"


@dataclass(frozen=True, slots=True)
class TierTraffic:
    """One tier's traffic from the limiter's counters, and its current quota."""

    tier: str
    quota: Quota | None
    accepted_rps: float  # mean over the last 10 s
    rejected_rps: float
    rejected_by_reason_rps: dict[str, float] = field(default_factory=dict)
    shadow_rps: float = 0.0
    accepted_1m: int = 0  # counts over the last 60 s
    rejected_1m: int = 0
    rejected_by_reason_1m: dict[str, int] = field(default_factory=dict)
    shadow_1m: int = 0
    # per-second history, oldest first, ending at the last complete second
    accepted_history: tuple[int, ...] = ()
    rejected_history: tuple[int, ...] = ()
    history_end_s: int = 0  # the server's epoch second of the histories' last value (0: unknown)
    quota_error: str = ""  # why the stored quota is unreadable (junk, or edited outside surgewatch); "" if it is not


@dataclass(frozen=True, slots=True)
class TrafficSample:
    """Every tier after one Redis poll."""

    taken_at: float
    tiers: tuple[TierTraffic, ...] = ()
