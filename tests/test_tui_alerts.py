"""Pure rules of the console: staleness, status words, KPIs and derived events, without an app."""

from __future__ import annotations

import pytest

from collectors.runner import Reading, SourceError
from collectors.samples import (
    FleetSample,
    GpuSample,
    GpusSample,
    NodeSample,
    NodeStatus,
    TierTraffic,
    TrafficSample,
)
from quotas.errors import ErrorKind
from quotas.model import Quota
from surgewatch.alerts import audit_event, gpu_events, node_events, quota_text, traffic_events
from surgewatch.kpis import GpuRowCache, build_gpu_rows, compute_kpis, format_age, node_label
from surgewatch.state import HEALTH_HEADING, ConsoleState
from surgewatch.thresholds import Thresholds

TH = Thresholds()
URL = "http://127.0.0.1:9401/metrics"


def reading(name: str, sample: object, at: float, error: SourceError | None = None) -> Reading:
    return Reading(name, sample, at, error, 1 if error else 0, at + 1)


def node(status: NodeStatus, gpus: tuple[GpuSample, ...], at: float = 100.0, error: str | None = None) -> NodeSample:
    return NodeSample(URL, status, error, 1.0 if status == "up" else None, at, at, gpus)


def test_format_age_and_node_label() -> None:
    """Ages read as 4s / 2m05s / 3h10m and nodes are named host:port."""
    assert [format_age(4.9), format_age(125), format_age(3 * 3600 + 600), format_age(None)] == [
        "4s",
        "2m05s",
        "3h10m",
        "never",
    ]
    assert node_label("http://u:pw@gpu-01:9400/metrics") == "gpu-01:9400"


def test_rows_are_stale_when_their_source_fails_and_status_words() -> None:
    """A failing NVML source marks local rows stale with their age; a down node's GPUs say down."""
    gpus = (
        GpuSample("local", 0, temp_c=85.0),
        GpuSample("local", 1, throttle=("gpu_idle",)),
        GpuSample("local", 2, status="lost"),
    )
    timed_out = SourceError(ErrorKind.TIMEOUT, "timed out")
    rows = build_gpu_rows(reading("gpu", GpusSample(100.0, gpus), 100.0, timed_out), None, 130.0, TH)
    assert [r.stale for r in rows] == [True, True, True]
    assert rows[0].age_s == 30.0
    assert [r.status for r in rows] == ["stale", "stale", "lost"]
    fresh = build_gpu_rows(reading("gpu", GpusSample(100.0, gpus), 100.0), None, 101.0, TH)
    assert [r.status for r in fresh] == ["hot", "ok", "lost"]  # an idle clock reason is not throttling
    fleet = FleetSample(101.0, (node("down", (GpuSample(URL, 0, temp_c=50.0),), at=60.0, error="connection refused"),))
    (row,) = build_gpu_rows(None, reading("fleet", fleet, 101.0), 101.0, TH)
    assert (row.status, row.stale, row.age_s, row.node) == ("down", True, 41.0, "127.0.0.1:9401")


def test_kpis_count_and_average() -> None:
    """The KPI strip counts hot, throttled and lost GPUs and sums traffic into req/s and rejection %."""
    gpus = (
        GpuSample("local", 0, util_pct=100.0, temp_c=90.0, power_w=300.0, throttle=("thermal",)),
        GpuSample("local", 1, util_pct=50.0, temp_c=50.0, power_w=100.0),
        GpuSample("local", 2, status="lost"),
    )
    g = reading("gpu", GpusSample(100.0, gpus), 100.0)
    t = reading(
        "traffic",
        TrafficSample(100.0, (TierTraffic("free", None, 30.0, 10.0), TierTraffic("pro", None, 60.0, 0.0))),
        90.0,
    )
    rows = build_gpu_rows(g, None, 100.0, TH)
    k = compute_kpis(rows, t, [g, t], 100.0, TH)
    assert (k.gpus, k.healthy, k.hot, k.throttled, k.lost) == (3, 1, 1, 1, 1)
    assert (k.util_mean_pct, k.util_max_pct, k.temp_max_c, k.power_w) == (75.0, 100.0, 90.0, 400.0)
    assert k.rps == 100.0 and k.reject_pct == 10.0 and k.oldest_age_s == 10.0


def test_gpu_events_throttle_xid_lost_only_on_change() -> None:
    """Throttling, a new XID and a lost GPU raise one event each, and not again on the next tick."""
    a = build_gpu_rows(
        reading("gpu", GpusSample(1.0, (GpuSample("local", 0), GpuSample("local", 1))), 1.0), None, 1.0, TH
    )
    b_gpus = (GpuSample("local", 0, throttle=("thermal",), xid=79), GpuSample("local", 1, status="lost"))
    b = build_gpu_rows(reading("gpu", GpusSample(2.0, b_gpus), 2.0), None, 2.0, TH)
    ev = gpu_events({r.key: r for r in a}, b, 2.0)
    assert sorted(e.kind for e in ev) == ["gpu_lost", "throttle", "xid"]
    assert any("XID 79" in e.text for e in ev)
    assert gpu_events({r.key: r for r in b}, b, 3.0) == []
    # a first sight of a GPU is not news; a condition going on when first seen is (one throttling incident)
    assert [e.kind for e in gpu_events({}, b, 3.0)] == ["throttle"]


