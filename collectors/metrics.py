"""dcgm-exporter's metrics, once: names, units, Prometheus types, plausible ranges, and how to write them.

The fleet parser (`collectors.series`, `collectors.dcgm`), `surgewatch agent` and the simulator's
exporter all read this table, so a name, a unit or a type is stated in one place. A metric with a
`field` is read by the parser into that GpuSample field (or a helper field starting with `_`); one
without is only written (the simulator's memory clock and energy counter).

Types are dcgm-exporter's own (its default-counters.csv): `PCIE_REPLAY_COUNTER` and the remapped-row
counts are counters, and keep their names (no `_total`), as dcgm-exporter writes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.utils import floatToGoString

MetricType = Literal["gauge", "counter"]

# The plausible range of each unit: a value outside it is not a reading but a fault (an exporter bug,
# a corrupted page) and is ignored, named once, rather than shown or summed into the fleet figures.
# Counters stop below DCGM's FP64 blank (2**47): no GPU counts that many PCIe replays or ECC errors.
RANGE_OF_UNIT: dict[str, tuple[float, float]] = {
    "%": (0.0, 100.0),
    "ratio": (0.0, 1.0),
    "C": (0.0, 150.0),  # a powered GPU is never below freezing: a negative reading is a broken sensor or exporter
    "W": (0.0, 5000.0),
    "MiB": (0.0, 1024.0 * 1024.0),  # 1 TiB
    "MHz": (0.0, 10_000.0),
    "count": (0.0, 2.0**47 - 1),
    "bitmask": (0.0, 2.0**47 - 1),
    "code": (0.0, 2.0**31 - 17),  # an XID code, below DCGM's INT32 blank
    "mJ": (0.0, 2.0**62),
}


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One dcgm-exporter metric."""

    name: str
    unit: str  # a key of RANGE_OF_UNIT
    type: MetricType
    help: str
    field: str | None = None  # where the parser puts it; None: written only (simulator)
    label: str = ""  # the field in an operator's words, for warnings ("power", "util")
    per_instance: bool = False  # MIG: each GPU instance reports its own value (memory, activity)

    @property
    def range(self) -> tuple[float, float]:
        return RANGE_OF_UNIT[self.unit]


