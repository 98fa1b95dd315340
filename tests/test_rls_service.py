"""`surgewatch rls` at the gRPC level: a grpcio client calls the service as Envoy would, on a real Valkey."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
import redis.asyncio as aioredis
from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.wrappers_pb2 import UInt64Value
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quotas.model import QuotaSpec
from quotas.rls.gate import Gate
from quotas.rls.server import SERVICE_NAME, Mapping, serve
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from tests.conftest import ROOT

DAY = 86400
OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT


@dataclass
class Service:
    channel: grpc.aio.Channel
    stub: rls_pb2_grpc.RateLimitServiceStub
    metrics_url: str


@pytest.fixture
async def rls(store: QuotaStore, redis_client: aioredis.Redis) -> AsyncIterator[Service]:
    """The service on any free ports (bound once: nothing to race), `free` failing open, default tier none."""
    gate = Gate(redis_client, fail_open=["free"])
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ports: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(gate, host="127.0.0.1", port=0, metrics_port=0, domain="surgewatch",
                                     mapping=Mapping(), ready=lambda g, m: ports.set_result((g, m)), stop=stop))
    async with asyncio.timeout(10):
        grpc_port, metrics_port = await ports
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        yield Service(channel, rls_pb2_grpc.RateLimitServiceStub(channel), f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        await channel.close()
        stop.set_result(None)
        async with asyncio.timeout(10):
            await task
        await gate.aclose()


def descriptor(tier: str | None, user: str | None, hits: int | None = None) -> RateLimitDescriptor:
    d = RateLimitDescriptor(entries=[RateLimitDescriptor.Entry(key="route", value="api")])
    if tier is not None:
        d.entries.add(key="tier", value=tier)
    if user is not None:
        d.entries.add(key="user", value=user)
    if hits is not None:
        d.hits_addend.CopyFrom(UInt64Value(value=hits))
    return d


async def ask(svc: Service, *descriptors: RateLimitDescriptor, domain: str = "surgewatch",
              hits_addend: int = 0) -> rls_pb2.RateLimitResponse:
    request = rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits_addend)
    return await svc.stub.ShouldRateLimit(request, timeout=5)


def headers(reply: rls_pb2.RateLimitResponse) -> dict[str, str]:
    return {h.key: h.value for h in reply.response_headers_to_add}


async def test_another_domain_is_refused_naming_it(rls: Service) -> None:
    """A request for another domain is answered INVALID_ARGUMENT, and the answer names that domain."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ask(rls, descriptor("free", "ann"), domain="images")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'images'" in (refused.value.details() or "") and "'surgewatch'" in (refused.value.details() or "")


