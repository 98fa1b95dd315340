"""Clock-event (throttle) reasons: one decoder for NVML's bitmask and dcgm-exporter's gauge.

The bit values are NVML's `nvmlClocksEventReason*` constants (the same bits dcgm-exporter exports as
DCGM_FI_DEV_CLOCK_THROTTLE_REASONS / DCGM_FI_DEV_CLOCKS_EVENT_REASONS), copied here so a node's
bitmask decodes without loading NVML.
"""

from __future__ import annotations

# bit -> name, in the order the console lists them (most alarming first is the UI's business)
REASON_BITS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks"),
    (0x004, "power_cap"),  # SW power cap
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "thermal"),  # SW thermal slowdown
    (0x040, "hw_thermal"),
    (0x080, "hw_power_brake"),
    (0x100, "display_clocks"),
)
REASON_NAMES: tuple[str, ...] = tuple(name for _, name in REASON_BITS)
_BIT_OF = {name: bit for bit, name in REASON_BITS}

# Reasons that are a GPU choosing to slow down for a good reason (idle, clocks an application or sync boost
# asked for), not a problem: any other reason makes a GPU throttling, for the console and the guard alike
BENIGN_THROTTLE = frozenset(
    {"idle", "gpu_idle", "applications_clocks", "app_clocks", "sync_boost", "display_clocks", "none"}
)


def decode_reasons(mask: int | float | None) -> tuple[str, ...]:
    """Names of the set bits; unknown bits are ignored, None or a negative/NaN value gives ()."""
    if mask is None:
        return ()
    try:
        m = int(mask)
    except (TypeError, ValueError, OverflowError):
        return ()
    if m <= 0:
        return ()
    return tuple(name for bit, name in REASON_BITS if m & bit)


def encode_reasons(names: tuple[str, ...] | list[str]) -> int:
    """The bitmask of reason names (the agent exports it); unknown names are ignored."""
    m = 0
    for n in names:
        m |= _BIT_OF.get(n, 0)
    return m
