"""`surgewatch record FILE`: every configured collector, the quota change feed, no UI, into a recording.

The console's own plan of sources (`surgewatch.plan`: the same collectors, options, intervals and timeouts),
each driven by a `Runner`; the quota feed as the console subscribes to it (the quota list after every (re)subscription,
the audit entries and the quota of each change). With `on_second`, once a second it hands out the
`snapshot --json` document of what it recorded up to that whole second, the same document
`replay FILE --json --at T` gives for that second (`--json`; the tests compare the two).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from collectors.runner import Collector, Reading, Runner, SourceError, classify
from collectors.samples import Source
from quotas.errors import ErrorKind
from surgewatch.plan import SourceSpec, plan, redis_connector
from surgewatch.recording.documents import document
from surgewatch.recording.writer import Recorder
from surgewatch.settings import Settings

log = logging.getLogger(__name__)


class _Live:
    """The latest readings by time, so a second's document holds exactly what was recorded up to it."""

    def __init__(self) -> None:
        self.recent: dict[Source, deque[tuple[float, Reading[Any]]]] = {}

    def add(self, source: Source, at: float, reading: Reading[Any]) -> None:
        q = self.recent.setdefault(source, deque(maxlen=64))
        q.append((at, reading))

    def at(self, t: float) -> dict[Source, Reading[Any]]:
        out: dict[Source, Reading[Any]] = {}
        for source, q in self.recent.items():
            for at, r in reversed(q):
                if at <= t:
                    out[source] = r
                    break
        return out


async def _open(connector: Any, stop: Callable[[], bool]) -> Any:
    """The client once Redis answers (a recorder started while Redis is down waits for it), None if stopped."""
    while not stop():
        try:
            return await connector.client()
        except Exception as e:  # unreachable, refused login: said once per try, then tried again
            log.warning("recorder: Redis not reachable yet (%s); retrying", e)
            await asyncio.sleep(2.0)
    return None


async def _quota_feed(settings: Settings, recorder: Recorder, connector: Any, client: Any) -> None:
    from quotas.feed import coalesced, quota_events
    from quotas.store import QuotaStore

    store = QuotaStore(client, prefix=settings.prefix, timeout_s=3.0, read_only=True)
    first = True
    try:
        # one server, a cluster or Sentinel, as the console subscribes (quotas.connect)
        # a storm of changes costs at most one re-read per tier per second, as in the console
        async for ev in coalesced(quota_events(connector.subscriber, settings.prefix)):
            try:
                if ev.kind == "disconnected":
                    kind = ev.error_kind or ErrorKind.UNREACHABLE
                    recorder.subscription(False, SourceError(kind, f"quota change feed lost: {ev.error}"))
                elif ev.kind in ("resubscribed", "reread"):
                    if ev.kind == "resubscribed":
                        recorder.subscription(True)
                    recorder.quotas_loaded(await store.list())
                    if first:
                        recorder.quota_changed(list(reversed(await store.history(None, 5))))
                        first = False
                elif ev.tier:
                    q = await store.get(ev.tier)
                    recorder.quota_changed(list(reversed(await store.history(ev.tier, count=5))), q)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                recorder.subscription(False, classify(e))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 2)


async def record(
    settings: Settings,
    recorder: Recorder,
    *,
    local: bool = True,
    stop: Callable[[], bool] = lambda: False,
    on_second: Callable[[dict[str, Any]], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Record until `stop()` is true (checked every 0.2 s) or the task is cancelled."""
    client = connector = None
    if settings.redis_url:
        # the console's client: short timeouts, one server, a cluster or Sentinel, as the console opens it
        connector = redis_connector(settings)
        client = await _open(connector, stop)
        if client is None:
            return
    live = _Live()
    tasks: list[asyncio.Task[Any]] = []
    made = [(spec, spec.make()) for spec in plan(settings, client, local=local)]

    def handler(source: Source) -> Callable[[Reading[Any]], None]:
        def on_reading(r: Reading[Any]) -> None:
            at = clock()
            live.add(source, at, r)
            recorder.reading(source, r, at=at)
        return on_reading

    async def drive(spec: SourceSpec, collector: Collector[Any]) -> None:
        if hasattr(collector, "backfill"):
            try:
                await asyncio.wait_for(collector.backfill(), spec.timeout_s * 2)
            except Exception as e:
                log.warning("backfill of %s failed: %s", spec.name, e)
        runner = Runner(collector, interval_s=spec.interval_s, timeout_s=spec.timeout_s,
                        backoff_max_s=spec.backoff_max_s, clock=clock)
        await runner.run(handler(spec.name))

    try:
        tasks = [asyncio.create_task(drive(spec, c)) for spec, c in made]
        if settings.redis_url:
            tasks.append(asyncio.create_task(_quota_feed(settings, recorder, connector, client)))
        next_second = math.floor(clock()) + 1
        while not stop():
            await asyncio.sleep(0.2)
            # a second's document once that second is over (the readings of the second are all in), and once it
            # is on disk: what was printed survives a SIGKILL that follows (the writer thread's 0.5 s may lag)
            if on_second is not None and clock() >= next_second + 0.1:
                await asyncio.to_thread(recorder.flush)
            while on_second is not None and clock() >= next_second + 0.1:
                on_second(document(next_second, live.at(next_second)))
                next_second += 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, c in made:
            with contextlib.suppress(Exception):
                await c.aclose()
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2)