async def test_a_user_over_quota_gets_over_limit_with_the_fields(rls: Service, store: QuotaStore,
                                                                 away_from_day_edges: float) -> None:
    """Three requests a day: the fourth is OVER_LIMIT, with limit, remaining, reset and the draft-11 fields."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    replies = [await ask(rls, descriptor("free", "ann")) for _ in range(4)]
    assert [r.overall_code for r in replies] == [OK, OK, OK, OVER]
    assert [r.statuses[0].limit_remaining for r in replies] == [2, 1, 0, 0]
    last = replies[-1].statuses[0]
    assert last.current_limit.requests_per_unit == 3
    assert last.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.DAY
    reset_s = last.duration_until_reset.seconds
    assert 0 < reset_s <= DAY
    fields = headers(replies[-1])
    assert fields["ratelimit-policy"] == '"free";q=3;w=86400'
    assert fields["ratelimit"] == f'"free";r=0;t={reset_s}'
    assert int(fields["retry-after"]) in (reset_s, reset_s + 1)  # the server's clock may be a second on
    assert fields["x-surgewatch-reason"] == "user_quota"
    assert headers(replies[0]) == {"ratelimit-policy": '"free";q=3;w=86400',
                                   "ratelimit": f'"free";r=2;t={replies[0].statuses[0].duration_until_reset.seconds}',
                                   "x-surgewatch-reason": "ok"}


async def test_several_descriptors_are_over_limit_if_any_is(rls: Service, store: QuotaStore,
                                                           away_from_day_edges: float) -> None:
    """One descriptor per tier in one request: over limit as soon as one is, each status its own."""
    await store.set("free", QuotaSpec(1, DAY), actor="t")
    await store.set("pro", QuotaSpec(5, DAY), actor="t")
    first = await ask(rls, descriptor("free", "bo"), descriptor("pro", "bo"))
    second = await ask(rls, descriptor("free", "bo"), descriptor("pro", "bo"))
    assert first.overall_code == OK and [s.code for s in first.statuses] == [OK, OK]
    assert headers(first)["ratelimit"].startswith('"free";r=0;')  # the one with the fewest left
    assert second.overall_code == OVER and [s.code for s in second.statuses] == [OVER, OK]
    assert [s.limit_remaining for s in second.statuses] == [0, 3]
    assert headers(second)["x-surgewatch-reason"] == "user_quota"


async def test_hits_addend_is_the_cost(rls: Service, store: QuotaStore, away_from_day_edges: float) -> None:
    """The request's hits_addend costs that many; a descriptor's own hits_addend wins over it."""
    await store.set("free", QuotaSpec(10, DAY), actor="t")
    assert (await ask(rls, descriptor("free", "cy"), hits_addend=4)).statuses[0].limit_remaining == 6
    assert (await ask(rls, descriptor("free", "cy", hits=5), hits_addend=4)).statuses[0].limit_remaining == 1
    refused = await ask(rls, descriptor("free", "cy"), hits_addend=2)
    assert refused.overall_code == OVER and refused.statuses[0].limit_remaining == 1  # refused: consumes nothing


async def test_unknown_and_missing_tiers_are_refused_as_unknown_tier(rls: Service) -> None:
    """A tier without a quota, a tier name that cannot exist and no tier at all: unknown_tier, no policy."""
    for d in (descriptor("platinum", "di"), descriptor("Not A Tier", "di"), descriptor(None, "di")):
        reply = await ask(rls, d)
        assert reply.overall_code == OVER
        assert headers(reply) == {"retry-after": "60", "x-surgewatch-reason": "unknown_tier"}


async def test_a_request_protobuf_cannot_read_or_of_too_many_descriptors_is_refused_as_invalid(
        rls: Service, store: QuotaStore, away_from_day_edges: float) -> None:
    """A user that is not UTF-8 (gRPC's own parse failed the call: Envoy admitted it) and 65 descriptors:
    OVER_LIMIT invalid_request; 64 descriptors are decided."""
    await store.set("free", QuotaSpec(100, DAY), actor="t")
    good = rls_pb2.RateLimitRequest(domain="surgewatch", descriptors=[descriptor("free", "PLACEHOLDER")])
    raw = good.SerializeToString().replace(b"PLACEHOLDER", b"\xffbad-bytes")  # same length: still framed
    call = rls.channel.unary_unary(f"/{SERVICE_NAME}/ShouldRateLimit", request_serializer=lambda b: b,
                                   response_deserializer=rls_pb2.RateLimitResponse.FromString)
    reply = await call(raw, timeout=5)
    assert reply.overall_code == OVER and headers(reply)["x-surgewatch-reason"] == "invalid_request"
    many = await ask(rls, *(descriptor("free", f"u{i}") for i in range(65)))
    assert many.overall_code == OVER and headers(many)["x-surgewatch-reason"] == "invalid_request"
    assert len(many.statuses) == 1
    decided = await ask(rls, *(descriptor("free", f"u{i}") for i in range(64)))
    assert decided.overall_code == OK and len(decided.statuses) == 64


async def test_health_service_says_serving(rls: Service) -> None:
    """The gRPC health service answers SERVING for the server and for the rate limit service by name."""
    stub = health_pb2_grpc.HealthStub(rls.channel)
    for name in ("", SERVICE_NAME):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_metrics_count_decisions_by_outcome(rls: Service, store: QuotaStore, away_from_day_edges: float) -> None:
    """/metrics counts each descriptor by outcome and each call's latency; outcomes never seen show 0."""
    await store.set("free", QuotaSpec(2, DAY), actor="t")
    for _ in range(3):
        await ask(rls, descriptor("free", "ed"))
    await ask(rls, descriptor("nope", "ed"))
    async with httpx.AsyncClient(timeout=5) as http:
        page = (await http.get(rls.metrics_url)).text
    assert 'surgewatch_rls_decisions_total{outcome="ok"} 2.0' in page
    assert 'surgewatch_rls_decisions_total{outcome="user_quota"} 1.0' in page
    assert 'surgewatch_rls_decisions_total{outcome="unknown_tier"} 1.0' in page
    assert 'surgewatch_rls_decisions_total{outcome="fail_open"} 0.0' in page
    assert "surgewatch_rls_request_seconds_count 4.0" in page
    assert "surgewatch_rls_redis_calls_total 4.0" in page  # one call each: nothing else was in flight
    assert "surgewatch_rls_batches_held_total 0.0" in page and "surgewatch_rls_batches_full_total 0.0" in page


def test_console_commands_and_middleware_never_import_grpc(valkey: ValkeyProcess, store: QuotaStore) -> None:
    """`surgewatch quota list`, `surgewatch --help` and `import quotas.asgi` load neither grpcio nor xds-protos."""
    code = (
        "import contextlib, io, sys\n"
        "from surgewatch import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert cli.main(['--redis', {valkey.url!r}, 'quota', 'list']) == 0\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        cli.main(['--help'])\n"
        "import quotas.asgi\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'grpc_health', 'envoy'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


async def test_a_request_without_tier_or_user_gets_the_configured_defaults(
    store: QuotaStore, redis_client: aioredis.Redis, away_from_day_edges: float
) -> None:
    """default_tier and default_user from [rls]: such requests share the default user's quota in that tier."""
    await store.set("free", QuotaSpec(2, DAY), actor="t")
    gate = Gate(redis_client, default_tier="free", default_user="anonymous")
    try:
        verdicts = [await gate.decide(None, None) for _ in range(3)]
        named = await gate.decide("free", "anonymous")
    finally:
        await gate.aclose()
    assert [(v.tier, v.outcome) for v in verdicts] == [("free", "ok"), ("free", "ok"), ("free", "user_quota")]
    assert named.outcome == "user_quota"  # the very same quota as the requests that named nobody
