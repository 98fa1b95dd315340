"""Reading a recording: its span, the console's state at any recorded time, the changes between two
times (what replay feeds the console), the quota changes, and a summary (`replay --info`)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.runner import Reading, SourceError
from collectors.samples import (
    FleetSample,
    GpuSample,
    GpusSample,
    HostSample,
    NodeSample,
    Source,
    TierTraffic,
    TrafficSample,
)
from collectors.serving_samples import ServingSample
from quotas.model import Quota
from quotas.store import AuditEntry
from surgewatch.recording.codec import CodecError, Decoder
from surgewatch.recording.format import TOP_STREAMS, RecordingError, decompress, open_for_reading
from surgewatch.recording.verify import check_file, wal_damage

SAMPLE_CLASS: dict[Source, type] = {Source.GPUS: GpusSample, Source.HOST: HostSample, Source.SERVING: ServingSample}
CACHE_ROWS = 8192  # decoded pages/tiers kept: an unchanged page is the same objects on every step (identity)


@dataclass(frozen=True)
class State:
    """What the console had at `at`: the latest reading of each source, the quotas, the change feed."""

    at: float
    readings: dict[Source, Reading[Any]]
    quotas: list[Quota] | None = None
    subscription: tuple[bool, SourceError | None] | None = None


@dataclass(frozen=True)
class Change:
    """One recorded change, in order: `kind` reading (`source`, `value` a Reading), quotas (a list of
    Quota), subscription ((connected, error)) or audit (an AuditEntry)."""

    at: float
    kind: str
    value: Any
    source: Source | None = None


class Recording:
    """A recording opened read-only. Raises RecordingError (with the reason) for anything else."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn, self.meta = open_for_reading(self.path)
        try:
            check_file(self._conn, self.path)  # nothing is replayed from a damaged file
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise RecordingError(f"{self.path}: damaged recording ({e})") from None
        except RecordingError:
            self._conn.close()
            raise
        try:
            self.decoder = Decoder(json.loads(self.meta.get("schema", "{}")))
            self.stream_ids = {str(n): int(i) for i, n in self._conn.execute("SELECT id, name FROM streams")}
        except (ValueError, sqlite3.DatabaseError) as e:
            raise RecordingError(f"{self.path}: corrupt recording ({e})") from None
        self._names = {i: n for n, i in self.stream_ids.items()}
        self._top = {self.stream_ids[n]: n for n in TOP_STREAMS if n in self.stream_ids}
        self._keys: OrderedDict[int, bytes] = OrderedDict()
        self._rows: OrderedDict[int, Any] = OrderedDict()
        first, last = self._q("SELECT min(at), max(at) FROM chunks").fetchone()
        if first is None:
            lost = wal_damage(self.path, 0.0)  # a log damaged at its first commit leaves nothing: say so
            raise RecordingError(f"{self.path}: the recording holds no data yet" + (f" ({lost})" if lost else ""))
        kept = self.meta.get("kept_from")
        self.start = max(float(first), float(kept)) if kept else float(first)
        self.end = max(float(last), float(self.meta.get("last_at") or last))
        self.damage = wal_damage(self.path, self.end)
        """A write-ahead log that does not replay whole, and the seconds it costs (None: it replays whole)."""

    def close(self) -> None:
        self._conn.close()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, args)
        except sqlite3.DatabaseError as e:
            raise RecordingError(f"{self.path}: truncated or corrupt recording ({e})") from None

    # ----- rows
    def _raw(self, row: int) -> bytes:
        found = self._q("SELECT base, data FROM chunks WHERE id = ?", (row,)).fetchone()
        if found is None:
            raise RecordingError(f"{self.path}: corrupt recording (row {row} is missing)")
        base, data = found
        try:
            if base is None:
                raw = decompress(data)
                self._remember(self._keys, row, raw[-32768:], 512)
                return raw
            zdict = self._keys.get(base)
            if zdict is None:
                zdict = self._raw(int(base))[-32768:]
                self._remember(self._keys, int(base), zdict, 512)
            return decompress(data, zdict)
        except zlib.error as e:
            raise RecordingError(f"{self.path}: corrupt recording (row {row}: {e})") from None

    @staticmethod
    def _remember(cache: OrderedDict[int, Any], key: int, value: Any, size: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > size:
            cache.popitem(last=False)

    def _value(self, row: int) -> Any:
        try:
            return json.loads(self._raw(row))
        except ValueError as e:
            raise RecordingError(f"{self.path}: corrupt recording (row {row}: {e})") from None

    def _cached(self, row: int, make: Callable[[Any], Any]) -> Any:
        hit = self._rows.get(row)
        if hit is None:
            hit = make(self._value(row))
            self._remember(self._rows, row, hit, CACHE_ROWS)
        return hit

    def _decode(self, cls: type, value: Any) -> Any:
        try:
            return self.decoder.decode(cls, value)
        except CodecError as e:
            raise RecordingError(f"{self.path}: corrupt recording ({e})") from None

    def _page(self, row: int) -> tuple[GpuSample, ...]:
        return self._cached(row, lambda v: tuple(self._decode(GpuSample, g) for g in v))

    def _tier(self, row: int) -> TierTraffic:
        return self._cached(row, lambda v: self._decode(TierTraffic, v))

    def _reading(self, source: Source, value: Any) -> Reading[Any]:
        header, shell = value
        reading: Reading[Any] = self._decode(Reading, header)
        sample: Any = None
        if shell is None:
            pass
        elif source == Source.FLEET:
            fleet, nodes = shell
            sample = dataclasses.replace(self._decode(FleetSample, fleet), nodes=tuple(
                dataclasses.replace(self._decode(NodeSample, n), gpus=self._page(int(page))) for n, page in nodes
            ))
        elif source == Source.TRAFFIC:
            traffic, tiers = shell
            sample = dataclasses.replace(self._decode(TrafficSample, traffic),
                                         tiers=tuple(self._tier(int(t)) for t in tiers))
        else:
            sample = self._decode(SAMPLE_CLASS[source], shell)
        return dataclasses.replace(reading, sample=sample)

    def _change(self, name: str, at: float, value: Any) -> Change:
        if name.startswith("reading:"):
            source = Source(name.split(":", 1)[1])
            return Change(at, "reading", self._reading(source, value), source)
        if name == "quotas":
            return Change(at, "quotas", [self._decode(Quota, q) for q in value])
        connected, error = value
        err = None if error is None else self._decode(SourceError, error)
        return Change(at, "subscription", (bool(connected), err))

    # ----- what replay asks
    def state_at(self, at: float) -> State:
        """The console's state at `at`: each top-level stream's latest value at or before it."""
        readings: dict[Source, Reading[Any]] = {}
        quotas: list[Quota] | None = None
        sub: tuple[bool, SourceError | None] | None = None
        for sid, name in self._top.items():
            found = self._q(
                "SELECT id, at FROM chunks WHERE stream = ? AND at <= ? ORDER BY at DESC, id DESC LIMIT 1", (sid, at)
            ).fetchone()
            if found is None:
                continue
            ch = self._change(name, float(found[1]), self._value(int(found[0])))
            if ch.kind == "reading" and ch.source is not None:
                readings[ch.source] = ch.value
            elif ch.kind == "quotas":
                quotas = ch.value
            else:
                sub = ch.value
        return State(at, readings, quotas, sub)

    def changes(self, after: float, upto: float) -> list[Change]:
        """Every recorded change with `after` < at <= `upto`, oldest first (audit entries included)."""
        top = ",".join(str(i) for i in self._top) or "NULL"
        out = [
            self._change(self._top[int(sid)], float(at), self._value(int(row)))
            for row, sid, at in self._q(
                f"SELECT id, stream, at FROM chunks WHERE at > ? AND at <= ? AND stream IN ({top}) ORDER BY at, id",
                (after, upto),
            ).fetchall()
        ]
        out += [Change(at, "audit", e) for at, e in self.audit(after, upto)]
        out.sort(key=lambda c: c.at)  # stable: readings of one instant keep their order
        return out

    def audit(self, after: float | None = None, upto: float | None = None) -> list[tuple[float, AuditEntry]]:
        """Quota changes received in (after, upto], oldest first, with when the console received them."""
        lo = float("-inf") if after is None else after
        hi = float("inf") if upto is None else upto
        rows = self._q("SELECT at, data FROM audit WHERE at > ? AND at <= ? ORDER BY at", (lo, hi)).fetchall()
        out = []
        for at, data in rows:
            try:
                value = json.loads(decompress(data))
            except (zlib.error, ValueError) as e:
                raise RecordingError(f"{self.path}: corrupt recording (audit entry: {e})") from None
            out.append((float(at), self._decode(AuditEntry, value)))
        out.sort(key=lambda p: (p[1].at_us or p[1].at * 1e6, p[0]))
        return out

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    def stream_names(self) -> list[str]:
        return sorted(self.stream_ids)
