"""Events worth a line in the events panel, derived by diffing consecutive samples.

Pure functions of (previous, current): the app keeps the previous values and calls these on each new
reading, so every rule here is unit-tested with plain dataclasses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from collectors.samples import FleetSample, NodeSample, TrafficSample
from quotas.model import Quota
from surgewatch.kpis import GpuRow, node_label
from surgewatch.thresholds import Thresholds

if TYPE_CHECKING:
    from surgewatch.incidents import ThrottleIncident

Severity = Literal["info", "warn", "crit"]
NOT_SCRAPED = "not scraped yet"


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    severity: Severity
    kind: str  # throttle, xid, gpu_lost, node_down, node_up, reject_spike, shadow, quota, source
    text: str
    incident: str = ""  # an ongoing condition's id: each update replaces the previous one (surgewatch.incidents)
    ongoing: bool = False  # the incident is still going on: shown pinned, updated in place


def gpu_events(
    prev: Mapping[str, GpuRow],
    rows: Iterable[GpuRow],
    now: float,
    throttling: ThrottleIncident | None = None,
) -> list[Event]:
    """New XID errors and GPUs that become lost (a line each: rare, and each one matters), and the
    fleet's throttling as one incident (surgewatch.incidents). A first sight of a GPU is not news; an ongoing
    condition is. `throttling` is the incident kept by the caller across calls; without one, a new one
    seeded from `prev` says whether throttling started between the two."""
    from surgewatch.incidents import ThrottleIncident

    rows = list(rows)
    out: list[Event] = []
    for row in rows:
        old = prev.get(row.key)
        if old is None or row.stale or row.placeholder:
            continue
        g, o = row.gpu, old.gpu
        if g is o:
            continue  # the same sample (a re-scrape of an unchanged page): nothing new
        where = f"{row.node} gpu{g.index}"
        if g.status == "lost" and o.status != "lost":
            out.append(Event(now, "crit", "gpu_lost", f"{where} lost (fell off the bus or driver error)"))
            continue
        if g.xid is not None and g.xid != o.xid:
            out.append(Event(now, "crit", "xid", f"{where} XID {g.xid}"))
    if throttling is None:
        throttling = ThrottleIncident()
        throttling.update(prev.values(), now)
    return out + throttling.update(rows, now)


def node_events(prev: FleetSample | None, cur: FleetSample, now: float) -> list[Event]:
    """Nodes going down (with the error) and coming back up, a node that answers but has lost its GPU
    series, and each new warning of a node's page (a value ignored, a duplicate, a GPU on two nodes),
    named once while it lasts."""
    # a node the collector has not scraped yet is "down" with this placeholder error: not news either way
    before = {
        n.url: n.status for n in (prev.nodes if prev is not None else ()) if n.error != NOT_SCRAPED
    }
    out: list[Event] = []
    old_nodes = {n.url: n for n in prev.nodes} if prev is not None else {}
    for n in cur.nodes:
        was = before.get(n.url)
        if n.error == NOT_SCRAPED:
            continue
        o = old_nodes.get(n.url)
        if n is not o:
            out += warning_events(o, n, now)
        if n.status == "up" and not n.gpus and o is not None and o.gpus:
            out.append(Event(now, "crit", "node_no_gpus", f"node {node_label(n.url)} up, lost its GPU series"))
        if n.status == "down" and was != "down":
            out.append(Event(now, "crit", "node_down", f"node {node_label(n.url)} down: {n.error or 'no answer'}"))
        elif n.status == "up" and was == "down":
            out.append(Event(now, "info", "node_up", f"node {node_label(n.url)} back up"))
    return out


def warning_events(old: NodeSample | None, n: NodeSample, now: float) -> list[Event]:
    """The warnings of a node that its previous sample did not have (keyed by GPU, field and kind, so a
    value that keeps changing is still one story)."""
    if not n.warnings:
        return []
    had = {(w.gpu, w.field, w.kind) for w in old.warnings} if old is not None else set()
    return [
        Event(now, "warn", "node_warning", f"{node_label(n.url)} {w.text}")
        for w in n.warnings
        if (w.gpu, w.field, w.kind) not in had
    ]


def traffic_events(prev: TrafficSample | None, cur: TrafficSample, th: Thresholds, now: float) -> list[Event]:
    """A tier's rejection % crossing the spike threshold, shadow-mode hits starting, a tier's stored
    quota becoming unreadable (junk, or fields edited outside surgewatch) or readable again, and gateways
    starting to ask for a tier name that has no quota (a misspelt tier)."""
    before = {t.tier: t for t in prev.tiers} if prev is not None else {}
    out: list[Event] = []
    for t in cur.tiers:
        total = t.accepted_rps + t.rejected_rps
        pct = 100.0 * t.rejected_rps / total if total > 0 else 0.0
        o = before.get(t.tier)
        o_total = (o.accepted_rps + o.rejected_rps) if o else 0.0
        o_pct = 100.0 * o.rejected_rps / o_total if o and o_total > 0 else 0.0
        if total >= th.reject_spike_min_rps and pct >= th.reject_spike_pct and o_pct < th.reject_spike_pct:
            reasons = ", ".join(f"{k} {v:.1f}/s" for k, v in sorted(t.rejected_by_reason_rps.items()) if v > 0)
            out.append(Event(now, "warn", "reject_spike", f"tier {t.tier} rejecting {pct:.0f}% ({reasons or 'n/a'})"))
        if t.shadow_rps > 0 and (o is None or o.shadow_rps <= 0) and o is not None:
            out.append(Event(now, "info", "shadow", f"tier {t.tier} shadow mode would refuse {t.shadow_rps:.1f}/s"))
        if t.quota_error and (o is None or o.quota_error != t.quota_error):
            out.append(Event(now, "crit", "quota_broken", f"tier {t.tier} quota unreadable: {t.quota_error}"))
        elif o is not None and o.quota_error and not t.quota_error:
            out.append(Event(now, "info", "quota_broken", f"tier {t.tier} quota readable again"))
    seen = {u.name for u in prev.unknown_tiers} if prev is not None else set()
    out += [Event(now, "warn", "unknown_tier", u.message()) for u in cur.unknown_tiers if u.name not in seen]
    return out


def quota_text(q: Quota | None) -> str:
    """`3/1d cap 50/s shadow paused until 14:00Z`: one quota, the way the tier panel writes it."""
    if q is None:
        return "none"
    parts = [q.spec]  # quotas.model.quota_text: the one way a quota is written
    if q.tier_cap_rps is not None:
        parts.append(f"cap {q.tier_cap_rps}/s")
    if q.mode == "shadow":
        parts.append("shadow")
    if q.paused:
        parts.append("paused")
    return " ".join(parts)


def audit_event(entry: Any) -> Event:
    """A quota change from the audit stream: who, what, why."""
    old, new = getattr(entry, "old", None), getattr(entry, "new", None)
    reason = getattr(entry, "reason", "") or "no reason given"
    text = (
        f"quota {entry.tier} v{getattr(entry, 'version', '?')} by {entry.actor}: "
        f"{quota_text(old)} -> {quota_text(new)} ({reason})"
    )
    return Event(float(entry.at), "info", "quota", text)
