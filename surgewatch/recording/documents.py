"""Recorded state as `snapshot --json` documents, times as operators write them, and `replay --info`."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from collectors.nodes import redact_url
from collectors.runner import Reading
from collectors.samples import FleetSample, GpusSample, HostSample, Source, TrafficSample
from quotas.errors import redact
from quotas.model import format_duration, iso
from surgewatch.recording.format import RecordingError
from surgewatch.recording.reader import Recording, State
from surgewatch.serving_json import serving_json
from surgewatch.snapshot import gpu_json, host_json, redis_json, tiers_json, unknown_tiers_json

_REL_RE = re.compile(r"^([+-])((?:[0-9]{1,6}[smhd])+)$")
_PART_RE = re.compile(r"([0-9]+)([smhd])")
_HMS_RE = re.compile(r"^([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TIME_FORMS = "14:32:05 (UTC), 2026-11-25T14:32:05Z, +10m (from the start), -30s (before the end)"


def document(at: float, readings: Mapping[Source, Reading[Any]]) -> dict[str, Any]:
    """The `snapshot --json` document of the console's readings at `at` (same keys, `taken_at` = `at`).

    A failing source keeps its last good values (as the console shows them) and its error is in `errors`
    under the snapshot's collector name."""
    errors: dict[str, str] = {}
    gpus: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    host: dict[str, Any] | None = None
    tiers: list[dict[str, Any]] = []
    local = readings.get(Source.GPUS)
    if local is not None:
        if isinstance(local.sample, GpusSample):
            if local.sample.status != "ok":
                errors["gpu"] = local.sample.message or local.sample.status
            gpus.extend(gpu_json(g) for g in local.sample.gpus)
        if local.error:
            errors["gpu"] = redact(local.error.message)
    fleet = readings.get(Source.FLEET)
    if fleet is not None:
        name = "fleet"
        if isinstance(fleet.sample, FleetSample):
            name = "prometheus" if fleet.sample.source == "prometheus" else "fleet"
            for n in fleet.sample.nodes:
                nodes.append({"url": redact_url(n.url), "status": n.status, "error": n.error,
                              "latency_ms": n.latency_ms, "gpus": len(n.gpus)})
                gpus.extend(gpu_json(g) for g in n.gpus)
        if fleet.error:
            errors[name] = redact(fleet.error.message)
    h = readings.get(Source.HOST)
    if h is not None:
        if isinstance(h.sample, HostSample):
            host = host_json(h.sample)
        if h.error:
            errors["host"] = redact(h.error.message)
    t = readings.get(Source.TRAFFIC)
    redis: dict[str, Any] | None = None  # as `snapshot --json`: None when no Redis was configured (recorded)
    if t is not None:
        if isinstance(t.sample, TrafficSample):
            tiers = tiers_json(t.sample)
        if t.error:
            errors["traffic"] = redact(t.error.message)
        # a failed poll names why Redis gave no state, as snapshot does; else the server's named state
        traffic = t.sample if isinstance(t.sample, TrafficSample) and t.error is None else None
        redis = redis_json(traffic, errors.get("traffic"), t.error.kind if t.error else None)
    serving = readings.get(Source.SERVING)  # inference servers (surgewatch.serving_json): null when not watched
    if serving is not None and serving.error:
        errors["serving"] = redact(serving.error.message)
    return {"taken_at": iso(at), "host": host, "errors": errors, "nodes": nodes, "gpus": gpus, "tiers": tiers,
            "redis": redis, "unknown_tiers": unknown_tiers_json(t.sample if t is not None else None),
            "serving": serving_json(serving.sample if serving is not None else None)}


def parse_duration_s(text: str) -> int:
    """`10m`, `1h30m`, `90s` -> seconds."""
    parts = _PART_RE.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise RecordingError(f"invalid duration {text!r}: write e.g. 30s, 10m, 1h30m, 24h, 2d")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def parse_time(text: str, start: float, end: float, *, now: float | None = None, what: str = "time") -> float:
    """An operator's time inside [start, end]: `14:32:05` (UTC, the first such time in the recording),
    an ISO 8601 time, `+10m`/`-30s` from `now` when given (the console's `g`), else from the start/end."""
    t = text.strip()
    m = _REL_RE.fullmatch(t)
    if m:
        delta = parse_duration_s(m.group(2))
        base = now if now is not None else (start if m.group(1) == "+" else end)
        at = base + delta if m.group(1) == "+" else base - delta
    elif (m := _HMS_RE.fullmatch(t)) is not None:
        hh, mm, ss = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if hh > 23 or mm > 59 or ss > 59:
            raise RecordingError(f"invalid {what} {text!r}: hours 0-23, minutes and seconds 0-59")
        day = datetime.fromtimestamp(math.floor(start), tz=UTC).replace(hour=hh, minute=mm, second=ss)
        at = day.timestamp()
        while at < math.floor(start):
            at += 86400
    else:
        try:
            parsed = datetime.fromisoformat(t)
        except ValueError:
            raise RecordingError(f"invalid {what} {text!r}: write {TIME_FORMS}") from None
        at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not math.floor(start) <= at <= end:
        raise RecordingError(
            f"{what} {text!r} ({iso(at)}) is outside the recording: {iso(start)} to {iso(end)}"
        )
    return at


