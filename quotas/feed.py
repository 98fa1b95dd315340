"""A supervised subscription to the quota events channel (`Pevents`).

redis-py's async pubsub does not reconnect by itself, so `quota_events` does: on any connection error it
waits with capped exponential backoff, reconnects, subscribes again and yields a `resubscribed` event,
after which a consumer must re-read every quota (messages published while it was away are lost).
"""

from __future__ import annotations

import asyncio
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
