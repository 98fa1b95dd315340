"""Past-tense messages: what the sources tell the UI. Posted from workers, handled on the main thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from textual.message import Message

from collectors.runner import Reading, SourceError
from collectors.samples import FleetSample, GpusSample, HostSample, Source, TrafficSample
from collectors.serving_samples import ServingSample
from quotas.model import Quota

if TYPE_CHECKING:
    from quotas.store import AuditEntry


@dataclass(eq=False)
class _Sampled(Message):
    """A collector runner produced a reading (a fresh sample, or an error with the last good one)."""

    source: ClassVar[Source]
    reading: Reading[Any]

    def can_replace(self, message: Message) -> bool:
        # A newer reading of the same source supersedes an unprocessed older one: never queue a backlog.
        return type(message) is type(self)


@dataclass(eq=False)
class GpusSampled(_Sampled):
    """Local GPUs (NVML)."""

    source = Source.GPUS
    reading: Reading[GpusSample]


@dataclass(eq=False)
class HostSampled(_Sampled):
    """Local host (psutil)."""

    source = Source.HOST
    reading: Reading[HostSample]


@dataclass(eq=False)
class FleetSampled(_Sampled):
    """Remote nodes (scrape or Prometheus API)."""

    source = Source.FLEET
    reading: Reading[FleetSample]


@dataclass(eq=False)
class TrafficSampled(_Sampled):
    """Per-tier traffic and quotas (Redis counters)."""

    source = Source.TRAFFIC
    reading: Reading[TrafficSample]


@dataclass(eq=False)
class ServingSampled(_Sampled):
    """Inference servers' queues, latency and errors (scrape or Prometheus API)."""

    source = Source.SERVING
    reading: Reading[ServingSample]


SAMPLED: dict[Source, type[_Sampled]] = {
    m.source: m for m in (GpusSampled, HostSampled, FleetSampled, TrafficSampled, ServingSampled)
}


@dataclass(eq=False)
class QuotasLoaded(Message):
    """All quotas were (re-)read from the store, e.g. after a (re)subscription."""

    quotas: list[Quota]


@dataclass(eq=False)
class QuotaChanged(Message):
    """A quota changed somewhere (this console, another one, the CLI); `entries` are its audit entries."""

    tier: str
    entries: list[AuditEntry]
    quota: Quota | None = None


@dataclass(eq=False)
class QuotasRestored(Message):
    """A console restore ran: one outcome per tier (quotas.backup.Outcome), or the error that stopped it."""

    outcomes: list[Any]
    error: SourceError | None = None


@dataclass(eq=False)
class SubscriptionChanged(Message):
    """The quota-event subscription connected, or lost its connection (`error` says why)."""

    connected: bool
    error: SourceError | None = None
