"""Where a value turns from fine to worrying, and the colours that say so.

Operators tune these in `[thresholds]` of surgewatch.toml (Settings.thresholds); unknown keys are
refused so a typo does not silently keep a default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace

# Colours are Rich style names, picked to stay legible on dark and light themes and on a wall screen.
OK = "green"
WARN = "yellow"
BAD = "bold red"
DIM = "dim"
STALE = "dim italic"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every threshold the console colours or raises events with."""

    temp_warm_c: float = 70.0
    temp_hot_c: float = 80.0  # a GPU at or above this counts as "hot" in the KPIs
    util_busy_pct: float = 90.0
    mem_full_pct: float = 95.0
    power_near_limit_pct: float = 95.0
    reject_warn_pct: float = 5.0
    reject_spike_pct: float = 20.0  # a tier's rejection % crossing this raises an event
    reject_spike_min_rps: float = 1.0  # ignore spikes on a trickle of traffic
    stale_after_s: float = 15.0  # data older than this is shown dimmed with its age
    traffic_stop_min_rps: float = 20.0  # summed req/s over the last minute from which traffic stopping alarms
    # inference servers (collectors.serving): a model breaches its SLO above these
    ttft_p99_slo_s: float = 2.0  # time to first token, p99 over the last minute
    e2e_p99_slo_s: float = 10.0  # end-to-end latency, p99 over the last minute
    # the Gateway API Inference Extension's defaults: 5 waiting requests per replica, KV cache 80 % full
    queue_per_replica_warn: float = 5.0
    kv_cache_warn_pct: float = 80.0

    @classmethod
    def unknown(cls, names: Iterable[str]) -> str | None:
        """None when every name is a threshold, else a message naming the unknown ones and the known."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(names) - known)
        if not unknown:
            return None
        return f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"

    @classmethod
    def from_mapping(cls, values: Mapping[str, float] | None) -> Thresholds:
        """Defaults overridden by `values`; an unknown name raises ValueError naming it."""
        values = dict(values or {})
        why = cls.unknown(values)
        if why:
            raise ValueError(why)
        return replace(cls(), **{k: float(v) for k, v in values.items()})

    def temp_style(self, temp_c: float | None) -> str:
        if temp_c is None:
            return DIM
        if temp_c >= self.temp_hot_c:
            return BAD
        if temp_c >= self.temp_warm_c:
            return WARN
        return OK

    def util_style(self, util_pct: float | None) -> str:
        if util_pct is None:
            return DIM
        return WARN if util_pct >= self.util_busy_pct else OK

    def reject_style(self, pct: float | None) -> str:
        if pct is None:
            return DIM
        if pct >= self.reject_spike_pct:
            return BAD
        if pct >= self.reject_warn_pct:
            return WARN
        return OK


# Heat-map ramps: index 0 is coolest/idle. Hex colours so the map keeps its meaning in any theme.
TEMP_RAMP = ("#2b83ba", "#66c2a5", "#abdda4", "#e6f598", "#fee08b", "#fdae61", "#f46d43", "#d53e4f")
UTIL_RAMP = ("#313695", "#4575b4", "#74add1", "#abd9e9", "#fee090", "#fdae61", "#f46d43", "#a50026")
LOST_COLOUR = "#ff00ff"
NA_COLOUR = "#555555"


def ramp_colour(value: float | None, lo: float, hi: float, ramp: tuple[str, ...]) -> str:
    """Map `value` in [lo, hi] onto `ramp`; None maps to the n/a grey."""
    if value is None:
        return NA_COLOUR
    if hi <= lo:
        return ramp[-1]
    pos = (value - lo) / (hi - lo)
    idx = int(max(0.0, min(0.999, pos)) * len(ramp))
    return ramp[idx]
