"""The recording file: one SQLite database (WAL), its schema, its version, and opening one safely.

Tables (README "Recordings" documents the same):
- `meta(key, value)`: `format` = "surgewatch-recording", `format_version`, `codec_version`, `schema` (JSON:
  the field names of every recorded class, see surgewatch/recording/codec.py), `created_at`, `host`,
  `keep_s`, `kept_from` (epoch s: older data was dropped by --keep), `last_at` (epoch s of the last
  reading received: the recording's end, even when nothing changed since the last row).
- `streams(id, name)`: one per thing that changes on its own: `reading:gpus`, `reading:host`,
  `reading:fleet`, `reading:traffic`, `quotas`, `subscription` (the top-level streams: the state at a time
  is the latest row of each), `page:URL` (a node's GPUs) and `tier:NAME` (one tier's traffic), which the
  fleet and traffic rows reference by row id.
- `chunks(id, stream, at, base, data, crc)`: a new value of a stream, written only when it differs from the
  stream's previous one. `at` is the recorder's wall clock (epoch s). `data` is zlib-compressed JSON;
  with `base` NULL it is a keyframe, else it was compressed with the raw bytes of keyframe `base` as
  zlib's preset dictionary (a node page or a tier's 15-minute history differs from its keyframe by a
  few numbers, so the delta is a fraction of the keyframe). A keyframe is at most KEYFRAME_S older than
  the rows that use it, so seeking decodes at most two values per stream. `crc` is a CRC-32 of the row
  (surgewatch/recording/verify.py): a reader refuses a row that fails it (NULL in files written before).
- `audit(id, at, tier, actor, data, crc)`: quota changes (the audit entries the console received), `at`
  when received, `data` the compressed AuditEntry. A row is keyed by (tier, id): a stream entry id is
  unique within its tier's stream only, and tiers changed in the same millisecond (`init`, an import,
  the guard) share one. Files written before keep a table keyed by id alone, rebuilt on append.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path
from typing import Any

FORMAT = "surgewatch-recording"
FORMAT_VERSION = 1
KEYFRAME_S = 60.0  # a delta's keyframe is never older than this: bounds seek work and what --keep must keep
TOP_STREAMS = ("reading:gpus", "reading:host", "reading:fleet", "reading:traffic", "reading:serving", "quotas",
               "subscription")
SQLITE_MAGIC = b"SQLite format 3\x00"

AUDIT_TABLE_SQL = """CREATE TABLE IF NOT EXISTS audit (
    id TEXT NOT NULL, at REAL NOT NULL, tier TEXT NOT NULL, actor TEXT NOT NULL, data BLOB NOT NULL, crc INTEGER,
    PRIMARY KEY (tier, id)
)"""
AUDIT_INDEX_SQL = "CREATE INDEX IF NOT EXISTS audit_by_at ON audit (at)"
AUDIT_SQL = f"{AUDIT_TABLE_SQL};\n{AUDIT_INDEX_SQL};\n"
SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, stream INTEGER NOT NULL, at REAL NOT NULL, base INTEGER, data BLOB NOT NULL, crc INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_by_stream ON chunks (stream, at);
CREATE INDEX IF NOT EXISTS chunks_by_at ON chunks (at);
""" + AUDIT_SQL


class RecordingError(ValueError):
    """A file that cannot be read or written as a recording; the message says why (exit 2)."""


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def compress(raw: bytes, zdict: bytes | None = None) -> bytes:
    if zdict is None:
        return zlib.compress(raw, 6)
    c = zlib.compressobj(6, zdict=zdict)
    return c.compress(raw) + c.flush()


def decompress(data: bytes, zdict: bytes | None = None) -> bytes:
    if zdict is None:
        return zlib.decompress(data)
    d = zlib.decompressobj(zdict=zdict)
    return d.decompress(data) + d.flush()


