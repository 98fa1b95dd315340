"""Inference servers' events: an SLO breach is one incident updated in place, then one line when it ends."""

from __future__ import annotations

from collectors.runner import Reading
from collectors.samples import Source
from collectors.serving_samples import (
    Missing,
    ModelServing,
    ReplicaSample,
    ReplicaStatus,
    ServingFigures,
    ServingSample,
)
from surgewatch.incidents import END_QUIET_S
from surgewatch.state import ConsoleState
from surgewatch.thresholds import Thresholds

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def sample(at: float, e2e_p99_s: float | None, *, status: ReplicaStatus = "up",
           resets: int = 0) -> Reading[ServingSample]:
    missing = {} if e2e_p99_s is not None else {"e2e_p99_s": Missing.NO_REQUESTS}
    f = ServingFigures("img", waiting=12, e2e_p99_s=e2e_p99_s, missing=missing)
    replica = ReplicaSample("http://10.0.0.1:8000/metrics", status, None if status == "up" else "connection refused",
                            None, at, at, kind="vllm", models=(f,), resets=resets)
    model = ModelServing("img", ("vllm",), 1 if status == "up" else 0, 1, f)
    return Reading("serving", ServingSample(at, (replica,), (model,)), at, None, 0, at + 1)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def test_a_breach_is_one_ongoing_line_then_one_line_when_it_ends() -> None:
    """e2e p99 over the SLO opens one incident whose line updates in place; it ends after a quiet spell."""
    clock = Clock()
    state = ConsoleState(Thresholds(), clock, redis_configured=False)
    for i, p99 in enumerate([4.0, 14.2, 17.5, 12.0]):
        clock.t = T0 + 5 * i
        state.apply(Source.SERVING, sample(clock.t, p99))
    ongoing = state.ongoing()
    assert [e.text for e in ongoing] == [
        "SLO breach: e2e p99 12.0 s > 10 s on model img since 20:26:45Z, peak 17.5 s"]
    assert ongoing[0].severity == "crit"
    assert sum(1 for e in state.events if e.kind == "slo") == 1  # updates replace the line: no firehose
    clock.t += 5
    state.apply(Source.SERVING, sample(clock.t, 3.0))
    assert state.ongoing(), "a moment under the SLO does not end it"
    clock.t += END_QUIET_S
    state.apply(Source.SERVING, sample(clock.t, 2.5))
    assert not state.ongoing()
    ended = [e.text for e in state.events if e.kind == "slo"]
    assert ended == ["SLO breach ended: e2e p99 on model img over 10 s from 20:26:45Z to 20:26:55Z (10s), "
                     "peak 17.5 s"]


def test_no_requests_is_not_a_breach_and_a_replica_down_or_restarted_is_a_line() -> None:
    """A window without requests opens nothing; a replica going down, back and restarting is a line each."""
    clock = Clock()
    state = ConsoleState(Thresholds(), clock, redis_configured=False)
    state.apply(Source.SERVING, sample(clock.t, None))
    clock.t += 5
    state.apply(Source.SERVING, sample(clock.t, None, status="down"))
    clock.t += 5
    state.apply(Source.SERVING, sample(clock.t, 1.0, resets=1))
    assert not state.ongoing()
    assert [e.text for e in state.events] == [
        "inference server 10.0.0.1:8000 down: connection refused",
        "inference server 10.0.0.1:8000 back up",
        "inference server 10.0.0.1:8000 restarted (its counters went back to zero)",
    ]
