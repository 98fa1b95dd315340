"""Tier names gateways ask for that have no quota (a misspelt `fre`), from the limiter's `Punknown:B` sorted sets.

The library counts every unknown_tier refusal by name in a sorted set per 10-second bucket, keeping the names
counted most (quotas/keys.py); the traffic poll reads the buckets of the last minute in its own round trip and
this turns them into `UnknownTier`s: the refusals of the minute, and the rate of the last complete bucket.
"""

from __future__ import annotations

from typing import Any

from collectors.samples import UnknownTier
from quotas.keys import UNKNOWN_BUCKET_S, UNKNOWN_KEEP


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _n(v: Any) -> int:
    try:
        return max(0, int(float(v)))
    except (TypeError, ValueError):
        return 0  # junk in a score counts as nothing


def unknown_tiers(buckets: dict[int, Any], last: int, quoted: set[str]) -> tuple[UnknownTier, ...]:
    """`buckets`: bucket -> ZRANGE ... WITHSCORES reply (or the error it got); `last`: the server's last complete
    second; `quoted`: tiers that have a quota now (no longer unknown). Most refused first, at most UNKNOWN_KEEP."""
    rate: dict[str, float] = {}
    minute: dict[str, int] = {}
    complete = (last + 1) // UNKNOWN_BUCKET_S - 1  # the newest bucket whose every second is over
    for b, reply in buckets.items():
        if not isinstance(reply, list) or (b + 1) * UNKNOWN_BUCKET_S <= last - 59:
            continue  # an ACL user without ZRANGE (an error), or a bucket older than the minute
        for pair in reply:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                continue
            name = _s(pair[0])
            if name in quoted:
                continue
            minute[name] = minute.get(name, 0) + _n(pair[1])
            if b == complete:
                rate[name] = _n(pair[1]) / UNKNOWN_BUCKET_S
    ranked = sorted(minute, key=lambda n: (-minute[n], n))[:UNKNOWN_KEEP]
    return tuple(UnknownTier(n, rate.get(n, 0.0), minute[n]) for n in ranked)
