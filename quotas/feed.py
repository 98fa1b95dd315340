"""A supervised subscription to the quota events channel (`Pevents`).

redis-py's async pubsub does not reconnect by itself, so `quota_events` does: on any connection error it
waits with capped exponential backoff, reconnects, subscribes again and yields a `resubscribed` event,
after which a consumer must re-read every quota (messages published while it was away are lost).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError

from quotas.errors import ErrorKind, redact
from quotas.keys import DEFAULT_PREFIX, Keys
from quotas.library import UNREACHABLE_ERRORS

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QuotaEvent:
    """One event: kind `set`, `pause`, `resume`, `expired` (a change of `tier` to `version` by `actor`),
    `resubscribed` (after every (re)connect: re-read all quotas), or `disconnected` (the link is down,
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
        return QuotaEvent(str(d["kind"]), str(d["tier"]), int(d["version"]), str(d.get("actor", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _factory(source: str | Callable[[], Any]) -> Callable[[], Any]:
    if callable(source):
        return source
    url = source
    # health checks make a silently dead link fail within seconds instead of never
    return lambda: aioredis.Redis.from_url(
        url, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=5
    )


async def quota_events(
    url_or_client_factory: str | Callable[[], Any],
    prefix: str = DEFAULT_PREFIX,
    *,
    backoff_s: float = 0.2,
    max_backoff_s: float = 5.0,
) -> AsyncGenerator[QuotaEvent, None]:
    """Yield quota events forever, reconnecting with backoff; `resubscribed` after every (re)connect.

    Pass a URL or a zero-argument factory returning a `redis.asyncio.Redis` (one server of a cluster works:
    PUBLISH reaches every node). Cancel the consuming task to stop. One `disconnected` event is yielded per
    outage (not per retry), so a console can say its change feed is down."""
    channel = Keys(prefix).events
    make = _factory(url_or_client_factory)
    delay = backoff_s
    announce = True  # the next failure starts an outage worth reporting
    while True:
        client = make()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        lost: str | None = None
        lost_kind = ErrorKind.UNREACHABLE
        try:
            async with asyncio.timeout(5):
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
        except UNREACHABLE_ERRORS as e:
            lost = redact(str(e)) or type(e).__name__
            lost_kind = ErrorKind.AUTH_FAILED if isinstance(e, AuthenticationError) else ErrorKind.UNREACHABLE
            log.warning("quota events: connection lost (%s); reconnecting in %.1f s", lost, delay)
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception:  # already broken: nothing to release
                pass
        if lost is not None and announce:
            announce = False
            yield QuotaEvent("disconnected", error=lost, error_kind=lost_kind)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, max_backoff_s)
