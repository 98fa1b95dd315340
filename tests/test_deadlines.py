"""The limiter's per-call deadlines: overruns time out, others finish, outside cancellation stays a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from quotas.library import Deadlines


async def test_mixed_calls_time_out_only_when_they_overrun() -> None:
    """Of many concurrent calls, exactly those slower than their deadline raise TimeoutError."""
    d = Deadlines()

    async def call(delay: float, timeout: float) -> str:
        try:
            return await d.run(asyncio.sleep(delay, "done"), timeout)
        except TimeoutError:
            return "timeout"

    # deadlines interleaved short and long; every call either ends far inside its deadline or could not end
    # before it on any machine (a minute's sleep), so a loaded machine cannot change which is which
    cases = [(0.01, 30.0), (60.0, 0.05), (0.02, 20.0), (60.0, 0.1), (0.0, 40.0), (60.0, 0.2)] * 20
    results = await asyncio.gather(*(call(dl, to) for dl, to in cases))
    assert results == ["done" if dl < to else "timeout" for dl, to in cases]


async def test_shorter_deadline_after_a_longer_one_still_fires() -> None:
    """A call with a shorter timeout than the watchdog's current sleep is still cut at its own deadline."""
    d = Deadlines()
    slow = asyncio.ensure_future(d.run(asyncio.sleep(0.05, "slow"), 5.0))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await d.run(asyncio.sleep(5), 0.05)
    assert await slow == "slow"


async def test_outside_cancellation_is_not_a_timeout() -> None:
    """Cancelling the caller's task propagates CancelledError, not TimeoutError."""
    d = Deadlines()
    task = asyncio.ensure_future(d.run(asyncio.sleep(5), 2.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
