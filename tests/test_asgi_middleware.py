"""`quotas.asgi.QuotaMiddleware` under a real uvicorn on loopback, called with httpx, on a real Valkey."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from collectors.traffic import TrafficCollector
from quotas.asgi import SCOPE_KEY, QuotaMiddleware, Scope
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from tests.test_redis_truth import wait_until_next_second

DAY = 86400


async def image_api(scope: Scope, receive: Any, send: Any) -> None:
    """The application behind the middleware: answers 200, or records `blocked` for a prompt it refuses."""
    if scope["type"] != "http":
        return
    ticket = scope[SCOPE_KEY]
    status = 200
    if scope["path"] == "/unsafe":
        await ticket.record("blocked")
        status = 400
    body = json.dumps({"tier": ticket.tier, "user": ticket.user}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app` under uvicorn on a socket bound to any free loopback port (bound once: nothing to race)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=5) as http:
            yield http
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()


def middleware(redis_client: aioredis.Redis, **options: Any) -> QuotaMiddleware:
    return QuotaMiddleware(image_api, redis_client, fail_open=["free"], **options)


@pytest.fixture
async def http(store: QuotaStore, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    """The image API behind the middleware: tiers and users from headers, `free` failing open."""
    app = middleware(redis_client)
    try:
        async for client in serving(app):
            yield client
    finally:
        await app.aclose()


def who(tier: str | None, user: str | None) -> dict[str, str]:
    return {k: v for k, v in (("x-tier", tier), ("x-user", user)) if v is not None}


async def test_429_exactly_when_the_limiter_refuses_with_the_fields(http: httpx.AsyncClient, store: QuotaStore,
                                                                    away_from_day_edges: float) -> None:
    """3 a day per user: each user's 4th request is a 429 with a JSON body, Retry-After and the RateLimit fields."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    codes = {u: [(await http.post("/v1/images", headers=who("free", u))).status_code for _ in range(4)]
             for u in ("ann", "bo")}
    assert codes == {"ann": [200, 200, 200, 429], "bo": [200, 200, 200, 429]}
    admitted = await http.post("/v1/images", headers=who("free", "cy"))
    assert admitted.json() == {"tier": "free", "user": "cy"}
    reset_s = int(admitted.headers["ratelimit"].rpartition("t=")[2])
    assert admitted.headers["ratelimit-policy"] == '"free";q=3;w=86400'
    assert admitted.headers["ratelimit"] == f'"free";r=2;t={reset_s}'
    assert admitted.headers["x-surgewatch-reason"] == "ok" and "retry-after" not in admitted.headers
    refused = await http.post("/v1/images", headers=who("free", "ann"))
    assert refused.status_code == 429
    assert refused.headers["ratelimit-policy"] == '"free";q=3;w=86400'
    assert refused.headers["ratelimit"].startswith('"free";r=0;t=')
    assert int(refused.headers["retry-after"]) - reset_s in (-1, 0, 1)  # two clocks, whole seconds
    assert refused.headers["x-surgewatch-reason"] == "user_quota"
    assert refused.json()["error"] | {"retry_after_s": None} == {
        "type": "rate_limited", "reason": "user_quota", "tier": "free", "limit": 3, "remaining": 0,
        "retry_after_s": None}


async def test_paused_and_unknown_tiers_are_refused_by_name(http: httpx.AsyncClient, store: QuotaStore) -> None:
    """A paused tier answers 429 `paused`; a tier without a quota and a request without a tier `unknown_tier`."""
    await store.pause("pro", actor="t")
    paused = await http.post("/v1/images", headers=who("pro", "di"))
    assert (paused.status_code, paused.headers["x-surgewatch-reason"]) == (429, "paused")
    assert int(paused.headers["retry-after"]) >= 1
    for headers in (who("platinum", "di"), who(None, "di")):
        unknown = await http.post("/v1/images", headers=headers)
        assert (unknown.status_code, unknown.headers["x-surgewatch-reason"]) == (429, "unknown_tier")
        assert unknown.headers["retry-after"] == "60" and "ratelimit-policy" not in unknown.headers


