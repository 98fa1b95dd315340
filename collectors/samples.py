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
    SERVING = "serving"  # inference servers' queues and latency (collectors.serving)


GpuStatus = Literal["ok", "lost", "stale"]
NodeStatus = Literal["up", "down"]
WarningKind = Literal["range", "unparsable", "duplicate", "uuid"]


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG GPU instance of a physical GPU (dcgm-exporter's `GPU_I_ID`, `GPU_I_PROFILE` labels)."""

    gi_id: int
    profile: str  # e.g. "2g.20gb"
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    util_pct: float | None = None  # GR_ENGINE_ACTIVE x 100 (dcgm-exporter has no GPU_UTIL for MIG)

    @property
    def slices(self) -> int:
        """Compute slices of the profile ("3g.40gb" -> 3; "1c.3g.40gb" -> 3); 1 when unreadable."""
        for part in self.profile.split("."):
            if part.endswith("g") and part[:-1].isdigit():
                return max(1, int(part[:-1]))
        return 1


def slice_weighted(pairs: list[tuple[float | None, int]]) -> float | None:
    """MIG instances' mean of a value weighted by their slice counts; None unless every one has it."""
    if not pairs or any(v is None for v, _ in pairs):
        return None
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs if v is not None) / total


def mig_memory_mib(mig: tuple[MigInstance, ...]) -> tuple[float | None, float | None]:
    """A MIG GPU's (used, total) memory: the sums over its instances, each None unless every instance
    reports it (dcgm-exporter and NVML both give memory per instance)."""
    used = [m.mem_used_mib for m in mig]
    total = [m.mem_total_mib for m in mig]
    return (sum(v for v in used if v is not None) if mig and None not in used else None,
            sum(v for v in total if v is not None) if mig and None not in total else None)


@dataclass(frozen=True, slots=True)
class NodeWarning:
    """Something wrong with one field of one node's page that cost that field, not the node."""

    gpu: int | None  # the GPU's index, None for the node as a whole
    field: str  # the GpuSample field (or metric) concerned
    kind: WarningKind  # range: implausible value; unparsable; duplicate series; uuid: seen on two nodes
    text: str  # short, for `snapshot --json` and the events ("GPU 3: power 1e+308 W out of range, ignored")

    def __str__(self) -> str:
        return self.text


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
    # MIG: None when the GPU is not in MIG mode, else its GPU instances. A MIG GPU's memory figures are
    # the sums over its instances; its temperature, power and clocks the device's own.
    mig: tuple[MigInstance, ...] | None = None
    # profiling (DCP) fields as percentages (dcgm-exporter's ratios x 100)
    tensor_active_pct: float | None = None
    dram_active_pct: float | None = None
    sm_active_pct: float | None = None
    sm_occupancy_pct: float | None = None


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
    warnings: tuple[NodeWarning, ...] = ()  # fields ignored (out of range, unreadable, duplicated)


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """A large fleet's figures computed by Prometheus (aggregation queries) over every GPU that is up,
    where the sample's nodes hold only the GPUs the console shows (the worst nodes, the ones asked
    for) and the nodes that are down. Counts are GPUs; means and sums skip n/a and out-of-range values."""

    gpus: int
    healthy: int  # not hot, not throttled, no XID
    hot: int
    throttled: int
    xid: int
    util_n: int = 0  # GPUs with a utilization value (the mean's weight)
    util_mean_pct: float | None = None
    util_max_pct: float | None = None
    temp_n: int = 0
    temp_mean_c: float | None = None
    temp_max_c: float | None = None
    power_w: float | None = None
    shown_nodes: int = 0  # nodes fetched in full this refresh


@dataclass(frozen=True, slots=True)
class FleetSample:
    """Every configured node after one sweep."""

    taken_at: float
    nodes: tuple[NodeSample, ...] = ()
    source: Literal["scrape", "prometheus"] = "scrape"
    summary: FleetSummary | None = None  # Prometheus window mode: the fleet's figures (see FleetSummary)


TierState = Literal["active", "paused", "override", "broken", "no_quota"]


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
    master: str = ""  # host:port of the Redis master serving the tier (cluster, Sentinel); "" for one server

    @property
    def state(self) -> TierState:
        """`no_quota`: the tier is known (registry, or seen before) but its quota is gone, so every gateway
        decision is refused as unknown_tier; `broken`: its stored quota is unreadable."""
        if self.quota_error:
            return "broken"
        if self.quota is None:
            return "no_quota"
        return self.quota.state


@dataclass(frozen=True, slots=True)
class RedisHealth:
    """The Redis server's state as the traffic poll found it. `status`: ok, out_of_memory,
    read_only_replica, persistence_error (MISCONF), loading, bad_data (a key of the wrong type: `error`
    names the key and the fix), no_tiers (it answers but holds no tier at all); `unavailable` and `error`
    for the rarer refusals (BUSY, CLUSTERDOWN, an unknown error reply). Unreachable and auth_failed are
    the traffic source's own error kinds: a poll that fails returns no sample."""

    status: str = "ok"
    error: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownTier:
    """A tier name gateways ask for that has no quota (a misspelt `fre`): every request refused as unknown_tier.
    `name` is as sent (at most 64 bytes: show it through the sanitiser)."""

    name: str
    refused_rps: float  # over the last complete 10 s
    refused_1m: int

    def message(self) -> str:
        """What the console and `snapshot` say of it."""
        return (f"gateways ask for tier {self.name!r}, which has no quota: {self.refused_rps:g}/s refused "
                f"({self.refused_1m} in the last minute)")


@dataclass(frozen=True, slots=True)
class TrafficSample:
    """Every tier after one Redis poll."""

    taken_at: float
    tiers: tuple[TierTraffic, ...] = ()
    redis: RedisHealth = field(default_factory=RedisHealth)
    unknown_tiers: tuple[UnknownTier, ...] = ()
    """Names gateways ask for that have no quota (quotas/keys.py `Punknown:B`), most refused first."""
