"""The simulated GPU's physics: queueing, power, thermal inertia, throttling, XID."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.gpu_model import (
    THROTTLE_HW_SLOWDOWN,
    THROTTLE_SW_POWER_CAP,
    THROTTLE_SW_THERMAL,
    GpuSpec,
    initial_state,
    is_throttled,
    step,
    with_xid,
)

SPEC = GpuSpec()


def run(spec: GpuSpec, work_per_s: float, seconds: int):
    """Step one GPU for `seconds` at a constant arrival of work; return every state."""
    states = [initial_state(spec)]
    for _ in range(seconds):
        states.append(step(spec, states[-1], work_per_s))
    return states


def test_idle_gpu_stays_cool_and_unthrottled() -> None:
    """With no work the GPU idles at its idle temperature, clocks down, and is not counted throttled."""
    states = run(SPEC, 0.0, 60)
    assert states[-1].util_pct == 0.0
    assert abs(states[-1].temp_c - states[0].temp_c) < 0.01
    assert states[-1].power_w == SPEC.idle_power_w
    assert not is_throttled(states[-1])


def test_temperature_lags_behind_load_then_settles() -> None:
    """Under half load the temperature rises with inertia (not in one step) toward its steady state."""
    states = run(SPEC, 0.5, 120)
    temps = [s.temp_c for s in states]
    assert all(b >= a for a, b in itertools.pairwise(temps)), "monotonic rise"
    steady = SPEC.ambient_c + SPEC.thermal_c_per_w * states[-1].power_w
    assert temps[1] - temps[0] < 0.2 * (steady - temps[0]), "one second covers only a fraction of the way"
    assert abs(temps[-1] - steady) < 0.5, "settled after ten time constants"
    assert 45 <= states[-1].util_pct <= 55


def test_overload_queues_and_drops_what_times_out() -> None:
    """Work beyond capacity waits in a bounded queue at 100 % utilization; the excess times out."""
    states = run(SPEC, 1.5, 30)
    assert states[5].util_pct == 100.0
    assert states[3].backlog_s > 1.0
    assert all(s.backlog_s <= SPEC.max_queue_s + 1e-9 for s in states)
    assert states[-1].dropped_s > 0


def test_hot_gpu_throttles_at_slowdown_and_recovers_with_hysteresis() -> None:
    """A badly cooled GPU under full load crosses the slowdown threshold, loses SM clock, then recovers when idle."""
    hot = replace(SPEC, thermal_c_per_w=0.11)
    states = run(hot, 1.2, 120)
    throttled = [s for s in states if s.throttle_mask & THROTTLE_SW_THERMAL]
    assert throttled, "thermal slowdown was reached"
    assert min(s.sm_clock_mhz for s in throttled) < 0.9 * hot.max_sm_clock_mhz
    assert max(s.temp_c for s in states) < hot.slowdown_c + hot.hw_slowdown_margin_c + 3, "throttling holds it"
    cooled = states[-1]
    for _ in range(120):
        cooled = step(hot, cooled, 0.0)
    assert cooled.temp_c < hot.slowdown_c - hot.recover_margin_c
    assert cooled.clock_factor == 1.0
    assert not is_throttled(cooled)


def test_runaway_heat_triggers_hardware_slowdown() -> None:
    """Far above the slowdown threshold the hardware slowdown bit is set and the clock drops to its floor."""
    s = replace(initial_state(SPEC), temp_c=SPEC.slowdown_c + SPEC.hw_slowdown_margin_c + 1)
    nxt = step(SPEC, s, 1.0)
    assert nxt.throttle_mask & THROTTLE_HW_SLOWDOWN
    assert nxt.clock_factor == SPEC.min_clock_factor


def test_hot_chip_at_full_load_hits_the_power_cap() -> None:
    """Leakage makes a hot chip at full clock ask for more than its limit: power is clipped and flagged."""
    s = replace(initial_state(SPEC), temp_c=SPEC.slowdown_c - SPEC.recover_margin_c - 0.5)
    nxt = step(SPEC, s, 2.0)
    assert nxt.power_w == SPEC.power_limit_w
    assert nxt.throttle_mask & THROTTLE_SW_POWER_CAP


def test_xid_48_counts_an_uncorrected_ecc_error() -> None:
    """XID 48 (double-bit ECC) is remembered as the last XID and counts one uncorrected ECC error."""
    s = with_xid(initial_state(SPEC), 48)
    assert (s.xid, s.ecc_dbe) == (48, 1)
    s = with_xid(s, 79)
    assert (s.xid, s.ecc_dbe) == (79, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=80))
def test_any_workload_keeps_readings_physical(works: list[float]) -> None:
    """For any arrival pattern: 0-100 % util, power within idle..limit, temperature within ambient..shutdown,
    bounded queue."""
    s = initial_state(SPEC)
    for w in works:
        s = step(SPEC, s, w)
        assert 0.0 <= s.util_pct <= 100.0
        assert SPEC.idle_power_w - 1e-9 <= s.power_w <= SPEC.power_limit_w + 1e-9
        assert SPEC.ambient_c <= s.temp_c < SPEC.shutdown_c
        assert 0.0 <= s.backlog_s <= SPEC.max_queue_s + 1e-9
        assert SPEC.min_clock_factor <= s.clock_factor <= 1.0
