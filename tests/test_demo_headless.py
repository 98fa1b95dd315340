"""`surgewatch demo --headless`: the whole loop through the real limiter and a real Valkey, as JSON lines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim.valkey import free_port, port_open
from surgewatch.thresholds import Thresholds
from tests.conftest import ROOT

SURGEWATCH = [sys.executable, "-m", "surgewatch.cli"]
PAID = ("plus", "pro", "team", "enterprise")
CUT_AT = 45


def demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SURGEWATCH, "demo", "--headless", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def lines(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(ln) for ln in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def surge() -> list[dict[str, Any]]:
    """One 100-second scenario at full speed, with the free tier cut to 3/1d at t=45."""
    return lines(demo("--duration", "100", "--speed", "0", "--seed", "11", "--no-serve-nodes",
                      "--quota-change", f"{CUT_AT}:free:3/1d"))


def mean(rows: list[dict[str, Any]], key: Any) -> float:
    vals = [key(r) for r in rows]
    return sum(vals) / len(vals)


def window(rows: list[dict[str, Any]], start: int, end: int) -> list[dict[str, Any]]:
    """Rows with start <= t <= end."""
    return [r for r in rows if start <= r["t"] <= end]


def test_output_is_one_object_per_second_with_the_contract_keys(surge: list[dict[str, Any]]) -> None:
    """Exactly one JSON object per simulated second, t = 1..N, with the documented keys and every tier."""
    assert [r["t"] for r in surge] == list(range(1, 101))
    for r in surge:
        assert set(r) == {"t", "tiers", "gpu_util_mean", "gpu_temp_mean", "gpu_temp_max", "throttled", "timed_out",
                          "quota_changes", "e2e_p99_s", "queue"}
        assert set(r["tiers"]) == {"free", "plus", "pro", "team", "enterprise"}
        for t in r["tiers"].values():
            assert set(t) == {"offered_rps", "accepted_rps", "rejected_rps"}
            assert t["accepted_rps"] + t["rejected_rps"] == t["offered_rps"]


def test_a_pegged_fleet_times_out_what_it_was_admitted_beyond_its_capacity(surge: list[dict[str, Any]]) -> None:
    """No request times out before the surge; with the fleet pegged, admitted requests time out every second."""
    assert all(r["timed_out"] == 0 for r in window(surge, 1, 10))
    late = window(surge, 38, CUT_AT - 1)  # the queues full: pegged since about 12 s
    assert all(r["gpu_util_mean"] >= 99.5 and r["timed_out"] > 0 for r in late)


def test_users_wait_past_the_slo_in_the_surge_and_get_their_images_in_time_after_the_cut(
        surge: list[dict[str, Any]]) -> None:
    """The fleet's e2e p99 climbs past the SLO as queues build, and falls back under it as they drain."""
    slo_s = Thresholds().e2e_p99_slo_s
    assert surge[0]["e2e_p99_s"] is None  # one second in: no window yet, not 0 s
    calm = window(surge, 2, 8)
    assert all(r["e2e_p99_s"] is not None and r["e2e_p99_s"] < 0.6 * slo_s and r["queue"] == 0 for r in calm)
    before = window(surge, CUT_AT - 10, CUT_AT - 1)
    assert all(r["e2e_p99_s"] > slo_s and r["queue"] > 1000 for r in before)
    late = window(surge, CUT_AT + 35, CUT_AT + 55)
    assert all(r["e2e_p99_s"] < slo_s and r["queue"] == 0 for r in late)
    # the p99 follows the queue down: after the cut it never climbs back over the SLO once under it
    after = [r["e2e_p99_s"] for r in window(surge, CUT_AT, 100)]
    first_under = next(i for i, p in enumerate(after) if p < slo_s)
    assert all(p < slo_s for p in after[first_under:])


def test_surge_builds_in_twenty_seconds_and_the_fleet_is_hot_by_thirty(surge: list[dict[str, Any]]) -> None:
    """Free demand rises about tenfold within 20 s; by 30 s the fleet is saturated, hot and starts throttling."""
    free = [r["tiers"]["free"]["offered_rps"] for r in surge]
    assert mean(window(surge, 18, 22), lambda r: r["tiers"]["free"]["offered_rps"]) > 6 * free[0]
    early, hot = surge[1], window(surge, 28, 32)
    assert early["gpu_util_mean"] < 80
    assert mean(hot, lambda r: r["gpu_util_mean"]) > 95
    assert mean(hot, lambda r: r["gpu_temp_mean"]) > early["gpu_temp_mean"] + 25
    assert max(r["gpu_temp_max"] for r in hot) >= 85
    assert max(r["throttled"] for r in window(surge, 30, CUT_AT - 1)) > 0


def test_cut_makes_free_rejections_jump_within_two_seconds(surge: list[dict[str, Any]]) -> None:
    """After the free tier is cut to 3/1d, its rejections jump at once and its admitted rate collapses."""
    before = window(surge, CUT_AT - 5, CUT_AT - 1)
    after = window(surge, CUT_AT, CUT_AT + 1)
    rej = lambda r: r["tiers"]["free"]["rejected_rps"] / r["tiers"]["free"]["offered_rps"]  # noqa: E731
    assert min(rej(r) for r in after) > max(rej(r) for r in before) + 0.2
    acc = lambda r: r["tiers"]["free"]["accepted_rps"]  # noqa: E731
    assert mean(after, acc) < 0.5 * mean(before, acc)


def test_fleet_cools_within_a_minute_of_the_cut(surge: list[dict[str, Any]]) -> None:
    """Within a minute of the cut, utilization and temperature are well below their surge level and throttling ends."""
    before = window(surge, CUT_AT - 5, CUT_AT - 1)
    late = window(surge, CUT_AT + 45, CUT_AT + 55)
    assert mean(late, lambda r: r["gpu_util_mean"]) < mean(before, lambda r: r["gpu_util_mean"]) - 25
    assert mean(late, lambda r: r["gpu_temp_mean"]) < mean(before, lambda r: r["gpu_temp_mean"]) - 10
    assert late[-1]["throttled"] == 0


