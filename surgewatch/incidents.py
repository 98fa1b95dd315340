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

from collectors.serving_samples import ServingSample
from surgewatch.alerts import NOT_SCRAPED, Event, Severity
from surgewatch.kpis import GpuRow, format_age, is_throttled, node_label
from surgewatch.thresholds import Thresholds

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


@dataclass
class SloBreach:
    """One model's latency SLO breach (one figure: e2e or TTFT p99): opened when the p99 goes over its SLO,
    updated in place while it lasts (the line says the p99 now and at its peak, since when), ended by one
    line once it has stayed at or under the SLO (or without requests) for END_QUIET_S."""

    model: str
    label: str  # "e2e p99", "TTFT p99"
    seq: int = 0
    opened_at: float | None = None
    last_seen_at: float = 0.0
    peak_s: float = 0.0
    _shown: str = ""

    @property
    def id(self) -> str:
        return f"slo-{self.label}-{self.model}-{self.seq}"

    def update(self, p99_s: float | None, slo_s: float, now: float) -> list[Event]:
        on = f"{self.label} {{}} > {slo_s:g} s on model {self.model}"
        if p99_s is not None and p99_s > slo_s:
            if self.opened_at is None:
                self.seq += 1
                self.opened_at, self.peak_s = now, 0.0
            self.last_seen_at = now
            self.peak_s = max(self.peak_s, p99_s)
            text = (f"SLO breach: {on.format(f'{p99_s:.1f} s')} since {clock_text(self.opened_at)}"
                    f"{f', peak {self.peak_s:.1f} s' if self.peak_s > p99_s else ''}")
            return self._say(now, text, ongoing=True)
        if self.opened_at is None or now - self.last_seen_at < END_QUIET_S:
            return []  # back under the SLO for a moment: the line keeps its last figure until it ends
        text = (f"SLO breach ended: {self.label} on model {self.model} over {slo_s:g} s from "
                f"{clock_text(self.opened_at)} to {clock_text(self.last_seen_at)} "
                f"({format_age(self.last_seen_at - self.opened_at)}), peak {self.peak_s:.1f} s")
        self.opened_at, self._shown = None, ""
        return [Event(now, "info", "slo", text, incident=self.id, ongoing=False)]

    def _say(self, now: float, text: str, *, ongoing: bool) -> list[Event]:
        if text == self._shown:
            return []
        self._shown = text
        return [Event(now, "crit", "slo", text, incident=self.id, ongoing=ongoing)]


class ServingWatch:
    """The inference servers' events: each model's latency SLO breaches as incidents (SloBreach), and a
    line for a replica going down, coming back or restarting (a counter reset): rare, and each one matters."""

    FIGURES = (("e2e_p99_s", "e2e p99", "e2e_p99_slo_s"), ("ttft_p99_s", "TTFT p99", "ttft_p99_slo_s"))

    def __init__(self) -> None:
        self._breaches: dict[tuple[str, str], SloBreach] = {}

    def breaching(self) -> list[str]:
        """The models in breach now (the guard's and the tests' question)."""
        return sorted({b.model for b in self._breaches.values() if b.opened_at is not None})

    def update(self, prev: ServingSample | None, cur: ServingSample, th: Thresholds, now: float) -> list[Event]:
        out: list[Event] = []
        for m in cur.models:
            for field, label, slo in self.FIGURES:
                b = self._breaches.setdefault((m.model, field), SloBreach(m.model, label))
                out += b.update(getattr(m.figures, field), getattr(th, slo), now)
        known = {m.model for m in cur.models}
        for (model, field), b in self._breaches.items():
            if model not in known:  # a model no replica serves any more: its breach ends by time alone
                out += b.update(None, getattr(th, dict((f, s) for f, _, s in self.FIGURES)[field]), now)
        out += replica_events(prev, cur, now)
        return out


def replica_events(prev: ServingSample | None, cur: ServingSample, now: float) -> list[Event]:
    """Replicas going down (with the error), coming back, and restarting (their counters went down)."""
    before = {r.url: r for r in prev.replicas} if prev is not None else {}
    out: list[Event] = []
    for r in cur.replicas:
        o = before.get(r.url)
        if o is None or o is r or r.error == NOT_SCRAPED:
            continue
        # the label is worked out only for an event: most scrapes change nothing (a URL split per replica a poll)
        if r.status != "up" and o.status == "up":
            where = f"inference server {node_label(r.url)}"
            why = r.error or "no answer"
            out.append(Event(now, "crit", "server_down", f"{where} down: {why}" if r.status == "down" else
                             f"{where} answers, but {why}"))
        elif r.status == "up" and o.status != "up" and o.error != NOT_SCRAPED:
            out.append(Event(now, "info", "server_up", f"inference server {node_label(r.url)} back up"))
        if r.resets > o.resets:
            where = f"inference server {node_label(r.url)}"
            out.append(Event(now, "warn", "server_reset", f"{where} restarted (its counters went back to zero)"))
    return out


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


__all__ = ["END_QUIET_S", "ServingWatch", "SloBreach", "ThrottleIncident", "clock_text", "keep_latest",
           "reason_counts", "replica_events"]
