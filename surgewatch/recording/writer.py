"""The recorder: what the console renders from, written to a recording off the event loop.

The console (or the headless recorder) calls `reading()`, `quotas_loaded()`, `quota_changed()` and
`subscription()` from its event loop; each only appends to a queue (no encoding, no I/O there). A writer
thread wakes every `flush_s` (0.5 s), encodes what came, drops values equal to their stream's previous
one, compresses, and writes them in one transaction: a recorder killed with SIGKILL loses at most the
last half second or so, and the WAL keeps the file readable. `keep_s` drops data older than that once a
minute (keeping what the state at the new start needs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from collectors.runner import Reading, SourceError
from collectors.samples import FleetSample, Source, TrafficSample
from quotas.model import Quota
from surgewatch.recording.codec import CODEC_VERSION, encode, schema
from surgewatch.recording.format import (
    FORMAT,
    FORMAT_VERSION,
    KEYFRAME_S,
    TOP_STREAMS,
    compress,
    decompress,
    dumps,
    open_for_writing,
)
from surgewatch.recording.verify import audit_crc, chunk_crc

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0


@dataclasses.dataclass
class _Stream:
    id: int
    last_raw: bytes | None = None
    last_id: int | None = None
    key_id: int | None = None  # the keyframe deltas are compressed against
    key_raw: bytes = b""
    key_at: float = 0.0


class _Writer:
    """Rows of one connection; only the writer thread uses it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.streams: dict[str, _Stream] = {}
        self.rows_written = 0
        for sid, name in conn.execute("SELECT id, name FROM streams"):
            self.streams[str(name)] = _Stream(int(sid))  # appending: the first new row of each is a keyframe
        self.page_cache: dict[str, tuple[Any, int]] = {}  # node URL -> (its GPUs tuple, page row id)
        self.node_cache: dict[str, tuple[Any, list[Any]]] = {}  # node URL -> (NodeSample, encoded header)
        self.tier_cache: dict[str, tuple[Any, int]] = {}
        self._next_row: int | None = None

    def stream(self, name: str) -> _Stream:
        s = self.streams.get(name)
        if s is None:
            cur = self.conn.execute("INSERT OR IGNORE INTO streams (name) VALUES (?)", (name,))
            sid = cur.lastrowid if cur.rowcount else self.conn.execute(
                "SELECT id FROM streams WHERE name = ?", (name,)).fetchone()[0]
            s = self.streams[name] = _Stream(int(sid))  # type: ignore[arg-type]  # sqlite3 rows are untyped: sid is an int column
        return s

    def next_row(self) -> int:
        if self._next_row is None:
            self._next_row = int(self.conn.execute("SELECT coalesce(max(id), 0) + 1 FROM chunks").fetchone()[0])
        return self._next_row

    def forget_rows(self) -> None:
        """After a rollback: the next row id is read again from the file."""
        self._next_row = None

    def put(self, name: str, at: float, value: Any) -> int:
        """Write `value` as the stream's new value unless it equals the previous one; its row id."""
        s = self.stream(name)
        raw = dumps(value)
        if raw == s.last_raw and s.last_id is not None:
            return s.last_id
        if s.key_id is None or at - s.key_at > KEYFRAME_S or len(raw) > 2 * len(s.key_raw):
            data, base = compress(raw), None
        else:
            data, base = compress(raw, s.key_raw), s.key_id
        # the row id is chosen here, so the checksum covers it (a flipped id must not move a value)
        row = self.next_row()
        self.conn.execute("INSERT INTO chunks (id, stream, at, base, data, crc) VALUES (?, ?, ?, ?, ?, ?)",
                          (row, s.id, at, base, data, chunk_crc(row, s.id, at, base, data)))
        self._next_row = row + 1
        if base is None:
            s.key_id, s.key_raw, s.key_at = row, raw[-32768:], at  # zlib's window: only the last 32 KiB help
        s.last_raw, s.last_id = raw, row
        self.rows_written += 1
        return row

    # ----- the shapes of the top-level streams (record_format documents them)
    def reading(self, source: Source, at: float, r: Reading[Any]) -> None:
        header = encode(dataclasses.replace(r, sample=None))
        sample = r.sample
        shell: Any
        if sample is None:
            shell = None
        elif isinstance(sample, FleetSample):
            shell = [encode(dataclasses.replace(sample, nodes=())), [self._node(at, n) for n in sample.nodes]]
            live = {n.url for n in sample.nodes}
            for url in [u for u in self.page_cache if u not in live]:
                # a node that left the list starts afresh if it returns (--keep relies on it: see prune)
                self.page_cache.pop(url, None)
                self.node_cache.pop(url, None)
        elif isinstance(sample, TrafficSample):
            shell = [encode(dataclasses.replace(sample, tiers=())), [self._tier(at, t) for t in sample.tiers]]
        else:
            shell = encode(sample)
        self.put(f"reading:{source}", at, [header, shell])

    def _node(self, at: float, node: Any) -> list[Any]:
        cached = self.page_cache.get(node.url)
        if cached is not None and cached[0] is node.gpus:  # an unchanged page keeps its GPU objects
            page = cached[1]
        else:
            page = self.put(f"page:{node.url}", at, [encode(g) for g in node.gpus])
            self.page_cache[node.url] = (node.gpus, page)
        header = self.node_cache.get(node.url)
        if header is None or header[0] is not node:
            header = (node, encode(dataclasses.replace(node, gpus=())))
            self.node_cache[node.url] = header
        return [header[1], page]

    def _tier(self, at: float, tier: Any) -> int:
        cached = self.tier_cache.get(tier.tier)
        if cached is not None and cached[0] is tier:
            return cached[1]
        row = self.put(f"tier:{tier.tier}", at, encode(tier))
        self.tier_cache[tier.tier] = (tier, row)
        return row

    def audit(self, at: float, entries: Iterable[Any]) -> None:
        rows = []
        for e in entries:
            data = compress(dumps(encode(e)))
            rows.append((e.id, at, e.tier, e.actor, data, audit_crc(e.tier, e.id, at, e.actor, data)))
        self.conn.executemany(
            "INSERT OR IGNORE INTO audit (id, at, tier, actor, data, crc) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def prune(self, cutoff: float) -> int:
        """Drop rows older than `cutoff`, keeping the state at `cutoff`: each top-level stream's last row
        before it, the page and tier rows that row references, and the keyframes of every kept row."""
        c = self.conn
        keep: set[int] = set()
        for name in TOP_STREAMS:
            s = self.streams.get(name)
            if s is None:
                continue
            row = c.execute("SELECT id, base, data FROM chunks WHERE stream = ? AND at < ? ORDER BY at DESC, id DESC"
                            " LIMIT 1", (s.id, cutoff)).fetchone()
            if row is None:
                continue
            keep.add(int(row[0]))
            if name in ("reading:fleet", "reading:traffic"):
                zdict = None
                if row[1] is not None:
                    keep.add(int(row[1]))
                    base = c.execute("SELECT data FROM chunks WHERE id = ?", (row[1],)).fetchone()
                    zdict = decompress(base[0])[-32768:]
                shell = json.loads(decompress(row[2], zdict))[1]
                if shell is not None:
                    refs = [n[1] for n in shell[1]] if name == "reading:fleet" else list(shell[1])
                    keep.update(int(x) for x in refs)
        # bases of kept rows and of rows after the cutoff (a keyframe is at most KEYFRAME_S older than its rows)
        ids = ",".join(str(i) for i in keep) or "NULL"
        keep.update(int(b) for (b,) in c.execute(
            f"SELECT base FROM chunks WHERE base IS NOT NULL AND (id IN ({ids}) OR (at >= ? AND at <= ?))",
            (cutoff, cutoff + KEYFRAME_S + 1)))
        c.execute("CREATE TEMP TABLE IF NOT EXISTS keep_ids (id INTEGER PRIMARY KEY)")
        c.execute("DELETE FROM keep_ids")
        c.executemany("INSERT OR IGNORE INTO keep_ids (id) VALUES (?)", [(i,) for i in keep])
        n = c.execute("DELETE FROM chunks WHERE at < ? AND id NOT IN (SELECT id FROM keep_ids)", (cutoff,)).rowcount
        c.execute("DELETE FROM audit WHERE at < ?", (cutoff,))
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('kept_from', ?)", (repr(cutoff),))
        return int(n)


class Recorder:
    """Record into `path` (created, or appended to when it is a recording). Thread-safe, non-blocking calls."""

    def __init__(
        self,
        path: str | Path,
        *,
        keep_s: float | None = None,
        flush_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.keep_s = keep_s
        self.flush_s = flush_s
        self.clock = clock
        meta = {
            "format": FORMAT, "format_version": str(FORMAT_VERSION), "codec_version": str(CODEC_VERSION),
            "schema": dumps(schema()).decode(), "created_at": repr(clock()), "host": socket.gethostname(),
            "keep_s": "" if keep_s is None else repr(keep_s),
        }
        self._conn = open_for_writing(self.path, meta)  # raises RecordingError now, not in the thread
        self._writer = _Writer(self._conn)
        self._queue: list[tuple[str, float, Any]] = []
        self._lock = threading.Lock()  # the queue
        self._flush_lock = threading.Lock()  # the connection: one flush at a time
        self._wake = threading.Event()
        self._stopping = False
        self._quotas: dict[str, Quota] = {}
        self._last_prune = 0.0
        self.error: str | None = None
        """The last write failure (a full disk...): recording goes on trying; the console may show it."""
        self.cpu_s = 0.0  # the writer thread's CPU time: what recording costs (bench/record.py)
        self._thread = threading.Thread(target=self._main, name="surgewatch-recorder", daemon=True)
        self._thread.start()

    # ----- called from the event loop: append and return
    def _put(self, kind: str, item: Any, at: float | None = None) -> None:
        with self._lock:
            self._queue.append((kind, self.clock() if at is None else at, item))

    def reading(self, source: Source, reading: Reading[Any], *, at: float | None = None) -> None:
        """Record a reading the console got at `at` (default: now)."""
        self._put("reading", (Source(source), reading), at)

    def quotas_loaded(self, quotas: list[Quota]) -> None:
        self._put("quotas", list(quotas))

    def quota_changed(self, entries: list[Any], quota: Quota | None = None) -> None:
        self._put("changed", (list(entries), quota))

    def subscription(self, connected: bool, error: SourceError | None = None) -> None:
        self._put("subscription", (connected, error))

    # ----- the writer thread
    def _main(self) -> None:
        t_cpu = time.thread_time()
        while True:
            stopping = self._stopping
            self.flush()
            self.cpu_s = time.thread_time() - t_cpu
            if stopping:
                return
            self._wake.wait(self.flush_s)

    def flush(self) -> None:
        """Write what is queued, in one transaction (the writer thread calls it every flush_s; others may too)."""
        with self._flush_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
        w = self._writer
        now = self.clock()
        try:
            if batch:
                w.conn.execute("BEGIN")
                for kind, at, item in batch:
                    self._write(kind, at, item)
                # the recording reaches this far even when nothing changed (repeats are not rows)
                w.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_at', ?)",
                               (repr(max(at for _, at, _ in batch)),))
                w.conn.execute("COMMIT")
            if self.keep_s is not None and now - self._last_prune >= PRUNE_EVERY_S:
                self._last_prune = now
                w.conn.execute("BEGIN")
                w.prune(now - self.keep_s)
                w.conn.execute("COMMIT")
                w.conn.execute("PRAGMA incremental_vacuum")
            self.error = None
        except Exception as e:  # a full disk, or a value the codec cannot take: say it, keep the thread
            self.error = f"recording to {self.path} failed: {e}"
            log.exception("%s", self.error)
            if w.conn.in_transaction:
                w.conn.execute("ROLLBACK")
            w.forget_rows()

    def _write(self, kind: str, at: float, item: Any) -> None:
        w = self._writer
        if kind == "reading":
            w.reading(item[0], at, item[1])
        elif kind == "quotas":
            self._quotas = {q.tier: q for q in item}
            w.put("quotas", at, [encode(q) for _, q in sorted(self._quotas.items())])
        elif kind == "changed":
            entries, quota = item
            w.audit(at, entries)
            cur = self._quotas.get(quota.tier) if quota is not None else None
            if quota is not None and (cur is None or cur.version <= quota.version):
                self._quotas[quota.tier] = quota
                w.put("quotas", at, [encode(q) for _, q in sorted(self._quotas.items())])
        elif kind == "subscription":
            connected, error = item
            w.put("subscription", at, [connected, None if error is None else encode(error)])

    def close(self) -> None:
        """Write what is left and close the file (idempotent)."""
        if self._thread.is_alive():
            self._stopping = True
            self._wake.set()
            self._thread.join(30)
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
        except sqlite3.Error:
            pass

    @property
    def rows_written(self) -> int:
        return self._writer.rows_written