def test_paid_tiers_keep_their_service(surge: list[dict[str, Any]]) -> None:
    """Paid tiers are never refused, and their admitted rate after the cut matches the rate before it."""
    for tier in PAID:
        assert sum(r["tiers"][tier]["rejected_rps"] for r in surge) == 0, tier
        acc = lambda r, tier=tier: r["tiers"][tier]["accepted_rps"]  # noqa: E731
        before = mean(window(surge, CUT_AT - 15, CUT_AT - 1), acc)
        after = mean(window(surge, CUT_AT, CUT_AT + 14), acc)
        assert 0.7 * before < after < 1.4 * before, tier


def test_same_seed_gives_the_same_run_and_another_seed_does_not() -> None:
    """Two runs with one seed print identical JSON; a different seed prints different traffic."""
    args = ("--duration", "25", "--speed", "0", "--no-serve-nodes", "--quota-change", "15:free:3/1d")
    a = demo(*args, "--seed", "5")
    b = demo(*args, "--seed", "5")
    c = demo(*args, "--seed", "6")
    assert a.returncode == b.returncode == c.returncode == 0, a.stderr + b.stderr + c.stderr
    assert without_wall_times(a.stdout) == without_wall_times(b.stdout)
    assert without_wall_times(a.stdout) != without_wall_times(c.stdout)


def without_wall_times(stdout: str) -> list[dict[str, Any]]:
    """The rows with the quota changes' server times (when the store wrote them) left out."""
    rows = [json.loads(ln) for ln in stdout.splitlines()]
    for r in rows:
        for c in r["quota_changes"]:
            c["new"].pop("updated_at")
            c["new"].pop("expires_at")
    return rows


def test_the_scheduled_cut_is_in_the_timeline_at_its_second(surge: list[dict[str, Any]]) -> None:
    """The --quota-change shows in the row of its second only, as `quota list --json` shows the quota."""
    changed = [r for r in surge if r["quota_changes"]]
    assert [r["t"] for r in changed] == [CUT_AT]
    (c,) = changed[0]["quota_changes"]
    assert c["tier"] == "free" and c["actor"] == "demo-operator" and "scheduled change" in c["reason"]
    assert set(c["new"]) == {"tier", "limit", "window_s", "tier_cap_rps", "paused", "mode", "expires_at", "version",
                             "updated_by", "updated_at"}
    assert (c["new"]["limit"], c["new"]["window_s"], c["new"]["expires_at"]) == (3, 86400, None)


def _valkey_pids(port: int) -> list[int]:
    """valkey-server processes listening on `port` (from /proc, no external tools)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and b"valkey-server" in cmd[0] and str(port).encode() in cmd:
                pids.append(int(d.name))
    return pids


def test_headless_run_at_real_speed_serves_nodes_and_leaves_nothing_behind() -> None:
    """At speed 1 the run serves its nodes, says how to join, and afterwards Valkey is gone and its port free."""
    port = free_port()
    proc = demo("--duration", "2", "--redis-port", str(port), "--seed", "1")
    assert [r["t"] for r in lines(proc)] == [1, 2]
    assert f"surgewatch --redis redis://127.0.0.1:{port}/0 --nodes @" in proc.stderr
    assert not port_open(port)
    assert _valkey_pids(port) == []


def test_sigterm_mid_run_stops_the_server_and_the_nodes() -> None:
    """A terminated demo still stops Valkey and every node server: no process or port is left behind."""
    port = free_port()
    proc = subprocess.Popen([*SURGEWATCH, "demo", "--headless", "--duration", "600", "--redis-port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        joined = proc.stderr.readline()
        # the nodes' dcgm pages and their inference servers' pages (--nodes @FILE, --servers @FILE)
        files = [Path(part.split()[0]) for part in joined.split("@")[1:]]
        node_ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for f in files for u in f.read_text().split()]
        assert len(files) == 2 and len(node_ports) == 32
        json.loads(proc.stdout.readline())  # it runs
        assert port_open(port) and all(port_open(p) for p in node_ports)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) in (130, 143, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not port_open(port)
    assert not any(port_open(p) for p in node_ports)
    assert _valkey_pids(port) == []
    assert not any(f.exists() for f in files)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "5", "--quota-change", "3:fr}ee:3/1d"], "invalid tier name"),
        (["--duration", "5", "--quota-change", "3:free:3/1x"], "invalid window"),
        (["--duration", "5", "--quota-change", "soon:free:3/1d"], "T:TIER:LIMIT/WINDOW"),
        ([], "--duration"),
        (["--duration", "5", "--nodes", "0"], "--nodes"),
        (["--duration", "5", "--quota-change", "3:gold:3/1d"], "unknown tier 'gold'"),
        (["--duration", "5", "--speed", "nan"], "invalid --speed nan"),
        (["--duration", "5", "--speed", "1e-300"], "from 0.01 to 1000, or 0"),
    ],
)
def test_bad_demo_input_is_refused_before_anything_starts(args: list[str], message: str) -> None:
    """Malformed options exit 2 with a message naming the problem, and print no JSON."""
    proc = demo(*args, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_busy_redis_port_is_a_clear_error_and_leaves_nothing() -> None:
    """When --redis-port is taken the demo says so, exits 1, and the port's owner is untouched."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = demo("--duration", "3", "--redis-port", str(port), timeout=30)
        assert proc.returncode == 1
        assert "valkey-server" in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stdout == ""
        assert _valkey_pids(port) == []