def test_node_events_down_and_up_skip_placeholder() -> None:
    """A node going down names its error, coming back says so; the not-yet-scraped placeholder is silent."""
    placeholder = FleetSample(0.0, (node("down", (), error="not scraped yet"),))
    up = FleetSample(1.0, (node("up", ()),))
    down = FleetSample(2.0, (node("down", (), error="connection refused"),))
    assert node_events(None, placeholder, 0.0) == []
    assert node_events(placeholder, up, 1.0) == []
    (d,) = node_events(up, down, 2.0)
    assert d.kind == "node_down" and "connection refused" in d.text
    (u,) = node_events(down, up, 3.0)
    assert u.kind == "node_up"


def test_traffic_events_spike_and_shadow() -> None:
    """A tier crossing the rejection threshold and shadow hits starting raise events once."""
    calm = TrafficSample(1.0, (TierTraffic("free", None, 100.0, 0.0),))
    hot = TrafficSample(2.0, (TierTraffic("free", None, 50.0, 50.0, {"user_quota": 50.0}, shadow_rps=3.0),))
    ev = traffic_events(calm, hot, TH, 2.0)
    assert [e.kind for e in ev] == ["reject_spike", "shadow"]
    assert "50%" in ev[0].text and "user_quota 50.0/s" in ev[0].text
    assert traffic_events(hot, hot, TH, 3.0) == []


def test_audit_event_says_who_what_why() -> None:
    """A quota change from the audit stream reads: tier, version, actor, old -> new, reason."""
    old = Quota("free", 10, 86400, None, False, "enforce", None, 3, "init", 0.0)
    new = Quota("free", 3, 86400, 50, False, "shadow", None, 4, "alice", 1.0)

    class Entry:
        id, tier, actor, at, version, reason = "1-0", "free", "alice", 5.0, 4, "surge"

    Entry.old, Entry.new = old, new  # type: ignore[attr-defined]  # a stand-in audit entry class built for this test
    e = audit_event(Entry())
    assert e.text == "quota free v4 by alice: 10/1d -> 3/1d cap 50/s shadow (surge)"
    assert quota_text(None) == "none"


def test_thresholds_override_and_reject_unknown() -> None:
    """Settings.thresholds override defaults; a misspelt threshold is refused, not ignored."""
    th = Thresholds.from_mapping({"temp_hot_c": 70})
    assert th.temp_hot_c == 70.0 and th.temp_style(75) == "bold red"
    try:
        Thresholds.from_mapping({"temp_hoot_c": 70})
    except ValueError as e:
        assert "temp_hoot_c" in str(e)
    else:
        raise AssertionError("unknown threshold accepted")


def test_an_unchanged_page_gives_the_same_row_objects() -> None:
    """A node re-scraped with the same GPU samples keeps its row objects; new samples or a down node don't."""
    def rows(
        at: float, gpus: tuple[GpuSample, ...], status: NodeStatus = "up", cache: GpuRowCache | None = None
    ) -> tuple:
        n = node(status, gpus, at if status == "up" else 100.0, None if status == "up" else "cannot connect")
        return build_gpu_rows(None, reading("fleet", FleetSample(at, (n,)), at), at, TH, cache)

    cache = GpuRowCache()
    gpus = (GpuSample(URL, 0, temp_c=50.0), GpuSample(URL, 1))
    a, b = rows(100.0, gpus, cache=cache), rows(105.0, gpus, cache=cache)  # two NodeSamples, one page
    assert all(x is y for x, y in zip(a, b, strict=True))
    changed = (GpuSample(URL, 0, temp_c=51.0), GpuSample(URL, 1))
    c = rows(110.0, changed, cache=cache)
    assert c[0] is not b[0] and c[0].gpu.temp_c == 51.0
    down = rows(111.0, changed, "down", cache)
    assert [r.status for r in down] == ["down", "down"]


@pytest.mark.parametrize("kind", [k for k in ErrorKind if k.value in HEALTH_HEADING])
def test_a_redis_state_reads_the_same_whichever_route_reports_it(kind: ErrorKind) -> None:
    """A failing call (the change feed) names a Redis state with the traffic poll's own words."""
    state = ConsoleState(Thresholds(), lambda: 0.0, redis_configured=True)
    state.subscription_error = SourceError(kind, "details")
    assert state.banner()[1].startswith(HEALTH_HEADING[kind.value] + ": details")


def test_a_lost_change_feed_while_redis_answers_is_not_called_an_outage() -> None:
    """Redis back empty, the feed not yet resubscribed: the banner names the feed and that Redis holds no tiers."""
    from collectors.samples import RedisHealth, Source, TrafficSample

    state = ConsoleState(Thresholds(), lambda: 100.0, redis_configured=True)
    empty = TrafficSample(99.0, (), RedisHealth("no_tiers", "Redis answers but holds no tier at all"))
    state.apply(Source.TRAFFIC, Reading("traffic", empty, 99.0, None, 0, 101.0))
    state.subscription_error = SourceError(ErrorKind.UNREACHABLE, "quota change feed lost: Error 111 connecting")
    level, text = state.banner()
    assert level == "error" and text.startswith("QUOTA CHANGES NOT RECEIVED: quota change feed lost")
    assert "REDIS HOLDS NO TIERS" in text and "Redis unreachable" not in text