_G: MetricType = "gauge"
_C: MetricType = "counter"
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("DCGM_FI_DEV_GPU_UTIL", "%", _G, "GPU utilization (in %).", "util_pct", "util", True),
    MetricSpec("DCGM_FI_DEV_MEM_COPY_UTIL", "%", _G, "Memory utilization (in %).", "mem_util_pct", "memory util"),
    MetricSpec("DCGM_FI_DEV_FB_USED", "MiB", _G, "Framebuffer memory used (in MiB).", "mem_used_mib", "memory used",
               True),
    MetricSpec("DCGM_FI_DEV_FB_FREE", "MiB", _G, "Framebuffer memory free (in MiB).", "_fb_free", "memory free", True),
    MetricSpec("DCGM_FI_DEV_FB_RESERVED", "MiB", _G, "Framebuffer memory reserved (in MiB).", "_fb_reserved",
               "memory reserved", True),
    MetricSpec("DCGM_FI_DEV_FB_TOTAL", "MiB", _G, "Framebuffer memory total (in MiB).", "mem_total_mib",
               "memory total", True),
    MetricSpec("DCGM_FI_DEV_GPU_TEMP", "C", _G, "GPU temperature (in C).", "temp_c", "temperature"),
    MetricSpec("DCGM_FI_DEV_SLOWDOWN_TEMP", "C", _G, "Slowdown temperature threshold (in C).", "temp_slowdown_c",
               "slowdown temperature"),
    MetricSpec("DCGM_FI_DEV_SHUTDOWN_TEMP", "C", _G, "Shutdown temperature threshold (in C).", "temp_shutdown_c",
               "shutdown temperature"),
    MetricSpec("DCGM_FI_DEV_POWER_USAGE", "W", _G, "Power draw (in W).", "power_w", "power"),
    MetricSpec("DCGM_FI_DEV_POWER_MGMT_LIMIT", "W", _G, "Power management limit (in W).", "power_limit_w",
               "power limit"),
    MetricSpec("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "W", _G, "Enforced power limit (in W).", "_enforced_limit",
               "power limit"),
    MetricSpec("DCGM_FI_DEV_SM_CLOCK", "MHz", _G, "SM clock frequency (in MHz).", "sm_clock_mhz", "SM clock"),
    MetricSpec("DCGM_FI_DEV_MAX_SM_CLOCK", "MHz", _G, "Maximum SM clock frequency (in MHz).", "sm_clock_max_mhz",
               "max SM clock"),
    MetricSpec("DCGM_FI_DEV_MEM_CLOCK", "MHz", _G, "Memory clock frequency (in MHz)."),
    MetricSpec("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "bitmask", _G,
               "Current clock event (throttle) reasons (NVML bitmask).", "_reasons", "throttle reasons"),
    MetricSpec("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "bitmask", _G, "Current clock event reasons (NVML bitmask).",
               "_reasons", "throttle reasons"),
    MetricSpec("DCGM_FI_DEV_FAN_SPEED", "%", _G, "Fan speed (in %).", "fan_pct", "fan"),
    MetricSpec("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "mJ", _C, "Total energy consumption since boot (in mJ)."),
    MetricSpec("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "count", _C, "Volatile uncorrectable (double-bit) ECC errors.",
               "ecc_uncorrected", "ECC errors"),
    MetricSpec("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "count", _C,
               "Number of remapped rows for uncorrectable errors", "_rows_unc", "remapped rows"),
    MetricSpec("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "count", _C, "Number of remapped rows for correctable errors",
               "_rows_cor", "remapped rows"),
    MetricSpec("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "count", _C, "Total number of PCIe retries.", "pcie_replay",
               "PCIe replays"),
    MetricSpec("DCGM_FI_DEV_XID_ERRORS", "code", _G, "Value of the last XID error encountered.", "xid", "XID"),
    # profiling (DCP) fields: ratios 0..1, reported per GPU instance on MIG, where GPU_UTIL is not
    MetricSpec("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "ratio", _G, "Ratio of time the graphics engine is active.",
               "_gr_active", "graphics engine activity", True),
    MetricSpec("DCGM_FI_PROF_SM_ACTIVE", "ratio", _G, "The ratio of cycles an SM has at least 1 warp assigned.",
               "_sm_active", "SM activity", True),
    MetricSpec("DCGM_FI_PROF_SM_OCCUPANCY", "ratio", _G, "The ratio of number of warps resident on an SM.",
               "_sm_occupancy", "SM occupancy", True),
    MetricSpec("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "ratio", _G, "Ratio of cycles the tensor (HMMA) pipe is active.",
               "_tensor_active", "tensor activity", True),
    MetricSpec("DCGM_FI_PROF_DRAM_ACTIVE", "ratio", _G,
               "Ratio of cycles the device memory interface is active sending or receiving data.",
               "_dram_active", "DRAM activity", True),
)
BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
READ: dict[str, MetricSpec] = {m.name: m for m in METRICS if m.field is not None}
# the ratio fields and the percent GpuSample field each becomes (x100)
PCT_OF_RATIO: dict[str, str] = {
    "_gr_active": "util_pct", "_sm_active": "sm_active_pct", "_sm_occupancy": "sm_occupancy_pct",
    "_tensor_active": "tensor_active_pct", "_dram_active": "dram_active_pct",
}

# DCGM prints "no value" as numbers: the INT32 blank 0x7ffffff0 and the not-found / not-supported /
# not-permissioned values just above it, the same for INT64 (0x7ffffffffffffff0..; as a float every one
# of them is 2**63, which is also what a value of 9223372036854775808 reads as) and FP64 (2**47 ..
# 2**47 + 3). They mean n/a, never a reading.
_INT32_BLANK = float(0x7FFFFFF0)
_FP64_BLANK = 140737488355328.0


def is_blank(v: float) -> bool:
    """True for DCGM's blank and not-found / not-supported / not-permissioned sentinels."""
    return (
        _INT32_BLANK <= v <= _INT32_BLANK + 15
        or _FP64_BLANK <= v <= _FP64_BLANK + 3
        or abs(v - 2.0**63) <= 4096.0
    )


def in_range(spec: MetricSpec, v: float) -> bool:
    lo, hi = spec.range
    return lo <= v <= hi and not math.isinf(v)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_family(
    name: str, help_text: str, mtype: MetricType, label_names: Sequence[str],
    samples: Iterable[tuple[Sequence[str], float]],
) -> str:
    """One family in Prometheus' text format (0.0.4), the sample names exactly `name` whatever the type.

    prometheus-client appends `_total` to a counter's name; dcgm-exporter does not, and neither may a
    surgewatch agent that stands in for it. Empty when there are no samples (as dcgm-exporter)."""
    lines = []
    for values, v in samples:
        labels = ",".join(f'{k}="{_escape(x)}"' for k, x in zip(label_names, values, strict=True))
        lines.append(f"{name}{{{labels}}} {floatToGoString(v)}\n" if labels else f"{name} {floatToGoString(v)}\n")
    if not lines:
        return ""
    return f"# HELP {name} {help_text}\n# TYPE {name} {mtype}\n" + "".join(lines)
