"""A damaged black box never prints a wrong value: one byte flipped in a recording refuses it (exit 2, the
damage named); a cut or damaged write-ahead log replays its intact part exactly and names the seconds lost."""

from __future__ import annotations

import json
import shutil
import sqlite3
import struct
import subprocess
from pathlib import Path
from typing import Any

from surgewatch.recording.writer import Recorder
from tests.conftest import ROOT
from tests.test_recording_file import SURGEWATCH, hotter
from tui.testing import FROZEN_NOW, frozen_readings

SECONDS = 30


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SURGEWATCH, "replay", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def docs(out: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in out.splitlines()]


def record(path: Path, *, copy_live_to: Path | None = None, checkpoint_at: int | None = None) -> None:
    """30 recorded seconds, one commit each (a GPU warming a degree a second); `copy_live_to`: a copy of the
    file and its write-ahead log taken while the recorder still holds them (what a crash leaves);
    `checkpoint_at`: the second after which the log is checkpointed and restarted (older frames stay behind)."""
    now = [FROZEN_NOW]
    base = frozen_readings()
    rec = Recorder(path, clock=lambda: now[0], flush_s=3600)
    try:
        for k in range(SECONDS):
            now[0] = FROZEN_NOW + k
            for source, r in hotter(base, k).items():
                rec.reading(source, r)
            rec.flush()
            if k == checkpoint_at:  # another connection checkpoints: the next commit restarts the log at its start
                with sqlite3.connect(path) as other:
                    other.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if copy_live_to is not None:
            shutil.copy(path, copy_live_to)
            shutil.copy(f"{path}-wal", f"{copy_live_to}-wal")
    finally:
        rec.close()


def flip_time_of_one_row(path: Path, second: int) -> None:
    """Flip one byte of the stored time of the fleet reading of `second`, wherever SQLite keeps it (the row
    and its indexes), so that row moves by a few seconds: a valid file that would replay a wrong value."""
    with sqlite3.connect(path) as conn:
        (at,) = conn.execute("SELECT at FROM chunks JOIN streams ON streams.id = chunks.stream "
                             "WHERE streams.name = 'reading:fleet' AND at = ?", (FROZEN_NOW + second,)).fetchone()
    blob = path.read_bytes()
    # SQLite keeps a whole-number REAL as an integer in the record: a 4-byte one for epoch seconds
    packed = struct.pack(">i", int(at)) if float(at).is_integer() else struct.pack(">d", at)
    assert blob.count(packed) >= 1
    flipped = packed[:-1] + bytes([packed[-1] ^ 0x04])  # +-4 s (the last mantissa bytes, for a double)
    if len(packed) == 8:
        flipped = packed[:4] + bytes([packed[4] ^ 0x01]) + packed[5:]
    path.write_bytes(blob.replace(packed, flipped))


def test_a_flipped_byte_in_a_stored_time_refuses_the_recording_and_names_the_row(tmp_path: Path) -> None:
    """The drill: a byte of a row's time flipped; replay exits 2 naming the stream and time, and prints nothing."""
    path = tmp_path / "r.sqlite"
    record(path)
    assert len(docs(replay(str(path), "--json").stdout)) == SECONDS
    flip_time_of_one_row(path, 15)
    for args in (("--json",), ("--info",), ("--at", "+20s")):
        proc = replay(str(path), *args)
        assert proc.returncode == 2 and proc.stdout == "", args
        assert "damaged recording" in proc.stderr and "checksum" in proc.stderr and "reading:fleet" in proc.stderr


def test_a_byte_flipped_in_the_middle_never_prints_a_wrong_value(tmp_path: Path) -> None:
    """Whatever the byte in the middle of the file held: exit 2 naming the damage, or exactly the recorded values."""
    path = tmp_path / "r.sqlite"
    record(path)
    good = replay(str(path), "--json").stdout
    blob = bytearray(path.read_bytes())
    for offset in (len(blob) // 2, len(blob) // 3, 2 * len(blob) // 3):
        damaged = tmp_path / f"flip{offset}.sqlite"
        copy = bytearray(blob)
        copy[offset] ^= 0xFF
        damaged.write_bytes(bytes(copy))
        proc = replay(str(damaged), "--json")
        if proc.returncode == 0:
            assert proc.stdout == good, offset  # the byte was unused space: nothing changed
        else:
            assert proc.returncode == 2 and proc.stdout == "" and "damaged recording" in proc.stderr, offset


def _live_copy(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    path, copy = tmp_path / "r.sqlite", tmp_path / "crashed.sqlite"
    record(path, copy_live_to=copy)
    intact = tmp_path / "intact.sqlite"
    shutil.copy(copy, intact)
    shutil.copy(f"{copy}-wal", f"{intact}-wal")
    whole = replay(str(intact), "--json")
    assert whole.returncode == 0, whole.stderr
    return copy, docs(whole.stdout)


def _assert_intact_prefix(proc: subprocess.CompletedProcess[str], whole: list[dict[str, Any]]) -> None:
    assert proc.returncode == 2
    assert "write-ahead log does not replay whole" in proc.stderr and "are missing" in proc.stderr
    printed = docs(proc.stdout)
    assert 0 < len(printed) < len(whole)
    by_time = {d["taken_at"]: d for d in whole}
    assert all(d == by_time[d["taken_at"]] for d in printed)  # every printed value is the recorded one


def test_a_cut_write_ahead_log_replays_its_intact_part_and_names_the_missing_seconds(tmp_path: Path) -> None:
    """A crashed recorder's log cut at 60 %: the intact seconds print exactly, then exit 2 names what is lost."""
    copy, whole = _live_copy(tmp_path)
    assert len(whole) == SECONDS
    wal = Path(f"{copy}-wal")
    with wal.open("r+b") as f:
        f.truncate(wal.stat().st_size * 6 // 10)
    _assert_intact_prefix(replay(str(copy), "--json"), whole)
    info = replay(str(copy), "--info", "--json")
    assert info.returncode == 2 and "write-ahead log" in json.loads(info.stdout)["damage"]


def test_a_damaged_write_ahead_log_replays_its_intact_part_and_names_the_frame(tmp_path: Path) -> None:
    """A byte flipped at 70 % of the log: the frames before it replay exactly; the bad frame is named."""
    copy, whole = _live_copy(tmp_path)
    wal = Path(f"{copy}-wal")
    blob = bytearray(wal.read_bytes())
    blob[len(blob) * 7 // 10] ^= 0xFF
    wal.write_bytes(bytes(blob))
    proc = replay(str(copy), "--json")
    _assert_intact_prefix(proc, whole)
    assert "fails its checksum" in proc.stderr or "is damaged" in proc.stderr


def test_a_restarted_log_with_stale_frames_behind_is_whole(tmp_path: Path) -> None:
    """A log restarted after a checkpoint keeps older frames past its end (stale by design): not damage."""
    path, copy = tmp_path / "r.sqlite", tmp_path / "crashed.sqlite"
    record(path, copy_live_to=copy, checkpoint_at=20)
    proc = replay(str(copy), "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(docs(proc.stdout)) == SECONDS
