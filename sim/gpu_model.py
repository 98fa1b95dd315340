"""A simulated data-centre GPU: admitted work in, utilization, power, temperature and clocks out.

Pure and deterministic: `step(spec, state, work_s, dt_s)` returns the next immutable state, so the
physics is unit-testable without a server. The model is deliberately simple but keeps the shapes an
operator knows from real fleets:

- queueing: work is GPU-seconds at full clock; what the GPU cannot serve this step waits in a
  backlog (bounded: requests older than `max_queue_s` time out and are dropped);
- power follows utilization and SM clock, clipped at the power limit (power-cap throttle);
- temperature has thermal inertia: a first-order lag toward the steady state `ambient + R * power`;
- at the slowdown threshold the SM clock steps down (software thermal slowdown), a few degrees
  above it the hardware slowdown kicks in; below the threshold, with hysteresis, it recovers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# dcgm-exporter's DCGM_FI_DEV_CLOCK_THROTTLE_REASONS bits (NVML clocks-event reasons)
THROTTLE_GPU_IDLE = 0x1
THROTTLE_SW_POWER_CAP = 0x4
THROTTLE_HW_SLOWDOWN = 0x8
THROTTLE_SW_THERMAL = 0x20
THROTTLE_HW_THERMAL = 0x40


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """The constants of one GPU (an H100 SXM-like part; `thermal_c_per_w` varies per slot)."""

    model_name: str = "NVIDIA H100 80GB HBM3"
    idle_power_w: float = 70.0
    power_limit_w: float = 700.0
    dynamic_power_w: float = 600.0  # extra draw at full load and full clock
    # leakage grows with temperature: a hot chip at full load reaches its power limit (power-cap throttle)
    leakage_w_per_c: float = 1.4
    leakage_from_c: float = 60.0
    ambient_c: float = 28.0
    thermal_c_per_w: float = 0.088  # steady-state degrees above ambient per watt (airflow of the slot)
    tau_s: float = 12.0  # thermal time constant
    slowdown_c: float = 87.0
    hw_slowdown_margin_c: float = 4.0
    shutdown_c: float = 95.0
    recover_margin_c: float = 2.0  # hysteresis: clocks recover only this far below the slowdown threshold
    max_sm_clock_mhz: float = 1980.0
    idle_sm_clock_mhz: float = 345.0
    min_clock_factor: float = 0.55
    clock_step: float = 0.08  # fraction of max clock lost (or regained) per second of throttling
    mem_clock_mhz: float = 2619.0
    mem_total_mib: float = 81559.0
    mem_model_mib: float = 24576.0  # weights resident whenever the server runs
    mem_per_util_mib: float = 40000.0  # activations and batches, proportional to load
    max_queue_s: float = 6.0  # the gateway's timeout: older requests are dropped


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU at one moment. `backlog_s` is queued work in GPU-seconds at full clock."""

    temp_c: float
    util_pct: float = 0.0
    power_w: float = 0.0
    sm_clock_mhz: float = 0.0
    clock_factor: float = 1.0  # the clock ceiling the throttling allows, 0..1 of max
    throttle_mask: int = THROTTLE_GPU_IDLE
    backlog_s: float = 0.0
    dropped_s: float = 0.0  # work that timed out in the queue during the last step
    energy_mj: float = 0.0
    mem_used_mib: float = 0.0
    xid: int = 0  # last XID error, 0 when none (dcgm-exporter's convention)
    ecc_dbe: int = 0  # volatile uncorrected (double-bit) ECC errors


def initial_state(spec: GpuSpec) -> GpuState:
    """An idle GPU at its idle steady-state temperature."""
    temp = spec.ambient_c + spec.thermal_c_per_w * spec.idle_power_w
    return GpuState(
        temp_c=temp,
        power_w=spec.idle_power_w,
        sm_clock_mhz=spec.idle_sm_clock_mhz,
        mem_used_mib=spec.mem_model_mib,
    )


def _next_clock_factor(spec: GpuSpec, state: GpuState, dt_s: float) -> tuple[float, int]:
    """Throttling decided from the temperature the GPU had when the step began."""
    factor = state.clock_factor
    mask = 0
    if state.temp_c >= spec.slowdown_c:
        mask |= THROTTLE_SW_THERMAL
        factor -= spec.clock_step * dt_s
        if state.temp_c >= spec.slowdown_c + spec.hw_slowdown_margin_c:
            mask |= THROTTLE_HW_SLOWDOWN | THROTTLE_HW_THERMAL
            factor = min(factor, spec.min_clock_factor)
    elif state.temp_c <= spec.slowdown_c - spec.recover_margin_c:
        factor += spec.clock_step * dt_s
    factor = min(1.0, max(spec.min_clock_factor, factor))
    if factor < 1.0:
        mask |= THROTTLE_SW_THERMAL  # clocks still held down (in the hysteresis band, or recovering)
    return factor, mask


def step(spec: GpuSpec, state: GpuState, work_s: float, dt_s: float = 1.0) -> GpuState:
    """Advance one GPU by `dt_s` seconds during which `work_s` GPU-seconds of work arrived."""
    if dt_s <= 0:
        raise ValueError("dt_s must be positive")
    factor, mask = _next_clock_factor(spec, state, dt_s)
    capacity_s = factor * dt_s
    backlog = state.backlog_s + max(0.0, work_s)
    served = min(backlog, capacity_s)
    backlog -= served
    # a request that waited longer than the gateway's timeout is gone (the user got an error)
    limit_s = spec.max_queue_s * factor
    dropped = max(0.0, backlog - limit_s)
    backlog -= dropped
    busy = served / capacity_s  # fraction of the step the SMs were busy
    leakage_w = spec.leakage_w_per_c * max(0.0, state.temp_c - spec.leakage_from_c)
    demand_w = spec.idle_power_w + spec.dynamic_power_w * busy * factor + leakage_w
    power = min(spec.power_limit_w, demand_w)
    if demand_w > spec.power_limit_w:
        mask |= THROTTLE_SW_POWER_CAP
    if busy < 0.01:
        mask |= THROTTLE_GPU_IDLE
    steady = spec.ambient_c + spec.thermal_c_per_w * power
    temp = steady + (state.temp_c - steady) * math.exp(-dt_s / spec.tau_s)
    clock = spec.idle_sm_clock_mhz if busy < 0.01 else spec.max_sm_clock_mhz * factor
    return replace(
        state,
        temp_c=temp,
        util_pct=100.0 * busy,
        power_w=power,
        sm_clock_mhz=clock,
        clock_factor=factor,
        throttle_mask=mask,
        backlog_s=backlog,
        dropped_s=dropped,
        energy_mj=state.energy_mj + power * dt_s * 1000.0,
        mem_used_mib=min(spec.mem_total_mib, spec.mem_model_mib + spec.mem_per_util_mib * busy),
    )


def is_throttled(state: GpuState) -> bool:
    """Throttled for a reason an operator cares about (idle clock-down is not throttling)."""
    return bool(state.throttle_mask & ~THROTTLE_GPU_IDLE)


def with_xid(state: GpuState, xid: int) -> GpuState:
    """An XID error was reported; 48 (double-bit ECC) also counts an uncorrected ECC error."""
    return replace(state, xid=xid, ecc_dbe=state.ecc_dbe + (1 if xid == 48 else 0))
