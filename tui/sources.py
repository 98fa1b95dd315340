"""Which collectors the console runs, built from the settings. Collectors are imported lazily so the
console starts (and tests run) with any subset, and a missing optional part never stops the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collectors.config import Settings
from collectors.runner import Collector
from collectors.samples import Source
from tui.messages import SAMPLED, _Sampled

Factory = Callable[[], Collector[Any]]


@dataclass(frozen=True)
class SourceSpec:
    """One collector: how to build it, how often to poll it, which message carries its readings."""

    name: Source  # also the worker group
    message: type[_Sampled]
    make: Factory
    interval_s: float
    timeout_s: float
    backoff_max_s: float = 30.0


def redis_client(url: str) -> Any:
    """The console's one Redis client: short timeouts so a dead server shows as stale within seconds."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(
        url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=5, socket_keepalive=True
    )


def plan(settings: Settings, client: Any | None, overrides: dict[Source, Factory] | None = None) -> list[SourceSpec]:
    """The sources for these settings. `overrides` replaces a source's factory (tests: fake NVML)."""
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

            # Prometheus' values change at its scrape interval: asked no faster than nodes are scraped,
            # and a poll waits at most 1 s for a refresh still running (skipped, not queued)
            return PrometheusFleetCollector(
                settings.prometheus, lookback_s=settings.prometheus_lookback_s,
                min_interval_s=settings.node_interval_s, wait_s=1.0,
            )
        return FleetCollector(list(settings.nodes), timeout_s=2.0, min_interval_s=settings.node_interval_s)

    def traffic() -> Collector[Any]:
        from collectors.traffic import TrafficCollector

        return TrafficCollector(client, prefix=settings.prefix)

    def spec(source: Source, make: Factory, timeout_s: float, backoff_max_s: float = 30.0) -> SourceSpec:
        return SourceSpec(source, SAMPLED[source], overrides.get(source, make), iv, timeout_s, backoff_max_s)

    specs = [spec(Source.GPUS, gpu, max(2.0, iv)), spec(Source.HOST, host, max(2.0, iv))]
    if settings.nodes or settings.prometheus or Source.FLEET in overrides:
        # nodes are scraped no faster than node_interval_s by the collector itself; polling it at the
        # console's rate just picks up whichever nodes answered
        specs.append(spec(Source.FLEET, fleet, 3.0))
    if client is not None or Source.TRAFFIC in overrides:
        specs.append(spec(Source.TRAFFIC, traffic, 2.5, 8.0))
    return specs
