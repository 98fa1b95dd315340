"""`QuotaMiddleware`: the live quotas enforced in a Python front end (Starlette, FastAPI, any ASGI app).

    from quotas.asgi import QuotaMiddleware
    app = QuotaMiddleware(app, redis_client, fail_open=["free"], default_tier="free")

Per HTTP request: tier, user and cost from the `x-tier`, `x-user` and `x-cost` headers, or from callables the
application passes (`tier=lambda scope: ...`, sync or async; they see the ASGI scope, e.g. to map an API key).
The decision is the gate's (quotas/rls/gate.py), the same as `surgewatch rls` makes for Envoy: refused ->
429 with a JSON body, Retry-After and the RateLimit fields (quotas/rls/headers.py), never reaching the app;
admitted -> the app answers, with the same fields added. The app finds the decision in
`scope["surgewatch"]` (a `Ticket`) and records what it ended itself: `await ticket.record("blocked")`
(its content filter) or `"error"`, counted in the tier's counters like any gateway's.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from dataclasses import dataclass
from typing import Any

from quotas.keys import DEFAULT_PREFIX
from quotas.rls.gate import Gate, Verdict

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
FromScope = Callable[[Scope], Any]  # -> str | None (tier, user) or int | None (cost); may be async
SCOPE_KEY = "surgewatch"


@dataclass(frozen=True, slots=True)
class Ticket:
    """What the app sees of its request's decision, and how it records the outcome it ended itself."""

    tier: str
    user: str | None
    verdict: Verdict
    gate: Gate

    async def record(self, outcome: str, count: int = 1) -> None:
        """`blocked` or `error`: counted in the tier's per-second counters (Limiter.record)."""
        await self.gate.record(self.tier, outcome, count)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            # UTF-8, as Envoy hands a header to the rate limit service: one id is one user on both front ends.
            # Bytes that are not UTF-8 become lone surrogates, which no tier or user id accepts (invalid_request)
            return bytes(value).decode("utf-8", errors="surrogateescape")
    return None


class QuotaMiddleware:
    def __init__(self, app: ASGIApp, client: Any, *, prefix: str = DEFAULT_PREFIX,
                 fail_open: bool | Collection[str] = False, default_tier: str | None = None,
                 default_user: str = "anonymous", tier: FromScope | None = None, user: FromScope | None = None,
                 cost: FromScope | None = None, timeout_s: float = 1.0) -> None:
        """`client`: a redis.asyncio client. `fail_open`: True, or the tiers admitted while Redis cannot decide.
        `tier`/`user`/`cost`: callables of the scope, instead of the x-tier / x-user / x-cost headers."""
        self.app = app
        self.gate = Gate(client, prefix=prefix, fail_open=fail_open, default_tier=default_tier,
                         default_user=default_user, timeout_s=timeout_s)
        self._tier = tier or (lambda s: _header(s, b"x-tier"))
        self._user = user or (lambda s: _header(s, b"x-user"))
        self._cost = cost or (lambda s: _header(s, b"x-cost"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan, websocket: not requests to decide
            await self.app(scope, receive, send)
            return
        tier, user = await _call(self._tier, scope), await _call(self._user, scope)
        raw_cost = await _call(self._cost, scope)
        try:
            cost = 1 if raw_cost is None else int(raw_cost)
        except ValueError:
            cost = 0  # the gate refuses it as invalid_request
        verdict = await self.gate.decide(tier, user, cost)
        if not verdict.allowed:
            await _refuse(verdict, send)
            return
        scope[SCOPE_KEY] = Ticket(verdict.tier, user, verdict, self.gate)
        added = [(k.encode(), v.encode()) for k, v in verdict.headers]

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_fields)

    async def aclose(self) -> None:
        """Give the limiters' held connections back (the client stays open)."""
        await self.gate.aclose()


async def _call(fn: FromScope, scope: Scope) -> Any:
    value = fn(scope)
    return await value if inspect.isawaitable(value) else value


async def _refuse(verdict: Verdict, send: Send) -> None:
    d = verdict.decision
    body = json.dumps({"error": {"type": "rate_limited", "reason": verdict.outcome, "tier": verdict.tier,
                                 "limit": d.limit, "remaining": max(0, d.remaining),
                                 "retry_after_s": d.retry_after_s}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((k.encode(), v.encode()) for k, v in verdict.headers)]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
