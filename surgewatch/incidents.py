"""Ongoing conditions as incidents: one line that updates in place while it lasts, logged when it ends.

Throttling comes in waves across a hot fleet: announcing every GPU that starts (or every wave) flushes a
node down, an XID or a quota change out of the events panel within a minute. The fleet's throttling is
one incident instead: what, how many GPUs and nodes now and at its peak, since when. Its events carry
`incident` (the same id for every update) and `ongoing`; the console keeps one entry per incident and
shows ongoing ones pinned above the log (tui/widgets/events_log.py).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass

from surgewatch.alerts import Event, Severity
from surgewatch.kpis import GpuRow, format_age, is_throttled

END_QUIET_S = 30.0  # no GPU throttling for this long ends the incident: a fleet flapping at the cap is one story
HARD_REASONS = ("thermal", "hw")  # a reason naming one of these is the hardware protecting itself: crit


def clock_text(at: float) -> str:
    """`15:22:41Z`: the events panel's time format (UTC)."""
    return time.strftime("%H:%M:%SZ", time.gmtime(at))


def reason_counts(rows: Iterable[GpuRow]) -> str:
    """`power_cap 70, thermal 43`: each reason with its GPUs, most first."""
    counts: dict[str, int] = {}
    for row in rows:
        for r in row.gpu.throttle:
            counts[r] = counts.get(r, 0) + 1
    return ", ".join(f"{r} {n}" for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class ThrottleIncident:
    """The fleet's throttling: opened by the first GPU that throttles, ended END_QUIET_S after the last.

    `update(rows, now)` is called on every GPU reading; it returns an Event only when what the line says
    changes (counts, reasons, peak), so an unchanged fleet makes no event at all."""

    seq: int = 0
    opened_at: float | None = None
    last_seen_at: float = 0.0
    peak: int = 0
    peak_nodes: int = 0
    hard: bool = False
    reasons_seen: tuple[str, ...] = ()
    _shown: str = ""

    @property
    def id(self) -> str:
        return f"throttle-{self.seq}"

    def update(self, rows: Iterable[GpuRow], now: float) -> list[Event]:
        live = [r for r in rows if not r.placeholder]
        throttled = [r for r in live if not r.stale and is_throttled(r.gpu)]
        if throttled:
            if self.opened_at is None:
                self.seq += 1
                self.opened_at, self.peak, self.peak_nodes, self.hard, self.reasons_seen = now, 0, 0, False, ()
            self.last_seen_at = now
            nodes = len({r.node for r in throttled})
            self.peak = max(self.peak, len(throttled))
            self.peak_nodes = max(self.peak_nodes, nodes)
            self.hard = self.hard or any(h in r for row in throttled for r in row.gpu.throttle for h in HARD_REASONS)
            seen = {r for row in throttled for r in row.gpu.throttle}
            self.reasons_seen = tuple(sorted(seen.union(self.reasons_seen)))
            text = (
                f"throttling: {len(throttled)}/{len(live)} GPUs on {nodes} node{'s' if nodes != 1 else ''} "
                f"since {clock_text(self.opened_at)}, peak {self.peak} ({reason_counts(throttled)})"
            )
            return self._say(now, text, ongoing=True)
        if self.opened_at is None:
            return []
        if now - self.last_seen_at < END_QUIET_S:
            text = (
                f"throttling: 0/{len(live)} GPUs now, since {clock_text(self.opened_at)}, peak {self.peak} "
                f"(ends after {END_QUIET_S:.0f} s without)"
            )
            return self._say(now, text, ongoing=True)
        lasted = format_age(self.last_seen_at - self.opened_at)
        text = (
            f"throttling ended: {clock_text(self.opened_at)} to {clock_text(self.last_seen_at)} ({lasted}), "
            f"peak {self.peak} GPUs on {self.peak_nodes} node{'s' if self.peak_nodes != 1 else ''} "
            f"({', '.join(self.reasons_seen)})"
        )
        ended = self._say(now, text, ongoing=False)
        self.opened_at, self._shown = None, ""
        return ended

    def _say(self, now: float, text: str, *, ongoing: bool) -> list[Event]:
        if text == self._shown:
            return []
        self._shown = text
        severity: Severity = "crit" if self.hard else "warn"
        if not ongoing:
            severity = "info"
        return [Event(now, severity, "throttle", text, incident=self.id, ongoing=ongoing)]


def keep_latest(events: list[Event], new: Iterable[Event], limit: int = 500) -> None:
    """Append `new` to `events` in place, an incident's update replacing its previous entry, the oldest
    beyond `limit` dropped (an ongoing incident is always recent: it moves to the end on each update)."""
    for e in new:
        if e.incident:
            for i in range(len(events) - 1, -1, -1):
                if events[i].incident == e.incident:
                    del events[i]
                    break
        bisect.insort(events, e, key=lambda x: x.at)  # time order: older news can arrive late (audit history)
    del events[:-limit]


__all__ = ["END_QUIET_S", "ThrottleIncident", "clock_text", "keep_latest", "reason_counts"]
