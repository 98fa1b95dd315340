"""One sweep loop for scraped targets (GPU nodes, inference servers): when each is read, and what a failure does.

A target is never scraped faster than its own `interval_s`; each scrape is its own task, so a slow or
hanging server never delays the others: a sweep waits at most `wait_s` for the scrapes it started, and a
slower one lands in a later sweep. A concurrency bound and a per-target timeout (collectors.scrape.
PageFetcher) hold for all; the timeout starts when a scrape gets its slot, so waiting for one is never
called a timeout. Hanging servers hold their slots for the whole timeout: a target whose last scrape
failed starts after the others, so the servers that answer are not queued behind them. A one-shot read
(`snapshot`) gives each sweep a deadline and then `give_up`: a target it never read is named so.
A page identical to the target's previous one (same length and hash) is not parsed again: the previous
parse is handed back (most scrapes of dcgm-exporter, which refreshes every 30 s).
A scrape that fails leaves the target's last sample in place, marked down with the named reason
(collectors.scrape.scrape_error), and the collector decides what else the failure means.

The collectors (collectors.fleet, collectors.serving) keep only what is their own: how a page is
parsed and what a parsed page or a failure makes of their sample.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from collectors.nodes import redact_url
from collectors.scrape import PageFetcher, scrape_error
from quotas.errors import redact
from quotas.safe import safe


class _Sample(Protocol):
    """What a down target's sample keeps: NodeSample and ReplicaSample both have these fields."""

    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def checked_at(self) -> float: ...


P = TypeVar("P")  # a parsed page (immutable: handed back for an identical page)
S = TypeVar("S", bound=_Sample)  # a target's sample (a frozen dataclass)


def shown_url(url: str) -> str:
    """A target's URL as it is shown: no credentials, made visible where it enters (quotas.safe)."""
    return safe(redact_url(url) or url)


def page_identity(body: bytes) -> tuple[int, int]:
    """What tells a page from the same target's previous one: its length and Python's 64-bit hash of it
    (SipHash). Two different pages of one server taken as one by chance: 2**-64 a scrape; a server that
    forged a collision would only hide a change of its own figures, which it controls anyway. A fifth of
    blake2b's CPU on a 21 KB vLLM page (3 against 16 us), and this runs on every scrape."""
    return len(body), hash(body)


def went_down(sample: S, error: str, checked_at: float) -> S:
    """The last sample, kept with its figures and their time, now down for `error`."""
    return replace(sample, status="down", error=error, latency_ms=None, checked_at=checked_at)  # type: ignore[type-var]


@dataclass(eq=False)
class Target(Generic[P, S]):
    """One scraped URL: its schedule, its scrape in flight, its last page and its sample."""

    url: str
    shown: str
    interval_s: float
    sample: S
    task: asyncio.Task[None] | None = None
    last_try: float = -math.inf
    page_digest: tuple[int, int] | None = None  # page_identity of the last page parsed
    page: P | None = None


class Sweeper(Generic[P, S]):
    """Scrapes `targets` on their schedules through one PageFetcher.

    `parse(target, body)` turns a new page into P (raising PageError for text that is not Prometheus);
    `took(target, page, latency_ms)` returns the target's new sample for a page read (`page` is the
    previous parse's object when the page did not change); `failed(target, error)` the new sample for
    a failed scrape (by default went_down)."""

    def __init__(
        self,
        targets: Sequence[Target[P, S]],
        *,
        parse: Callable[[Target[P, S], bytes], P],
        took: Callable[[Target[P, S], P, float], S],
        failed: Callable[[Target[P, S], str], S] | None = None,
        timeout_s: float,
        concurrency: int,
        wait_s: float | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = list(targets)
        self._first = [t.sample for t in self.targets]  # a target still holding its first sample was never read
        self.wait_s = wait_s
        self._parse, self._took = parse, took
        self._failed = failed or (lambda t, error: went_down(t.sample, error, clock()))
        self._clock = clock
        # kept alive past each target's next scrape, which comes interval_s later
        slowest_s = max((t.interval_s for t in self.targets), default=0.0)
        self.fetcher = PageFetcher(timeout_s, concurrency, keepalive_s=max(30.0, 3 * slowest_s))
        self._sem = asyncio.Semaphore(max(1, concurrency))

    async def sweep(self, deadline: float | None = None) -> None:
        """Starts the scrapes that are due (those of targets that are down last: see the module's docstring) and
        waits at most wait_s for those in flight, and never past `deadline` (the event loop's clock) if given."""
        now = self._clock()
        due = [t for t in self.targets if t.task is None and now - t.last_try >= t.interval_s]
        # the slots are taken in the order the tasks start (asyncio's semaphore is first come, first served)
        for t in [t for t in due if t.sample.status != "down"] + [t for t in due if t.sample.status == "down"]:
            t.last_try = now
            t.task = asyncio.create_task(self._scrape(t))
        pending = [t.task for t in self.targets if t.task is not None]
        wait_s = self.wait_s
        if deadline is not None:
            left_s = max(0.0, deadline - asyncio.get_running_loop().time())
            wait_s = left_s if wait_s is None else min(wait_s, left_s)
        if pending:
            await asyncio.wait(pending, timeout=wait_s)

    async def give_up(self, error: str) -> None:
        """Ends a one-shot read at its deadline: the scrapes still waiting for a slot or fetching are cancelled; a
        target never read is down for `error`, one read before keeps that reading (up, or down and why)."""
        tasks = [t.task for t in self.targets if t.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for t, first in zip(self.targets, self._first, strict=True):
            if t.sample is first:
                t.sample = self._failed(t, error)

    async def _scrape(self, t: Target[P, S]) -> None:
        try:
            async with self._sem:
                t0 = time.perf_counter()
                try:
                    body = await self.fetcher.fetch(t.url)
                    latency_ms = (time.perf_counter() - t0) * 1000
                    digest = page_identity(body)
                    if digest == t.page_digest and t.page is not None:
                        page = t.page  # same page, same parse: pages are immutable
                    else:
                        page = self._parse(t, body)
                        t.page_digest, t.page = digest, page
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    # an error's text may quote the URL: never its credentials
                    t.sample = self._failed(t, redact(scrape_error(e, self.fetcher.timeout_s)))
                    return
                t.sample = self._took(t, page, round(latency_ms, 2))
        finally:
            t.task = None

    async def aclose(self) -> None:
        """Cancels the scrapes in flight and closes the fetcher's connections."""
        tasks = [t.task for t in self.targets if t.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.fetcher.aclose()
