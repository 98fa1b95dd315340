"""Which sources run for given settings: the one plan used by the console, `record`, `guard`, `serve` and
`snapshot`. Collectors are imported lazily so a program starts (and tests run) with any subset, and a missing
optional part never stops the rest. Textual-free: a front end maps each source to its own message."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from collectors.runner import Collector
from collectors.samples import Source
from surgewatch.settings import Settings

SCRAPE_TIMEOUT_S = 2.0  # one node's or inference server's scrape, and one Prometheus query

Factory = Callable[[], Collector[Any]]


@dataclass(frozen=True)
class SourceSpec:
    """One collector: how to build it, how often to poll it, which message carries its readings."""

    name: Source  # also the worker group
    make: Factory
    interval_s: float
    timeout_s: float
    backoff_max_s: float = 30.0


# the console's client options: short timeouts so a dead server shows as stale within seconds
CONSOLE_OPTIONS: dict[str, Any] = {
    "socket_timeout": 2.0, "socket_connect_timeout": 2.0, "health_check_interval": 5, "socket_keepalive": True,
}


def redis_client(url: str) -> Any:
    """A plain client on one server with the console's options (no cluster detection: `redis_connector`)."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, **CONSOLE_OPTIONS)


def redis_connector(settings: Settings) -> Any:
    """The console's Redis: one server, a cluster (detected, or --redis-cluster) or Sentinel, opened on
    first use by whichever worker needs it first (quotas.connect.Connector)."""
    from quotas.connect import Connector

    assert settings.redis_url
    return Connector(settings.redis_url, force_cluster=settings.redis_cluster, prefix=settings.prefix,
                     **CONSOLE_OPTIONS)


class Connected:
    """A collector built once its client is open: until then each poll tries to open it, so a Redis
    that is down at start is a failing source (the banner, retries) like one lost later."""

    def __init__(self, connector: Any, make: Callable[[Any], Collector[Any]], name: str) -> None:
        self.connector = connector
        self.make = make
        self.name = name
        self._inner: Any = None

    async def _collector(self) -> Any:
        if self._inner is None:
            self._inner = self.make(await self.connector.client())
        return self._inner

    async def backfill(self) -> Any:
        inner = await self._collector()
        return await inner.backfill()

    async def poll(self) -> Any:
        return await (await self._collector()).poll()

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


def plan(settings: Settings, client: Any | None, overrides: dict[Source, Factory] | None = None, *,
         local: bool = True) -> list[SourceSpec]:
    """The sources for these settings. `client`: a Redis client, or a `redis_connector` (opened on first
    use). `overrides` replaces a source's factory (tests: fake NVML). `local=False` leaves out this
    machine's GPUs and host (`record --no-local`)."""
    overrides = overrides or {}
    iv = settings.interval_s

    def gpu() -> Collector[Any]:
        from collectors.gpu import GpuCollector

        return GpuCollector()

    def host() -> Collector[Any]:
        from collectors.host import HostCollector

        return HostCollector()

    def fleet() -> Collector[Any]:
        from collectors.fleet import FleetCollector

        if settings.prometheus:
            from collectors.prometheus import PrometheusFleetCollector
            from collectors.prometheus_window import FleetWindow
            from surgewatch.kpis import throttled_reasons
            from surgewatch.thresholds import Thresholds

            # Prometheus' values change at its scrape interval: asked no faster than nodes are scraped,
            # and a poll waits at most 1 s for a refresh still running (skipped, not queued); a large
            # fleet is read through aggregates and the worst nodes (the console's rules for hot/throttled)
            th = Thresholds.from_mapping(settings.thresholds)
            return PrometheusFleetCollector(
                settings.prometheus, lookback_s=settings.prometheus_lookback_s,
                min_interval_s=settings.node_interval_s, wait_s=1.0,
                window=FleetWindow(hot_c=th.temp_hot_c, throttled=throttled_reasons),
            )
        return FleetCollector(list(settings.nodes), timeout_s=SCRAPE_TIMEOUT_S, min_interval_s=settings.node_interval_s)

    def traffic() -> Collector[Any]:
        from collectors.traffic import TrafficCollector
        from quotas.connect import Connector

        if isinstance(client, Connector):
            return Connected(client, lambda c: TrafficCollector(c, prefix=settings.prefix), "traffic")
        return TrafficCollector(client, prefix=settings.prefix)

    def serving() -> Collector[Any]:
        # inference servers through Prometheus when the fleet is read there (their targets are scraped by
        # it), else each --servers URL scraped like a node (collectors.serving's docstring)
        if settings.prometheus:
            from collectors.serving_prometheus import PrometheusServingCollector

            return PrometheusServingCollector(settings.prometheus, timeout_s=SCRAPE_TIMEOUT_S)
        from collectors.serving import ServingCollector

        return ServingCollector(list(settings.servers), timeout_s=SCRAPE_TIMEOUT_S,
                                min_interval_s=settings.node_interval_s)

    def spec(source: Source, make: Factory, timeout_s: float, backoff_max_s: float = 30.0) -> SourceSpec:
        return SourceSpec(source, overrides.get(source, make), iv, timeout_s, backoff_max_s)

    # nodes are scraped no faster than node_interval_s by the collector itself; polling the fleet at the
    # console's rate just picks up whichever nodes answered
    made = {Source.GPUS: spec(Source.GPUS, gpu, max(2.0, iv)), Source.HOST: spec(Source.HOST, host, max(2.0, iv)),
            Source.FLEET: spec(Source.FLEET, fleet, 3.0), Source.SERVING: spec(Source.SERVING, serving, 3.0),
            Source.TRAFFIC: spec(Source.TRAFFIC, traffic, 2.5, 8.0)}
    run = set(sources_for(local=local, nodes=settings.nodes, prometheus=settings.prometheus,
                          servers=settings.servers, redis=client is not None)) | set(overrides)
    return [made[s] for s in made if s in run and (local or s not in LOCAL)]


LOCAL = (Source.GPUS, Source.HOST)


def sources_for(*, local: bool, nodes: Sequence[str], prometheus: str | None, servers: Sequence[str],
                redis: bool) -> list[Source]:
    """Which sources run: this machine's GPUs and host (unless left out), the fleet (read from Prometheus when
    it is given, instead of scraping `--nodes`), the inference servers (`--servers`, or through Prometheus),
    per-tier traffic (a Redis). The one rule of the console, `record`, `guard`, `serve` and `snapshot`."""
    out = list(LOCAL) if local else []
    if nodes or prometheus:
        out.append(Source.FLEET)
    if servers or prometheus:
        out.append(Source.SERVING)
    if redis:
        out.append(Source.TRAFFIC)
    return out
