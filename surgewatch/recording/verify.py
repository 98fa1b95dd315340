"""A recording checks itself before anything is replayed from it: the black box must never print a wrong value.

Three checks, each naming what it finds:
- SQLite's own `PRAGMA quick_check` (the file's structure: pages, b-trees, records);
- a CRC-32 per stored row (chunks and audit), over its id, stream or tier, time, keyframe reference and
  data, written by the recorder beside the row: a flipped byte in a value, in its time (the row would be
  replayed at another second) or in its keyframe reference is found here, where SQLite sees a valid record;
- the write-ahead log (`FILE-wal`), read frame by frame with SQLite's own checksums: SQLite replays a log
  only up to its first bad frame and says nothing, so a cut or damaged log would silently shorten the
  recording. Here it is named, with the seconds it costs.
Damage in the file itself refuses the recording (RecordingError, exit 2). A log that does not replay whole
leaves a recording whose intact part is exact: it is replayed, and `wal_damage` says what is missing.
"""

from __future__ import annotations

import sqlite3
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from quotas.model import iso
from surgewatch.recording.format import RecordingError, has_column

WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little- or big-endian words
WAL_HEADER = 32
FRAME_HEADER = 24
SHOWN_ROWS = 3  # damaged rows named in a message; the count says how many more
RECHECKS, RECHECK_S = 3, 0.2  # a log that looks cut is read again: a live recorder may be mid-frame


def chunk_crc(row: int, stream: int, at: float, base: int | None, data: bytes) -> int:
    """The checksum stored beside a chunk row."""
    return zlib.crc32(data, zlib.crc32(f"{row}|{stream}|{at!r}|{base}|".encode()))


def audit_crc(tier: str, entry_id: str, at: float, actor: str, data: bytes) -> int:
    """The checksum stored beside an audit row."""
    return zlib.crc32(data, zlib.crc32(f"{tier}|{entry_id}|{at!r}|{actor}|".encode()))


def check_file(conn: sqlite3.Connection, path: Path) -> None:
    """Raise RecordingError naming the damage when the file's structure or any row's checksum is wrong."""
    problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(10)")]
    if problems != ["ok"]:
        raise RecordingError(f"{path}: damaged recording: SQLite's integrity check reports "
                             f"{'; '.join(problems[:SHOWN_ROWS])}")
    bad: list[str] = []
    if has_column(conn, "chunks", "crc"):  # files written before checksums: the structure check only
        names = {int(i): str(n) for i, n in conn.execute("SELECT id, name FROM streams")}
        for row, stream, at, base, crc, data in conn.execute(
                "SELECT id, stream, at, base, crc, data FROM chunks WHERE crc IS NOT NULL ORDER BY id"):
            if chunk_crc(row, stream, at, base, bytes(data)) != crc:
                bad.append(f"{names.get(stream, f'stream {stream}')} at {_when(at)} (row {row})")
    if has_column(conn, "audit", "crc"):
        for tier, entry, at, actor, crc, data in conn.execute(
                "SELECT tier, id, at, actor, crc, data FROM audit WHERE crc IS NOT NULL ORDER BY at"):
            if audit_crc(tier, entry, at, actor, bytes(data)) != crc:
                bad.append(f"the quota change {entry} of tier {tier} (received {_when(at)})")
    if bad:
        more = f" and {len(bad) - SHOWN_ROWS} more" if len(bad) > SHOWN_ROWS else ""
        raise RecordingError(f"{path}: damaged recording: {len(bad)} stored value(s) fail their checksum: "
                             f"{', '.join(bad[:SHOWN_ROWS])}{more}; nothing is replayed from a damaged file")


def _when(at: object) -> str:
    return (iso(at) or repr(at)) if isinstance(at, float) else repr(at)


@dataclass(frozen=True)
class WalReport:
    """What reading the log found: `why` is None when it replays whole."""

    frames: int  # frames of the current log generation found in the file
    replayed: int  # frames SQLite replays (up to the last intact commit)
    why: str | None = None


