"""Past-tense messages: what the sources tell the UI. Posted from workers, handled on the main thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from tui.model import ReadingLike


@dataclass(eq=False)
class _Sampled(Message):
    """A collector runner produced a reading (a fresh sample, or an error with the last good one)."""

    reading: ReadingLike

    def can_replace(self, message: Message) -> bool:
        # A newer reading of the same source supersedes an unprocessed older one: never queue a backlog.
        return type(message) is type(self)


@dataclass(eq=False)
class GpusSampled(_Sampled):
    """Local GPUs (NVML)."""


@dataclass(eq=False)
class HostSampled(_Sampled):
    """Local host (psutil)."""


@dataclass(eq=False)
class FleetSampled(_Sampled):
    """Remote nodes (scrape or Prometheus API)."""


@dataclass(eq=False)
class TrafficSampled(_Sampled):
    """Per-tier traffic and quotas (Redis counters)."""


@dataclass(eq=False)
class QuotasLoaded(Message):
    """All quotas were (re-)read from the store, e.g. after a (re)subscription."""

    quotas: list[Any]


@dataclass(eq=False)
class QuotaChanged(Message):
    """A quota changed somewhere (this console, another one, the CLI); `entries` are its audit entries."""

    tier: str
    entries: list[Any]
    quota: Any | None = None


@dataclass(eq=False)
class SubscriptionChanged(Message):
    """The quota-event subscription connected, or lost its connection (`error` says why)."""

    connected: bool
    error: str | None = None
