"""Drive one collector: its own interval, a per-poll timeout, capped exponential backoff.

The runner keeps the last good sample with its time and the last error, and never raises into its
caller (except cancellation), so a failing source can never take the console down.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from quotas.errors import ErrorKind
from quotas.safe import safe

log = logging.getLogger(__name__)

S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)


@runtime_checkable
class Collector(Protocol[S_co]):
    """An async source of immutable samples."""

    name: str

    async def poll(self) -> S_co: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SourceError:
    """Why a poll failed: a kind to act on (the banner, `redis.status`) and a one-line message to show."""

    kind: ErrorKind
    message: str

    def __str__(self) -> str:
        return self.message


def classify(exc: BaseException) -> SourceError:
    """The kind of a collector's failure, from the exception's class (never from its text)."""
    kind = getattr(exc, "kind", None)
    if not isinstance(kind, ErrorKind):
        if isinstance(exc, TimeoutError):
            kind = ErrorKind.TIMEOUT
        elif isinstance(exc, (ConnectionError, OSError)) or _is_transport_error(exc):
            kind = ErrorKind.UNREACHABLE
        else:
            kind = ErrorKind.ERROR
    # our own typed errors say what happened in their message; anything else is named by its type too
    typed = isinstance(getattr(exc, "kind", None), ErrorKind) and str(exc)
    return SourceError(kind, safe(" ".join(str(exc).split()), 300) if typed else describe_error(exc))


def _is_transport_error(exc: BaseException) -> bool:
    # redis-py's and httpx's connection errors do not derive from OSError; matched by module and name so
    # this module imports neither library
    mod = type(exc).__module__.split(".")[0]
    name = type(exc).__name__
    return (mod == "redis" and name in ("ConnectionError", "TimeoutError")) or (
        mod in ("httpx", "httpcore") and ("Connect" in name or "Network" in name)
    )


@dataclass(frozen=True, slots=True)
class Reading(Generic[S]):
    """What the runner hands out after every attempt."""

    name: str
    sample: S | None  # the last GOOD sample (kept when a poll fails)
    sampled_at: float | None  # epoch seconds of that sample
    error: SourceError | None  # the last error, None when the last poll succeeded
    failures: int  # consecutive failures
    next_poll_at: float  # epoch seconds of the next attempt ("retrying in 4 s")

    def age_s(self, now: float) -> float | None:
        """Seconds since the last good sample, None when there never was one."""
        return None if self.sampled_at is None else max(0.0, now - self.sampled_at)

    @property
    def ok(self) -> bool:
        return self.error is None and self.sample is not None


def describe_error(exc: BaseException) -> str:
    """One line for a status bar: the exception's type when its message is empty. The message is often
    a server's words (an error reply, an HTTP reason), so it is made visible (quotas.safe), never raw."""
    text = safe(" ".join(str(exc).split()), 300)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Runner(Generic[S]):
    """Polls one collector forever; `poll_once` for a single attempt (the snapshot uses it)."""

    def __init__(
        self,
        collector: Collector[S],
        *,
        interval_s: float,
        timeout_s: float,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be positive")
        self.collector = collector
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.backoff_max_s = max(backoff_max_s, interval_s)
        self._clock = clock
        self._reading: Reading[S] = Reading(collector.name, None, None, None, 0, clock())

    @property
    def reading(self) -> Reading[S]:
        return self._reading

    def backoff_s(self, failures: int) -> float:
        """Delay after `failures` consecutive failures: interval, 2x, 4x ... capped."""
        if failures <= 0:
            return self.interval_s
        return min(self.backoff_max_s, self.interval_s * 2 ** min(failures - 1, 30))

    async def poll_once(self) -> Reading[S]:
        """One attempt with the timeout; returns the new reading and never raises (but cancellation)."""
        prev = self._reading
        try:
            sample = await asyncio.wait_for(self.collector.poll(), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            # what the cut-off poll had already found (a cluster node that does not answer, by name) is the
            # cause an operator needs; "timed out" alone would hide it
            found = getattr(self.collector, "found_before_timeout", None)
            why = found() if callable(found) else None
            cut = f"timed out after {self.timeout_s:g} s"
            error = SourceError(ErrorKind.TIMEOUT, f"{cut}: {why}" if why else cut)
        except Exception as e:  # a source's failure is data, not a crash
            error = classify(e)
        else:
            now = self._clock()
            taken = getattr(sample, "taken_at", None)
            self._reading = Reading(
                prev.name, sample, float(taken) if isinstance(taken, (int, float)) else now,
                None, 0, now + self.interval_s,
            )
            return self._reading
        failures = prev.failures + 1
        now = self._clock()
        if failures == 1 or error != prev.error:
            log.warning("collector %s failed: %s", prev.name, error)
        self._reading = Reading(
            prev.name, prev.sample, prev.sampled_at, error, failures, now + self.backoff_s(failures)
        )
        return self._reading

    async def run(self, on_reading: Callable[[Reading[S]], Awaitable[None] | object]) -> None:
        """Poll, hand out the reading, sleep until the next attempt; forever."""
        while True:
            reading = await self.poll_once()
            try:
                result = on_reading(reading)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handler of collector %s failed", reading.name)
            await asyncio.sleep(max(0.0, reading.next_poll_at - self._clock()))
