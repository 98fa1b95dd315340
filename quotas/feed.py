"""A supervised subscription to the quota events channel (`Pevents`).

redis-py's async pubsub does not reconnect by itself, so `quota_events` does: on any connection error it
waits with capped exponential backoff, reconnects, subscribes again and yields a `resubscribed` event,
after which a consumer must re-read every quota (messages published while it was away are lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import AuthenticationError

from quotas.errors import AuthFailed, ErrorKind, Unreachable, redact
from quotas.keys import DEFAULT_PREFIX, Keys
from quotas.library import UNREACHABLE_ERRORS
from quotas.safe import safe

log = logging.getLogger(__name__)
# a lost link, or a client that could not be opened (quotas.connect names it Unreachable or AuthFailed)
_LOST: tuple[type[BaseException], ...] = (*UNREACHABLE_ERRORS, Unreachable)


@dataclass(frozen=True, slots=True)
class QuotaEvent:
    """One event: kind `set`, `pause`, `resume`, `expired` (a change of `tier` to `version` by `actor`),
    `resubscribed` (after every (re)connect: re-read all quotas), `reread` (from `coalesced`: too many tiers
    changed at once to follow one by one, re-read all quotas), or `disconnected` (the link is down,
    `error` says why; changes made meanwhile arrive only through the re-read after `resubscribed`)."""

    kind: str
    tier: str | None = None
    version: int | None = None
    actor: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None  # with `error`: unreachable, or auth_failed


def parse_event(data: Any) -> QuotaEvent | None:
    """A channel message -> QuotaEvent; junk (someone PUBLISHing garbage) -> None."""
    try:
        d = json.loads(data.decode() if isinstance(data, bytes) else data)
        return QuotaEvent(safe(d["kind"], 40), safe(d["tier"]), int(d["version"]), safe(d.get("actor", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _factory(source: str | Callable[[], Any]) -> Callable[[], Any]:
    if callable(source):
        return source
    from quotas.connect import Connector

    # any URL form (one server, a cluster, Sentinel); health checks make a silently dead link fail
    # within seconds instead of never
    connector = Connector(source, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=5)
    return connector.subscriber


async def quota_events(
    url_or_client_factory: str | Callable[[], Any],
    prefix: str = DEFAULT_PREFIX,
    *,
    backoff_s: float = 0.2,
    max_backoff_s: float = 5.0,
) -> AsyncGenerator[QuotaEvent, None]:
    """Yield quota events forever, reconnecting with backoff; `resubscribed` after every (re)connect.

    Pass a URL or a zero-argument factory returning a `redis.asyncio.Redis` or an awaitable of one
    (`quotas.connect.Connector.subscriber`). On a cluster one node's client is enough: in Valkey and
    Redis a PUBLISH on any node reaches the subscribers of every node (the cluster bus carries it).
    Cancel the consuming task to stop. One `disconnected` event is yielded per
    outage (not per retry), so a console can say its change feed is down."""
    channel = Keys(prefix).events
    make = _factory(url_or_client_factory)
    delay = backoff_s
    announce = True  # the next failure starts an outage worth reporting
    while True:
        client: Any = None
        pubsub: Any = None
        lost: str | None = None
        lost_kind = ErrorKind.UNREACHABLE
        try:
            async with asyncio.timeout(5):
                client = make()
                if inspect.isawaitable(client):  # quotas.connect.Connector.subscriber: may connect first
                    client = await client
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(channel)
            delay = backoff_s
            announce = True
            yield QuotaEvent("resubscribed")
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None:
                    continue
                ev = parse_event(msg.get("data"))
                if ev is not None:
                    yield ev
        except _LOST as e:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # a cancel that met the connect timeout can surface as TimeoutError: stop, as asked, rather than
                # reconnect forever under a consumer that is gone (a console quitting hung in its loop's close)
                raise asyncio.CancelledError from e
            lost = redact(str(e)) or type(e).__name__
            auth = isinstance(e, (AuthenticationError, AuthFailed))
            lost_kind = ErrorKind.AUTH_FAILED if auth else ErrorKind.UNREACHABLE
            log.warning("quota events: connection lost (%s); reconnecting in %.1f s", lost, delay)
        finally:
            try:
                if pubsub is not None:
                    await pubsub.aclose()
                if client is not None:
                    await client.aclose()
            except Exception:  # already broken: nothing to release
                pass
        if lost is not None and announce:
            announce = False
            yield QuotaEvent("disconnected", error=lost, error_kind=lost_kind)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, max_backoff_s)


# ---- coalescing: a storm of change events becomes at most one re-read per tier per second ------------------

REREAD_GAP_S = 1.0  # the least time between two re-reads of one tier
MAX_PENDING_TIERS = 1024  # more tiers waiting than this: one full re-read (`reread`) instead of one per tier


class Coalescer:
    """What a consumer should re-read, and when: the first change of a tier goes through at once, later ones
    within `gap_s` are held and go through as one when the gap is over (the newest of them: a re-read shows
    the latest version anyway). `resubscribed` and `disconnected` go through at once and in order. Memory is
    bounded: with more than `max_tiers` tiers held, they are dropped for one `reread` event (re-read all)."""

    def __init__(self, *, gap_s: float = REREAD_GAP_S, max_tiers: int = MAX_PENDING_TIERS,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.gap_s = gap_s
        self.max_tiers = max_tiers
        self.clock = clock or time.monotonic
        self._sent: dict[str, float] = {}  # tier -> when its last event went through
        self._held: dict[str, QuotaEvent] = {}  # tier -> its newest held event
        self._ready: list[QuotaEvent] = []  # to go through now, in order (bounded: see offer)

    def offer(self, ev: QuotaEvent) -> None:
        """Take one event from the channel."""
        now = self.clock()
        if ev.tier is None or ev.kind in ("resubscribed", "disconnected"):
            if ev.kind == "resubscribed":  # a full re-read follows: what is held is part of it
                self._held.clear()
                self._ready = [e for e in self._ready if e.tier is None]
            if not self._ready or self._ready[-1] != ev:
                self._ready.append(ev)
            return
        last = self._sent.get(ev.tier)
        if ev.tier in self._held or (last is not None and now - last < self.gap_s):
            self._held[ev.tier] = ev
            if len(self._held) > self.max_tiers:
                self._held.clear()
                self._ready = [e for e in self._ready if e.tier is None]
                self._ready.append(QuotaEvent("reread"))
            return
        if any(e.tier == ev.tier for e in self._ready):
            return  # already going through: that re-read shows this change too
        self._ready.append(ev)
        if len(self._ready) > self.max_tiers:  # a consumer that does not take them: one full re-read
            self._ready = [*[e for e in self._ready if e.tier is None][-4:], QuotaEvent("reread")]

    def take(self) -> list[QuotaEvent]:
        """The events to act on now (the held ones whose gap is over included), in order."""
        now = self.clock()
        for tier, ev in list(self._held.items()):
            if now - self._sent.get(tier, -self.gap_s) >= self.gap_s:
                del self._held[tier]
                self._ready.append(ev)
        out, self._ready = self._ready, []
        for ev in out:
            if ev.tier is not None:
                self._sent[ev.tier] = now
        if len(self._sent) > 4 * self.max_tiers:  # forget tiers whose gap is long over
            self._sent = {t: at for t, at in self._sent.items() if now - at < self.gap_s}
        return out

    def wait_s(self) -> float | None:
        """Seconds until a held event is due (None: nothing held)."""
        if not self._held:
            return None
        now = self.clock()
        return max(0.0, min(self._sent.get(t, now) + self.gap_s - now for t in self._held))


async def coalesced(events: AsyncGenerator[QuotaEvent, None], coalescer: Coalescer | None = None,
                    ) -> AsyncGenerator[QuotaEvent, None]:
    """`events` (e.g. `quota_events(...)`) read as fast as they come, yielded coalesced (see `Coalescer`): a
    consumer that re-reads per event does at most one re-read per tier per `gap_s`, whatever the storm."""
    c = coalescer or Coalescer()
    wake = asyncio.Event()
    done: list[BaseException | None] = []

    async def pump() -> None:
        try:
            async for ev in events:
                c.offer(ev)
                wake.set()
            done.append(None)
        except Exception as e:  # handed to the consumer below
            done.append(e)
        finally:
            wake.set()

    reader = asyncio.create_task(pump())
    try:
        while True:
            wake.clear()  # before taking: an event offered while we yield sets it again
            for ev in c.take():
                yield ev
            if wake.is_set():
                continue
            if done and c.wait_s() is None:
                if done[0] is not None:
                    raise done[0]
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(c.wait_s()):  # None: until the next event
                    await wake.wait()
    finally:
        reader.cancel()
        # bounded: a reader that does not end within 5 s of its cancel is left to the loop, never waited for
        await asyncio.wait([reader], timeout=5)
        if not reader.done():
            log.warning("quota events: the change feed's reader did not stop within 5 s of its cancel")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(events.aclose(), 5)