def _checksum(data: bytes, big: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def read_wal(wal: Path) -> WalReport:
    """Walk a write-ahead log as SQLite does (https://sqlite.org/fileformat2.html#walformat) and say whether
    every frame of its current generation replays. Frames of an older generation (salts of a log that was
    reset) are stale by design; uncommitted frames at the end are a transaction the recorder never finished."""
    try:
        blob = wal.read_bytes()
    except FileNotFoundError:
        return WalReport(0, 0)
    if not blob:
        return WalReport(0, 0)  # checkpointed and truncated: the normal state of a closed recording
    if len(blob) < WAL_HEADER:
        return WalReport(0, 0, f"its header is cut ({len(blob)} of {WAL_HEADER} bytes)")
    magic, _, page_size, _, salt1, salt2, c0, c1 = struct.unpack(">8I", blob[:WAL_HEADER])
    if magic not in WAL_MAGIC or not 512 <= page_size <= 65536:
        return WalReport(0, 0, "its header is damaged (not a write-ahead log header)")
    big = magic == WAL_MAGIC[1]
    s0, s1 = _checksum(blob[:24], big, 0, 0)
    size = FRAME_HEADER + page_size
    whole = (len(blob) - WAL_HEADER) // size
    if (s0, s1) != (c0, c1):
        return WalReport(whole, 0, "its header fails its checksum: none of its frames replay")
    replayed = good = 0  # frames through the last intact commit; intact frames of this generation
    why: str | None = None
    stop = whole  # the first frame that does not replay
    for i in range(whole):
        at = WAL_HEADER + i * size
        _, commit, f1, f2, k0, k1 = struct.unpack(">6I", blob[at: at + FRAME_HEADER])
        if (f1, f2) != (salt1, salt2):
            if f1 == salt1 or f2 == salt2:  # one salt right, one wrong: a damaged frame, not a stale one
                why, stop = f"frame {i + 1} is damaged (its salt)", i
            break
        s0, s1 = _checksum(blob[at: at + 8], big, s0, s1)
        s0, s1 = _checksum(blob[at + FRAME_HEADER: at + size], big, s0, s1)
        if (s0, s1) != (k0, k1):
            why, stop = f"frame {i + 1} fails its checksum", i
            break
        good += 1
        if commit:
            replayed = good
    else:
        if (len(blob) - WAL_HEADER) % size:
            why = f"it is cut mid-frame ({len(blob)} bytes)"
            good += 1  # the cut frame, lost
    if why is None:
        return WalReport(good, replayed)
    return WalReport(good + _later_frames(blob, stop, whole, size, salt1, salt2), replayed, why)


def _later_frames(blob: bytes, start: int, whole: int, size: int, salt1: int, salt2: int) -> int:
    """Frames of the current generation from the first bad one on (the bad one counted even when its salt is)."""
    n = 1 if start < whole else 0
    for i in range(start + 1, whole):
        at = WAL_HEADER + i * size
        if struct.unpack(">2I", blob[at + 8: at + 16]) == (salt1, salt2):
            n += 1
    return n


def _stamp(wal: Path) -> tuple[int, int]:
    try:
        st = wal.stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def wal_damage(path: Path, intact_end: float) -> str | None:
    """A sentence naming a log that does not replay whole and the seconds it costs; None when it does."""
    wal = Path(f"{path}-wal")
    for _ in range(RECHECKS):
        before = _stamp(wal)
        report = read_wal(wal)
        if report.why is None:
            return None
        time.sleep(RECHECK_S)
        if _stamp(wal) == before:
            break  # the log did not change: the damage is real, not a frame being written by a live recorder
    else:
        return None  # a recorder is still writing it: judged once it stops
    lost = max(0, report.frames - report.replayed)
    last_write = wal.stat().st_mtime
    until = f" to about {iso(last_write)} (the log's last write)" if last_write > intact_end + 1 else ""
    intact = f"intact up to {iso(intact_end)}; the seconds after it" if intact_end > 0 else "intact nowhere; all"
    return (f"{wal}: the write-ahead log does not replay whole: {report.why}; {lost} of {report.frames} "
            f"frame(s) lost. The recording is {intact}{until} are missing")