async def test_redis_down_each_tier_follows_its_fail_open_policy(http: httpx.AsyncClient, store: QuotaStore,
                                                                 valkey: ValkeyProcess) -> None:
    """Redis stopped: `free` (fail open) is admitted as fail_open, `pro` refused as unavailable, both named."""
    valkey.stop()
    free = await http.post("/v1/images", headers=who("free", "ed"))
    pro = await http.post("/v1/images", headers=who("pro", "ed"))
    assert (free.status_code, free.headers["x-surgewatch-reason"]) == (200, "fail_open")
    assert (pro.status_code, pro.headers["x-surgewatch-reason"]) == (429, "unavailable")
    assert pro.headers["retry-after"] == "1"


async def test_callables_choose_tier_user_and_cost(store: QuotaStore, redis_client: aioredis.Redis,
                                                   away_from_day_edges: float) -> None:
    """The app maps an API key to tier and user itself (async callables) and charges 3 per request."""
    keys = {"sk-ann": ("pro", "ann")}

    async def tier(scope: Scope) -> str | None:
        return keys.get(dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix("Bearer "),
                        (None, None))[0]

    def user(scope: Scope) -> str | None:
        return keys.get(dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix("Bearer "),
                        (None, None))[1]

    cost: Callable[[Scope], int] = lambda scope: 3  # noqa: E731
    await store.set("pro", QuotaSpec(7, DAY), actor="t")
    app = middleware(redis_client, tier=tier, user=user, cost=cost)
    try:
        async for client in serving(app):
            bearer = {"authorization": "Bearer sk-ann", "x-tier": "free"}  # the header is not what decides
            answers = [await client.post("/v1/images", headers=bearer) for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 429]
            assert answers[0].json() == {"tier": "pro", "user": "ann"}
            assert answers[1].headers["ratelimit"].startswith('"pro";r=1;')
    finally:
        await app.aclose()


async def test_decisions_and_blocked_show_in_the_console_counters(http: httpx.AsyncClient, store: QuotaStore,
                                                                  redis_client: aioredis.Redis,
                                                                  away_from_window_edges: float) -> None:
    """200 concurrent requests and 5 the app blocked are counted exactly in the tier counters the console reads."""
    await store.set("pro", QuotaSpec(150, DAY), actor="t")
    collector = TrafficCollector(redis_client)
    await collector.backfill()
    answers = await asyncio.gather(*(http.post("/v1/images", headers=who("pro", "fay")) for _ in range(200)))
    blocked = [await http.post("/unsafe", headers=who("pro", f"u{i}")) for i in range(5)]
    assert Counter(a.status_code for a in answers) == Counter({200: 150, 429: 50})
    assert [b.status_code for b in blocked] == [400] * 5
    await wait_until_next_second(redis_client)
    (pro,) = [t for t in (await collector.poll()).tiers if t.tier == "pro"]
    assert pro.accepted_1m == 155
    assert {k: n for k, n in pro.rejected_by_reason_1m.items() if n} == {"user_quota": 50, "blocked": 5}


async def test_a_utf8_user_id_is_the_same_user_as_through_envoy_and_bytes_that_are_not_are_refused(
        http: httpx.AsyncClient, store: QuotaStore, redis_client: aioredis.Redis, away_from_day_edges: float) -> None:
    """`x-user: müller` is one user, keyed as the rate limit service keys it (UTF-8, not latin-1 read as text);
    bytes that are not UTF-8 are invalid_request, as through Envoy."""
    from quotas.limiter import Limiter

    await store.set("pro", QuotaSpec(2, DAY), actor="t")
    asgi = await http.post("/v1/images", headers=[(b"x-tier", b"pro"), (b"x-user", "müller".encode())])
    limiter = Limiter(redis_client)  # what quotas/rls decides for the id Envoy hands it
    envoy_like = await limiter.check("pro", "müller")
    await limiter.aclose()
    assert asgi.status_code == 200 and envoy_like.allowed and envoy_like.remaining == 0  # one quota, both counted
    bad = await http.post("/v1/images", headers=[(b"x-tier", b"pro"), (b"x-user", b"\xffbad")])
    assert (bad.status_code, bad.headers["x-surgewatch-reason"]) == (429, "invalid_request")
    odd_tier = await http.post("/v1/images", headers=[(b"x-tier", b"p\xffro"), (b"x-user", b"ann")])
    assert odd_tier.status_code == 429 and odd_tier.json()["error"]["tier"] == "p\\udcffro"  # shown, never raw
