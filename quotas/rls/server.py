"""`surgewatch rls`: Envoy's rate limit service (envoy.service.ratelimit.v3.RateLimitService), deciding with
the live quotas through the gate (quotas/rls/gate.py), plus the gRPC health service and a /metrics page.

What Envoy sends and what it gets (one RateLimitRequest per HTTP request, see docs/envoy-rls.yaml):
- `domain` must be this service's (default `surgewatch`); another is answered INVALID_ARGUMENT naming both,
  and Envoy's `failure_mode_deny` then decides the request.
- Each descriptor is one decision: the entry whose key is `tier_key` names the tier, `user_key` the user;
  other entries (Envoy's generic_key) are ignored. Cost: the descriptor's `hits_addend`, else the request's,
  else 1. Several descriptors are decided concurrently; the request is over limit if any of them is.
- Per descriptor: OK / OVER_LIMIT, `limit_remaining`, `duration_until_reset` (when the window is known),
  `current_limit` (when the window is one second, minute, hour, day or week: the only units the API has).
- `response_headers_to_add`: the header fields of quotas/rls/headers.py for the deciding descriptor (the
  first refused one, else the one with the fewest requests left). Envoy adds them to the 429 it answers,
  or to the upstream's response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from quotas.rls.gate import Gate, Verdict

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.ratelimit.v3.RateLimitService"
OUTCOMES = ("ok", "shadow", "user_quota", "tier_cap", "paused", "unknown_tier", "fail_open", "unavailable",
            "invalid_request", "bad_domain")
_UNITS = {1: rls_pb2.RateLimitResponse.RateLimit.SECOND, 60: rls_pb2.RateLimitResponse.RateLimit.MINUTE,
          3600: rls_pb2.RateLimitResponse.RateLimit.HOUR, 86400: rls_pb2.RateLimitResponse.RateLimit.DAY,
          604800: rls_pb2.RateLimitResponse.RateLimit.WEEK}
_OK, _OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT
# Envoy sends one descriptor per matching rate_limits action: a handful. One call of tens of thousands would
# hold every other caller past Envoy's timeout (its failure mode then decides, by default: admitted)
MAX_DESCRIPTORS = 64


def parse_request(data: bytes) -> rls_pb2.RateLimitRequest | None:
    """A request as sent, or None when protobuf refuses it: a header value that is not UTF-8 makes a descriptor
    string protobuf cannot read. gRPC's own parse would answer UNKNOWN, and Envoy would admit the request
    uncounted (failure_mode_deny false): here it is refused as invalid_request, like any malformed id."""
    try:
        return rls_pb2.RateLimitRequest.FromString(data)
    except DecodeError:
        return None


class Metrics:
    """The service's own counters, on a registry of its own (not the process-wide default)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter("surgewatch_rls_decisions", "Descriptors decided, by outcome", ["outcome"],
                                 registry=self.registry)
        self.latency = Histogram("surgewatch_rls_request_seconds", "Time to answer one ShouldRateLimit call",
                                 registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0))
        self._by_outcome = {o: self.decisions.labels(outcome=o) for o in OUTCOMES}  # every outcome shown, at 0

    def watch(self, gate: Gate) -> None:
        """Also show how the gate's decisions went to Redis (read at scrape time: nothing per decision)."""
        self.registry.register(_BatchCollector(gate))

    def count(self, outcome: str) -> None:
        self._by_outcome[outcome].inc()

    def page(self) -> bytes:
        return generate_latest(self.registry)


