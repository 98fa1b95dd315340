"""The what-if behind the console's quota editor: refusals a new quota would have caused, from counters.

The limiter counts admitted requests per minute by their rank in the user's window (exact up to 16,
then power-of-two buckets: field b holds ranks in (b/2, b]; rank 1 is not stored, it is the minute's
accepted requests less the other buckets) and accepted requests per second. Under a
new limit L the requests ranked above L are the ones it would have refused (within a bucket, spread
evenly over the ranks that could be admitted: none ranks above the highest limit enforced in the period,
so the current quota itself refuses nothing). A tier cap C refuses what exceeds C in each second,
counted after the user-limit refusals.
Ranks belong to the current window length: a preview that changes the window is an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quotas.keys import RANK_EXACT_MAX
from quotas.model import QuotaSpec


@dataclass(frozen=True, slots=True)
class Impact:
    """Admitted requests in the period, and how many of them the previewed quota would have refused."""

    total_admitted: int
    would_refuse_user: int
    would_refuse_cap: int
    would_refuse: int


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def refused_above(limit: int, ranks: dict[int, int], ceiling: int | None = None) -> float:
    """Requests ranked above `limit`, from rank-bucket counts; `ceiling`: no admitted request ranks above it
    (the highest limit enforced while they were admitted), None when unknown (shadow mode admits any rank)."""
    total = 0.0
    for b, n in ranks.items():
        if b <= RANK_EXACT_MAX:
            total += n if b > limit else 0
        else:
            lo = b // 2  # bucket b holds ranks lo+1 .. b, or lo+1 .. ceiling when that is lower
            hi = b if ceiling is None else max(lo + 1, min(b, ceiling))
            if limit <= lo:
                total += n
            elif limit < hi:
                total += n * (hi - limit) / (hi - lo)
    return total


def impact_from(
    spec: QuotaSpec, rank_hashes: list[dict[Any, Any]], counter_hashes: list[dict[Any, Any]],
    ceiling: int | None = None,
) -> Impact:
    """Combine the rank and per-second counter hashes of the period into an Impact for `spec`; `ceiling` as
    in `refused_above`."""
    ranks: dict[int, int] = {}
    for h in rank_hashes:
        for k, v in h.items():
            ks, vs = _s(k), _s(v)
            # rank 1 is not stored (the limiter saves that write per new user): derived below
            if ks.isdigit() and ks != "1" and vs.lstrip("-").isdigit():
                ranks[int(ks)] = ranks.get(int(ks), 0) + int(vs)
    total = 0
    for h in counter_hashes:
        for k, v in h.items():
            if _s(k).endswith(":accepted") and _s(v).isdigit():
                total += int(_s(v))
    # every admitted request is counted once as accepted and once by rank: rank 1 is what is left
    ranks[1] = max(0, total - sum(ranks.values()))
    total = sum(ranks.values())
    if spec.paused:
        return Impact(total, total, 0, total)
    user = min(total, round(refused_above(spec.limit, ranks, ceiling)))
    cap = 0
    if spec.tier_cap_rps is not None and total:
        keep = 1.0 - user / total  # the share of each second the user limit lets through
        for h in counter_hashes:
            for k, v in h.items():
                ks = _s(k)
                if ks.endswith(":accepted") and _s(v).isdigit():
                    cap += max(0, round(int(_s(v)) * keep) - spec.tier_cap_rps)
    cap = min(cap, total - user)
    return Impact(total, user, cap, user + cap)