def _refuse_non_recording(path: Path) -> None:
    """Refuse what is plainly not a recording before SQLite sees it (it would create or misread it)."""
    if not path.exists():
        raise RecordingError(f"{path}: no such file")
    if path.is_dir():
        raise RecordingError(f"{path}: a directory, not a recording")
    size = path.stat().st_size
    if size == 0:
        raise RecordingError(f"{path}: empty file (0 bytes), not a surgewatch recording")
    with path.open("rb") as f:
        head = f.read(100)
    if not head.startswith(SQLITE_MAGIC):
        raise RecordingError(f"{path}: not a surgewatch recording (not an SQLite database)")
    if len(head) == 100 and not Path(f"{path}-wal").exists():
        # the header's page size and page count: a shorter file lost its end (a partial copy)
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(head[28:32], "big")
        if pages and size < page_size * pages:
            raise RecordingError(
                f"{path}: truncated recording ({size} of {page_size * pages} bytes): copy the whole file again"
            )


def check_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    """The meta table of a recording; RecordingError for a foreign database or a newer format."""
    try:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.DatabaseError as e:
        if "no such table" in str(e):
            why = "an SQLite database without surgewatch's meta table"
            raise RecordingError(f"{path}: not a surgewatch recording ({why})") from None
        raise RecordingError(f"{path}: truncated or corrupt recording ({e})") from None
    meta = {str(k): str(v) for k, v in rows}
    if meta.get("format") != FORMAT:
        raise RecordingError(f"{path}: not a surgewatch recording (format {meta.get('format')!r})")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise RecordingError(f"{path}: bad format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise RecordingError(
            f"{path}: recorded with a newer surgewatch (format {version}); this one reads format {FORMAT_VERSION}"
        )
    return meta


def open_for_reading(path: str | Path) -> tuple[sqlite3.Connection, dict[str, str]]:
    """A read-only connection to a recording and its meta; RecordingError with the reason otherwise."""
    p = Path(path)
    _refuse_non_recording(p)
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        meta = check_meta(conn, p)
        # the newest row and the table's end must be readable: a cut file fails here, not mid-replay
        conn.execute("SELECT max(id), max(at) FROM chunks").fetchone()
        conn.execute("SELECT data FROM chunks ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError as e:
        raise RecordingError(f"{p}: truncated or corrupt recording ({e})") from None
    return conn, meta


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(str(r[1]) == column for r in conn.execute(f"PRAGMA table_info({table})"))


def _old_audit_keys(conn: sqlite3.Connection) -> bool:
    """True when the audit table is keyed by entry id alone (files written before (tier, id))."""
    info = conn.execute("PRAGMA table_info(audit)").fetchall()
    return [str(r[1]) for r in info if r[5]] == ["id"]


def _rekey_audit(conn: sqlite3.Connection) -> None:
    """Rebuild an audit table keyed by id alone under (tier, id), in one transaction."""
    conn.execute("BEGIN")
    conn.execute("ALTER TABLE audit RENAME TO audit_by_id")
    conn.execute("DROP INDEX IF EXISTS audit_by_at")
    conn.execute(AUDIT_TABLE_SQL)
    conn.execute(AUDIT_INDEX_SQL)
    conn.execute("INSERT OR IGNORE INTO audit (id, at, tier, actor, data) SELECT id, at, tier, actor, data "
                 "FROM audit_by_id")
    conn.execute("DROP TABLE audit_by_id")
    conn.execute("COMMIT")


def open_for_writing(path: str | Path, meta: dict[str, str]) -> sqlite3.Connection:
    """A connection for the recorder: a new file, or an existing recording to append to."""
    p = Path(path)
    if p.exists() and p.stat().st_size > 0:
        _refuse_non_recording(p)
    try:
        conn = sqlite3.connect(str(p), check_same_thread=False, isolation_level=None)
        existing = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if existing:
            check_meta(conn, p)
        else:
            # incremental vacuum lets --keep give dropped pages back to the file system
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a killed process loses nothing committed (only a power cut may lose the last commits)
        conn.execute("PRAGMA synchronous = NORMAL")
        if existing and _old_audit_keys(conn):
            _rekey_audit(conn)
        if existing and not has_column(conn, "chunks", "crc"):  # rows written before checksums keep NULL
            conn.execute("ALTER TABLE chunks ADD COLUMN crc INTEGER")
        if existing and not has_column(conn, "audit", "crc"):
            conn.execute("ALTER TABLE audit ADD COLUMN crc INTEGER")
        conn.executescript(SCHEMA_SQL)
        if not existing:
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
    except sqlite3.DatabaseError as e:
        raise RecordingError(f"{p}: cannot record into it ({e})") from None
    except OSError as e:
        raise RecordingError(f"{p}: cannot record into it ({e})") from None
    return conn
