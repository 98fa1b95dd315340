"""The fleet's figures are computed once: the guard sees what the console's KPI strip shows."""

from __future__ import annotations

from collectors.runner import Reading
from collectors.samples import FleetSample, FleetSummary, GpuSample, NodeSample
from surgewatch.guard.policy import default_policy
from surgewatch.guard.signals import observe
from surgewatch.kpis import compute_kpis
from surgewatch.thresholds import Thresholds

NOW = 1_000_000.0


def _reading(sample: object) -> Reading[object]:
    return Reading("fleet", sample, NOW, None, 0, NOW + 1)


def _worst_nodes_of_a_large_fleet() -> FleetSample:
    """Prometheus window mode: 4,096 GPUs up, summarised by Prometheus; the sample holds the 2 worst."""
    worst = tuple(
        NodeSample(f"http://hot{i}:9400/metrics", "up", None, 5.0, NOW, NOW,
                   gpus=(GpuSample(f"http://hot{i}:9400/metrics", 0, util_pct=100.0, temp_c=90.0,
                                   throttle=("hw_thermal",)),))
        for i in range(2)
    )
    summary = FleetSummary(gpus=4096, healthy=4000, hot=60, throttled=2, xid=0, util_n=4096, util_mean_pct=41.0,
                           util_max_pct=100.0, temp_n=4096, temp_mean_c=52.0, temp_max_c=90.0, power_w=500_000.0,
                           shown_nodes=2)
    return FleetSample(NOW, worst, summary=summary)


def test_the_guard_reads_a_large_fleet_through_its_summary_not_its_worst_nodes() -> None:
    """Above the window, the guard's mean utilization and temperature are the whole fleet's, as on screen."""
    fleet = _reading(_worst_nodes_of_a_large_fleet())
    seen = observe(default_policy(), now=NOW, traffic=None, fleet=fleet)
    assert seen.gpus == 4096 and seen.stale_gpus == 0
    assert seen.values["util_pct"] == 41.0  # the worst nodes alone would say 100
    assert seen.values["temp_c"] == 52.0 and seen.values["temp_max_c"] == 90.0
    assert seen.values["throttled_pct"] == 100.0 * 2 / 4096


def test_guard_and_console_agree_on_every_shared_figure() -> None:
    """Mean and max utilization and temperature and the throttled count are one computation for both."""
    fleet = _reading(_worst_nodes_of_a_large_fleet())
    seen = observe(default_policy(), now=NOW, traffic=None, fleet=fleet)
    k = compute_kpis((), None, [fleet], NOW, Thresholds())
    assert k.gpus == seen.gpus
    assert (k.util_mean_pct, k.temp_mean_c, k.temp_max_c) == (
        seen.values["util_pct"], seen.values["temp_c"], seen.values["temp_max_c"])
    assert 100.0 * k.throttled / k.gpus == seen.values["throttled_pct"]


def test_a_stale_summary_counts_every_gpu_it_stands_for_as_stale() -> None:
    """A summary older than the guard's bound is not fresh data: its GPUs are stale and the guard freezes."""
    old = Reading("fleet", _worst_nodes_of_a_large_fleet(), NOW - 3600, None, 0, NOW + 1)
    seen = observe(default_policy(), now=NOW, traffic=None, fleet=old)
    assert seen.frozen is not None
    assert seen.stale_gpus == 4096 and "util_pct" not in seen.values
