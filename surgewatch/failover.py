"""A Redis failover, as the console sees it: the master serving a tier is another one than before.

The traffic collector names each tier's master (`TierTraffic.master`: the cluster node owning the tier's
hash slot, or Sentinel's current master); a change between two readings is the switch an operator must
know about, whatever came between (a banner naming the silent node while it lasted).
"""

from __future__ import annotations

from collections.abc import Iterable

from collectors.samples import TierTraffic, TrafficSample
from surgewatch.alerts import Event
from surgewatch.settings import Settings


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


def subtitle(settings: Settings, masters: list[str], primaries: int, read_only: bool) -> str:
    """The console's header: the Redis it talks to (and who serves it now), the fleet's sources, read-only."""
    s = settings
    shown = f"redis {s.redis_url_shown}{header_masters(s.redis_url, masters, primaries)}"
    parts = [shown if s.redis_url else "no redis"]
    if s.nodes:
        parts.append(f"{len(s.nodes)} nodes")
    if s.prometheus:
        parts.append("prometheus")
    if read_only:
        parts.append("READ-ONLY" if not s.wall else "wall")
    return " · ".join(parts)