def parse_every_s(text: str) -> float:
    try:
        every = float(text)
    except ValueError:
        every = float(parse_duration_s(text))
    if not 0 < every <= 31 * 86400 or math.isnan(every):
        raise RecordingError(f"invalid --every {text!r}: a number of seconds above 0 (e.g. 1, 60, 5m)")
    return every


def documents(rec: Recording, start: float, end: float, every_s: float) -> Iterator[dict[str, Any]]:
    """One document every `every_s` seconds from `start` (a whole second) to `end`, walking forward."""
    t = float(math.ceil(start))
    state: State | None = None
    while t <= end:
        if state is None or every_s > 5:
            state = rec.state_at(t)  # far apart: a seek is cheaper than decoding every change between
        else:
            readings = dict(state.readings)
            for ch in rec.changes(state.at, t):
                if ch.kind == "reading" and ch.source is not None:
                    readings[ch.source] = ch.value
            state = State(t, readings)
        yield document(t, state.readings)
        t += every_s


def info(rec: Recording) -> dict[str, Any]:
    """What `replay --info` says: span, sources, nodes, GPUs, tiers, quota changes, size."""
    last = rec.state_at(rec.end)
    names = rec.stream_names()
    fleet = last.readings.get(Source.FLEET)
    nodes = fleet.sample.nodes if fleet is not None and isinstance(fleet.sample, FleetSample) else ()
    local = last.readings.get(Source.GPUS)
    local_gpus = len(local.sample.gpus) if local is not None and isinstance(local.sample, GpusSample) else 0
    changes = []
    for _, e in rec.audit():
        changes.append({"at": iso(e.at), "tier": e.tier, "actor": e.actor, "kind": e.kind, "version": e.version,
                        "old": e.old.spec if e.old else None, "new": e.new.spec if e.new else None,
                        "reason": e.reason})
    return {
        "file": str(rec.path),
        "format_version": int(rec.meta.get("format_version", "0")),
        "start": iso(rec.start), "end": iso(rec.end), "duration_s": round(rec.end - rec.start, 1),
        "sources": sorted(n.split(":", 1)[1] for n in names if n.startswith("reading:")),
        "nodes": len({n for n in names if n.startswith("page:")}),
        "gpus": local_gpus + sum(len(n.gpus) for n in nodes),
        "tiers": sorted(n.split(":", 1)[1] for n in names if n.startswith("tier:")),
        "quota_changes": changes,
        "size_bytes": rec.size_bytes(),
        "rows": int(rec._q("SELECT count(*) FROM chunks").fetchone()[0]),
        "kept_from": iso(float(rec.meta["kept_from"])) if rec.meta.get("kept_from") else None,
        "damage": rec.damage,
    }


def info_text(d: dict[str, Any]) -> str:
    span = format_duration(int(d["duration_s"])) if d["duration_s"] >= 1 else f"{d['duration_s']}s"
    out = [
        f"recording {d['file']} (format {d['format_version']}, {d['size_bytes'] / 1e6:.1f} MB, {d['rows']} rows)",
        f"span: {d['start']} to {d['end']} ({span})" + (f"; older data dropped before {d['kept_from']}"
                                                          if d["kept_from"] else ""),
        f"sources: {', '.join(d['sources']) or 'none'}",
        f"nodes: {d['nodes']}, GPUs: {d['gpus']}",
        f"tiers: {', '.join(d['tiers']) or 'none'}",
        f"quota changes: {len(d['quota_changes'])}",
    ]
    if d.get("damage"):
        out.insert(1, f"DAMAGED: {d['damage']}")
    for c in d["quota_changes"]:
        out.append(f"  {c['at']}  {c['tier']} v{c['version']} by {c['actor']}: {c['old'] or '-'} -> "
                   f"{c['new'] or '-'} ({c['reason'] or 'no reason given'})")
    return "\n".join(out) + "\n"
