"""The guard's tier-cap lever: how large a step of `tier_cap_rps` is, and when it is given back.

A per-user limit is a coarse lever when a tier's users each send a few requests (one unit more or less
moves the tier's admitted rate by a large share); a tier cap is a rate, so it is sized as one:
- shed: the cap is the tier's admitted rate now (its 10-s mean, or its cap when that is lower) less the
  reduction the signals ask for (their excess times the fleet's admitted rate, as for the limit lever),
  never more than `step_pct` of that rate at once, never below the policy's `cap_floor_rps`, and always
  below the cap in force. The what-if (`QuotaStore.preview`) then says what that cap would have
  refused; a cap that would have refused nothing is not a step. The what-if is the check and the
  evidence rather than the sizer: it sums the last minutes, ramp included, and a cap sized to refuse a
  share of those minutes would cut below what the fleet needs now;
- give back: the cap rises by the fleet's headroom (`guard_signals.headroom_share`: how far the load
  signals are below their release levels, a falling temperature read where it is heading
  (`Sustain.heading`), times the fleet's admitted rate), at least 1 request/s and at
  most `give_back_pct` of the cap: big steps back from a deep cut on a cool fleet, small ones near the
  edge. The step that would reach the cap in force before the guard, or (an uncapped tier) the tier's
  offered rate, is not written: the override lapses by itself.
"""

from __future__ import annotations

import math

from quotas.model import Quota, QuotaSpec
from surgewatch.guard.policy import TierRule


def label(q: Quota | QuotaSpec) -> str:
    """`20/1d`, or `20/1d cap 150/s` when the tier is capped: how the guard's messages name a quota."""
    return q.spec + (f" cap {q.tier_cap_rps}/s" if q.tier_cap_rps is not None else "")


def at_cap_floor(q: Quota, rule: TierRule) -> bool:
    return q.tier_cap_rps is not None and q.tier_cap_rps <= rule.cap_floor_rps


def shed_cap(q: Quota, rule: TierRule, admitted_rps: float, need_rps: float) -> int | None:
    """The cap of one shed step, or None when no step lowers it (already at its floor, or admitting nothing)."""
    rate = admitted_rps if q.tier_cap_rps is None else min(float(q.tier_cap_rps), admitted_rps)
    if rate < 1 or at_cap_floor(q, rule):
        return None
    largest = math.ceil(rate * (1.0 - rule.step_pct / 100.0))
    cap = max(rule.cap_floor_rps, largest, math.floor(rate - need_rps))
    below = (q.tier_cap_rps - 1) if q.tier_cap_rps is not None else math.floor(rate) - 1
    cap = min(cap, below)
    return cap if cap >= max(1, rule.cap_floor_rps) else None


def give_back_cap(q: Quota, original: QuotaSpec | None, offered_rps: float, give_back_pct: float,
                  headroom_rps: float) -> int | None:
    """The cap of one give-back step: up by the fleet's headroom (`headroom_rps`), at least 1 and at most
    `give_back_pct` of the cap; or None: the override is left to lapse (the next step would reach the cap
    before the guard, or would no longer bind the tier's offered rate)."""
    if q.tier_cap_rps is None or original is None:
        return None
    most = max(1, math.floor(q.tier_cap_rps * give_back_pct / 100.0))
    nxt = q.tier_cap_rps + min(most, max(1, math.floor(headroom_rps)))
    before = original.tier_cap_rps
    if before is not None and nxt >= before:
        return None
    if before is None and nxt >= offered_rps:
        return None
    if (original.limit, original.window_s) != (q.limit, q.window_s):
        return None  # someone else's change of the limit is not the guard's to undo step by step
    return nxt
