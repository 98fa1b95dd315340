"""The fleet's throttling as one incident: one line updated in place, logged when it ends."""

from __future__ import annotations

from collectors.samples import GpuSample
from surgewatch.alerts import Event
from surgewatch.incidents import END_QUIET_S, ThrottleIncident, keep_latest
from surgewatch.kpis import GpuRow


def fleet(throttled: dict[int, tuple[str, ...]], nodes: int = 4, gpus: int = 4) -> list[GpuRow]:
    """`nodes` x `gpus` rows; GPU number k (node-major) throttles for the reasons in `throttled[k]`."""
    return [
        GpuRow(key=f"n{n}/{i}", node=f"n{n}", gpu=GpuSample(f"n{n}", i, throttle=throttled.get(n * gpus + i, ())),
               status="ok", stale=False, age_s=None)
        for n in range(nodes) for i in range(gpus)
    ]


def test_a_throttling_wave_is_one_incident_updated_in_place_then_logged_when_it_ends() -> None:
    """Waves of GPUs starting to throttle make one incident whose line says now, peak and since; it ends once."""
    inc, events = ThrottleIncident(), list[Event]()
    keep_latest(events, inc.update(fleet({}), 0.0))
    for t, k in enumerate(range(1, 12), start=1):  # one more GPU every second
        keep_latest(events, inc.update(fleet({g: ("power_cap",) for g in range(k)}), float(t)))
    assert len(events) == 1 and events[0].ongoing and events[0].kind == "throttle"
    assert events[0].text == (
        "throttling: 11/16 GPUs on 3 nodes since 00:00:01Z, peak 11 (power_cap 11)"
    )
    keep_latest(events, inc.update(fleet({0: ("thermal",), 1: ("power_cap",)}), 12.0))
    assert len(events) == 1 and events[0].severity == "crit"  # the hardware protecting itself
    assert "2/16 GPUs on 1 node since 00:00:01Z, peak 11 (power_cap 1, thermal 1)" in events[0].text
    keep_latest(events, inc.update(fleet({}), 13.0))
    assert len(events) == 1 and events[0].ongoing  # quiet, but not long enough to end
    keep_latest(events, inc.update(fleet({}), 13.0 + END_QUIET_S))
    (ended,) = events
    assert not ended.ongoing and ended.text.startswith("throttling ended: 00:00:01Z to 00:00:12Z (11s), peak 11")


def test_an_unchanged_fleet_makes_no_event_and_a_new_wave_is_a_new_incident() -> None:
    """The same counts again say nothing; throttling after the end opens a second incident with its own id."""
    inc = ThrottleIncident()
    (first,) = inc.update(fleet({0: ("power_cap",)}), 0.0)
    assert inc.update(fleet({0: ("power_cap",)}), 1.0) == []
    inc.update(fleet({}), 2.0)
    (end,) = inc.update(fleet({}), 2.0 + END_QUIET_S)
    (second,) = inc.update(fleet({3: ("power_cap",)}), 100.0)
    assert first.incident == end.incident != second.incident and second.ongoing


def test_stale_and_idle_gpus_do_not_count_and_other_events_stay_lines_of_their_own() -> None:
    """A down node's last-known throttling and an idle clock are not throttling; one-off facts are never merged."""
    rows = fleet({0: ("gpu_idle",)})
    stale = [GpuRow(r.key, r.node, GpuSample(r.node, r.gpu.index, throttle=("thermal",)), True, 30.0, "down")
             for r in rows]
    assert ThrottleIncident().update(rows, 0.0) == [] and ThrottleIncident().update(stale, 0.0) == []
    events: list[Event] = []
    keep_latest(events, [Event(0.0, "crit", "xid", "n0 gpu1 XID 79"), Event(1.0, "crit", "node_down", "node n2 down")])
    keep_latest(events, ThrottleIncident().update(fleet({1: ("power_cap",)}), 2.0))
    assert [e.kind for e in events] == ["xid", "node_down", "throttle"]