class _BatchCollector(Collector):
    """Round trips and held batches of the gate's limiters: decisions / calls is the batching achieved."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def collect(self) -> Any:
        limiters = self.gate.limiters()
        for name, attr, text in (
            ("surgewatch_rls_redis_calls", "calls_sent", "sw_check_many calls sent to Redis for decisions"),
            ("surgewatch_rls_batches_held", "batches_held", "Batches of one tier's checks held open (batch_window_ms)"),
            ("surgewatch_rls_batches_full", "batches_full", "Held batches sent early: batch_limit checks waited"),
        ):
            yield CounterMetricFamily(name, text, value=sum(getattr(lim, attr) for lim in limiters))


@dataclass(frozen=True, slots=True)
class Mapping:
    """Which descriptor entries name the tier and the user (the config file's [rls] table)."""

    tier_key: str = "tier"
    user_key: str = "user"


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, gate: Gate, *, domain: str, mapping: Mapping, metrics: Metrics) -> None:
        self.gate = gate
        self.domain = domain
        self.mapping = mapping
        self.metrics = metrics

    async def ShouldRateLimit(  # the gRPC method's name
        self, request: rls_pb2.RateLimitRequest | None, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        start = time.perf_counter()
        try:
            if request is None or len(request.descriptors) > MAX_DESCRIPTORS:  # see parse_request, MAX_DESCRIPTORS
                self.metrics.count("invalid_request")
                return self._answer([self.gate.invalid()])
            if request.domain != self.domain:
                self.metrics.count("bad_domain")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"unknown domain {request.domain[:64]!r}: this service answers {self.domain!r}")
            cost = request.hits_addend or 1
            if len(request.descriptors) == 1:  # Envoy's usual request: no task to gather
                verdicts = [await self._decide(request.descriptors[0], cost)]
            else:
                verdicts = list(await asyncio.gather(*(self._decide(d, cost) for d in request.descriptors)))
            for v in verdicts:
                self.metrics.count(v.outcome)
            return self._answer(verdicts)
        finally:
            self.metrics.latency.observe(time.perf_counter() - start)

    async def _decide(self, descriptor: RateLimitDescriptor, cost: int) -> Verdict:
        tier = user = None
        for entry in descriptor.entries:
            if entry.key == self.mapping.tier_key:
                tier = entry.value
            elif entry.key == self.mapping.user_key:
                user = entry.value
        if descriptor.HasField("hits_addend"):
            cost = descriptor.hits_addend.value or cost
        return await self.gate.decide(tier, user, cost)

    @staticmethod
    def _answer(verdicts: list[Verdict]) -> rls_pb2.RateLimitResponse:
        reply = rls_pb2.RateLimitResponse(overall_code=_OK)
        for v in verdicts:
            status = reply.statuses.add(code=_OK if v.allowed else _OVER, limit_remaining=max(0, v.decision.remaining))
            if v.reset_s is not None:
                status.duration_until_reset.CopyFrom(Duration(seconds=v.reset_s))
            unit = _UNITS.get(v.window_s or 0)
            if unit is not None and v.decision.limit is not None:
                status.current_limit.CopyFrom(rls_pb2.RateLimitResponse.RateLimit(
                    name=v.tier, requests_per_unit=v.decision.limit, unit=unit))
        if not verdicts:
            return reply
        refused = [v for v in verdicts if not v.allowed]
        if refused:
            reply.overall_code = _OVER
        deciding = refused[0] if refused else min(verdicts, key=lambda v: v.decision.remaining)
        for name, value in deciding.headers:
            reply.response_headers_to_add.add(key=name, value=value)
        return reply


async def metrics_site(metrics: Metrics, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve /metrics on host:port (0: any free port); returns the runner and the bound port."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(body=metrics.page(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])  # the port bound, when asked for 0


async def serve(gate: Gate, *, host: str, port: int, metrics_port: int, domain: str, mapping: Mapping,
                ready: Callable[[int, int], None], stop: Awaitable[object]) -> None:
    """Run the service until `stop` completes; `ready(grpc_port, metrics_port)` once both listen.
    OSError when a port cannot be bound."""
    metrics = Metrics()
    metrics.watch(gate)
    # so_reuseport 0: grpc sets SO_REUSEPORT by default, and a second service would then share a port silently
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    service = RateLimitService(gate, domain=domain, mapping=mapping, metrics=metrics)
    should = grpc.unary_unary_rpc_method_handler(  # rls_pb2_grpc's registration, with a parse that never raises
        service.ShouldRateLimit, request_deserializer=parse_request,
        response_serializer=rls_pb2.RateLimitResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"ShouldRateLimit": should}),))
    health_service = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:  # grpcio raises this, not OSError, for a port in use
        raise OSError(f"cannot listen on {host}:{port}: {e}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    runner, metrics_bound = await metrics_site(metrics, host, metrics_port)
    try:
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
        ready(bound, metrics_bound)
        await stop
        for name in ("", SERVICE_NAME):  # a health-checking Envoy stops sending before the port closes
            await health_service.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        await server.stop(grace=1.0)
        await runner.cleanup()
