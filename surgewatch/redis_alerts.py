"""Alarms of the control plane: Redis in a named bad state, a tier whose quota is gone, traffic that stops.

Never calm while it burns: each of these is a state where the screen would otherwise look idle (zeros,
a blank tier panel) while gateways refuse every request or cannot decide at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.samples import TrafficSample
from surgewatch.alerts import Event
from surgewatch.thresholds import Thresholds

STOP_WINDOW_S = 5  # seconds of ~0 requests, after a real level, that make "traffic stopped"
LEVEL_WINDOW_S = 60
CHANGE_EXPLAINS_S = 30.0  # a quota change this recent may explain a drop: no alarm then


def redis_events(prev: TrafficSample | None, cur: TrafficSample, now: float) -> list[Event]:
    """The server's named state changing (`redis.status`), and tiers losing or regaining their quota."""
    out: list[Event] = []
    old = prev.redis.status if prev is not None else "ok"
    if cur.redis.status != old:
        if cur.redis.status == "ok":
            out.append(Event(now, "info", "redis", f"Redis is {old.replace('_', ' ')} no more: decisions work again"))
        else:
            out.append(Event(now, "crit", "redis", f"Redis {cur.redis.status}: {cur.redis.error}"))
    before = {t.tier: t.state for t in prev.tiers} if prev is not None else {}
    for t in cur.tiers:
        was = before.get(t.tier)
        if t.state == "no_quota" and was != "no_quota":
            out.append(Event(now, "crit", "no_quota", (
                f"tier {t.tier} has NO QUOTA: every gateway request for it is refused as unknown_tier; fix: "
                f"surgewatch quota set {t.tier} LIMIT/WINDOW --create, or restore (r, or quota import FILE)"
            )))
        elif was == "no_quota" and t.state != "no_quota":
            out.append(Event(now, "info", "no_quota", f"tier {t.tier} has a quota again ({t.state})"))
    return out


def _summed(t: TrafficSample, seconds: int) -> tuple[int, int]:
    """(requests over the last `seconds` complete seconds of every tier, seconds actually covered)."""
    total, covered = 0, 0
    for tier in t.tiers:
        acc, rej = tier.accepted_history[-seconds:], tier.rejected_history[-seconds:]
        total += sum(acc) + sum(rej)
        covered = max(covered, len(acc))
    return total, covered


@dataclass
class TrafficWatch:
    """Raises "traffic stopped" once when the summed request rate falls from a real level to ~0 within
    seconds, and says when it is back. Requests refused still count (they are counted by the limiter):
    only gateways that stop asking, or cannot reach Redis, make this silence."""

    stopped: bool = False

    def update(self, cur: TrafficSample, th: Thresholds, now: float, last_change_at: float) -> list[Event]:
        recent, covered = _summed(cur, STOP_WINDOW_S)
        if covered < STOP_WINDOW_S:
            return []
        before = [tier.accepted_history[-LEVEL_WINDOW_S:-STOP_WINDOW_S] for tier in cur.tiers]
        before_rej = [tier.rejected_history[-LEVEL_WINDOW_S:-STOP_WINDOW_S] for tier in cur.tiers]
        span = max((len(a) for a in before), default=0)
        level = (sum(map(sum, before)) + sum(map(sum, before_rej))) / span if span else 0.0
        if not self.stopped and recent == 0 and level >= th.traffic_stop_min_rps:
            if now - last_change_at < CHANGE_EXPLAINS_S:
                return []
            self.stopped = True
            return [Event(now, "warn", "traffic_stopped", (
                f"traffic stopped: {level:.0f} req/s over the last minute, none in the last {STOP_WINDOW_S} s "
                "(gateways down, or unable to reach Redis?)"
            ))]
        if self.stopped and recent > 0:
            self.stopped = False
            return [Event(now, "info", "traffic_stopped", f"traffic is back ({recent / STOP_WINDOW_S:.0f} req/s)")]
        return []
