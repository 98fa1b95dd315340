"""The runner: interval, timeout, capped backoff, last good sample and age; it never raises."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from collectors.runner import Collector, Reading, Runner, SourceError, classify
from quotas.errors import AuthFailed, ErrorKind, Unavailable


@dataclass(frozen=True)
class Sample:
    taken_at: float
    value: int


class Scripted:
    """A collector whose polls follow a script: an int is a sample, an exception is raised, 'hang' hangs."""

    name = "scripted"

    def __init__(self, script: list[int | str | BaseException], clock: Clock) -> None:
        self.script, self.clock, self.closed = list(script), clock, False

    async def poll(self) -> Sample:
        step = self.script.pop(0)
        if step == "hang":
            await asyncio.sleep(3600)
        if isinstance(step, BaseException):
            raise step
        return Sample(self.clock(), int(step))

    async def aclose(self) -> None:
        self.closed = True


def value(reading: Reading[Sample]) -> int:
    """The value of a reading's last good sample (there must be one)."""
    assert reading.sample is not None
    return reading.sample.value


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_failures_keep_last_sample_and_back_off_capped() -> None:
    """Errors keep the last good sample, count failures, double the delay up to the cap, then reset."""
    clock = Clock()
    c = Scripted([1, OSError("connection refused"), RuntimeError(""), ValueError("x"), ValueError("x"), 2], clock)
    r = Runner(c, interval_s=1.0, timeout_s=1.0, backoff_max_s=5.0, clock=clock)
    assert isinstance(c, Collector)
    ok = await r.poll_once()
    assert (value(ok), ok.error, ok.failures, ok.next_poll_at) == (1, None, 0, 1001.0)
    delays = []
    for _ in range(4):
        clock.t += 10
        bad = await r.poll_once()
        delays.append(bad.next_poll_at - clock.t)
        assert value(bad) == 1 and bad.sampled_at == 1000.0
    assert delays == [1.0, 2.0, 4.0, 5.0]
    assert (
        bad.failures == 4 and bad.error == SourceError(ErrorKind.ERROR, "ValueError: x") and bad.age_s(clock.t) == 40.0
    )
    assert r.backoff_s(3) == 4.0
    clock.t += 10
    good = await r.poll_once()
    assert (value(good), good.error, good.failures, good.age_s(clock.t)) == (2, None, 0, 0.0)


async def test_empty_error_message_names_the_type() -> None:
    """An exception without a message is reported by its type."""
    clock = Clock()
    r = Runner(Scripted([RuntimeError()], clock), interval_s=1, timeout_s=1, clock=clock)
    reading = await r.poll_once()
    assert (
        reading.error == SourceError(ErrorKind.ERROR, "RuntimeError")
        and reading.sample is None
        and reading.age_s(clock.t) is None
    )


async def test_timeout_is_an_error_not_a_hang() -> None:
    """A poll that hangs ends at the timeout with a clear error."""
    clock = Clock()
    r = Runner(Scripted(["hang"], clock), interval_s=1, timeout_s=0.05, clock=clock)
    reading = await r.poll_once()
    assert reading.error == SourceError(ErrorKind.TIMEOUT, "timed out after 0.05 s") and reading.failures == 1


async def test_a_poll_cut_off_by_its_timeout_names_what_it_had_found() -> None:
    """A poll cut off at the timeout keeps the cause it had found (a silent cluster node) in its error."""
    clock = Clock()

    class Naming(Scripted):
        def found_before_timeout(self) -> str:
            return "Redis cluster node 10.0.0.7:7001 (master of tier free) does not answer"

    r = Runner(Naming(["hang"], clock), interval_s=1, timeout_s=0.05, clock=clock)
    reading = await r.poll_once()
    assert reading.error == SourceError(
        ErrorKind.TIMEOUT,
        "timed out after 0.05 s: Redis cluster node 10.0.0.7:7001 (master of tier free) does not answer")


async def test_run_survives_failing_handlers_and_collectors() -> None:
    """run() keeps polling through collector errors and a handler that raises; only cancellation stops it."""
    c = Scripted([1, OSError("down"), 2, 3, 4, 5, 6], Clock())
    seen: list[Reading[Sample]] = []

    async def handler(reading: Reading[Sample]) -> None:
        seen.append(reading)
        if len(seen) == 1:
            raise RuntimeError("bug in a widget")

    r = Runner(c, interval_s=0.01, timeout_s=1, backoff_max_s=0.01)
    task = asyncio.create_task(r.run(handler))
    for _ in range(200):
        if len(seen) >= 4:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [x.error for x in seen[:3]] == [None, SourceError(ErrorKind.UNREACHABLE, "OSError: down"), None]
    assert [value(x) for x in seen[:4]] == [1, 1, 2, 3]


def test_rejects_bad_intervals() -> None:
    """A zero interval or timeout is refused at construction."""
    with pytest.raises(ValueError):
        Runner(Scripted([], Clock()), interval_s=0, timeout_s=1)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError(), ErrorKind.TIMEOUT),
        (ConnectionRefusedError("refused"), ErrorKind.UNREACHABLE),
        (AuthFailed("WRONGPASS"), ErrorKind.AUTH_FAILED),
        (Unavailable("OOM command not allowed", "OOM"), ErrorKind.OUT_OF_MEMORY),
        (Unavailable("READONLY You can't write", "READONLY"), ErrorKind.READ_ONLY_REPLICA),
        (Unavailable("MISCONF cannot persist", "MISCONF"), ErrorKind.PERSISTENCE_ERROR),
        (Unavailable("LOADING", "LOADING"), ErrorKind.LOADING),
        (Unavailable("BUSY script", "BUSY"), ErrorKind.UNAVAILABLE),
        (ValueError("junk"), ErrorKind.ERROR),
    ],
)
def test_errors_carry_their_kind_from_the_exception_class(exc: Exception, kind: ErrorKind) -> None:
    """A failure's kind comes from its exception (never from parsing its text), with the message beside it."""
    err = classify(exc)
    assert err.kind == kind and str(err) == err.message
