"""A Redis failover, as the console sees it: the master serving a tier is another one than before.

The traffic collector names each tier's master (`TierTraffic.master`: the cluster node owning the tier's
hash slot, or Sentinel's current master); a change between two readings is the switch an operator must
know about, whatever came between (a banner naming the silent node while it lasted).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from collectors.samples import TierTraffic, TrafficSample
from quotas.connect import is_cluster
from surgewatch.alerts import Event


def master_moves(prev: TrafficSample | None, cur: TrafficSample, now: float) -> list[Event]:
    """One warn event per tier whose master changed: "Redis master for tier free moved to 127.0.0.1:7814"."""
    if prev is None:
        return []
    before = {t.tier: t.master for t in prev.tiers if t.master}
    return [
        Event(now, "warn", "redis", f"Redis master for tier {t.tier} moved to {t.master} (was {before[t.tier]})")
        for t in cur.tiers
        if t.master and before.get(t.tier, t.master) != t.master
    ]


def masters(tiers: Iterable[TierTraffic]) -> list[str]:
    """The masters serving these tiers, sorted (what the header shows)."""
    return sorted({t.master for t in tiers if t.master})


def header_masters(url: str | None, masters: list[str], primaries: int = 0) -> str:
    """What the header adds after the Redis URL: Sentinel's current master, or a cluster's size."""
    if len(masters) == 1 and "+sentinel://" in (url or ""):
        return f" · master {masters[0]}"  # it moves on a failover: the header follows
    return f" · cluster of {primaries} masters" if primaries else ""


class RedisLink:
    """The console's side of its Redis link (mixed into tui.app.SurgewatchApp): the store once the client
    is open, and a failover seen in the traffic readings (events, the header's masters)."""

    def _traffic_masters(self: Any, reading: Any) -> None:
        """A failover seen in the readings: an event per tier whose master moved; the header's masters."""
        if self.connector is not None and self.connector.resolved is not None:
            self._make_store(self.connector.resolved)  # the traffic worker opened it first
        sample, prev = reading.sample, self.state.traffic
        if sample is None or sample is prev:
            return
        self._events(master_moves(prev, sample, self.clock()))
        now = masters(sample.tiers)
        client: Any = self.connector.resolved if self.connector is not None else None
        primaries = len(client.get_primaries()) if is_cluster(client) else 0
        if (now, primaries) != (self._masters, self._primaries):
            self._masters, self._primaries = now, primaries
            self.sub_title = self._default_subtitle()

    async def open_store(self: Any) -> Any:
        """The quota store, once the Redis client is open (Unreachable while it cannot be)."""
        self._make_store(await self.connector.client())
        return self.store

    def _make_store(self: Any, client: Any) -> None:
        from quotas.store import QuotaStore

        if self.store is None:
            # a --read-only or --wall console (and `serve`, which runs one) is a reader: its store never writes,
            # not even the fallback of an override that is due (the limiter or the next change writes that)
            self.client, self.store = client, QuotaStore(client, prefix=self.settings.prefix, timeout_s=3.0,
                                                         read_only=self.read_only)

    def _store_missing(self: Any, what: str) -> bool:
        """True (and says why) when there is no store to use: no Redis configured, or not connected yet."""
        if self.store is None:
            self.notify(f"No Redis configured: give --redis URL to {what}." if self.connector is None else
                        f"Not connected to Redis yet: cannot {what} now.", severity="warning")
        return self.store is None
