"""The recording file: changes not repeats, the state at any time, --keep, and bad files refused (exit 2).

The recorder here is the real one (writer thread, SQLite) with an injected clock, fed the frozen
readings the snapshot tests use, changed the way collectors change them."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collectors.runner import Reading
from collectors.samples import FleetSample, Source
from surgewatch.recording.reader import Recording
from surgewatch.recording.writer import Recorder
from tests.conftest import ROOT
from tui.testing import FROZEN_NOW, frozen_readings

SURGEWATCH = [sys.executable, "-m", "surgewatch.cli"]


def hotter(readings: dict[Source, Reading[Any]], k: int) -> dict[Source, Reading[Any]]:
    """Second k: node 0's page changes (its first GPU warms by k degrees); the other pages are the same objects."""
    fleet = readings[Source.FLEET]
    assert isinstance(fleet.sample, FleetSample)
    n0 = fleet.sample.nodes[0]
    gpus = (dataclasses.replace(n0.gpus[0], temp_c=40.0 + k), *n0.gpus[1:])
    nodes = (dataclasses.replace(n0, gpus=gpus, checked_at=FROZEN_NOW + k), *fleet.sample.nodes[1:])
    sample = dataclasses.replace(fleet.sample, taken_at=FROZEN_NOW + k, nodes=nodes)
    return {**readings, Source.FLEET: dataclasses.replace(fleet, sample=sample, sampled_at=FROZEN_NOW + k)}


def record(path: Path, seconds: int, *, keep_s: float | None = None) -> list[dict[Source, Reading[Any]]]:
    now = [FROZEN_NOW]
    base = frozen_readings()
    rec = Recorder(path, keep_s=keep_s, clock=lambda: now[0], flush_s=0.01)
    fed = []
    try:
        for k in range(seconds):
            now[0] = FROZEN_NOW + k
            readings = hotter(base, k)
            for source, r in readings.items():
                rec.reading(source, r)
            fed.append(readings)
            if k % 600 == 599:
                rec.flush()  # the writer thread would have; keeps the queue small in this fast loop
    finally:
        rec.close()
    return fed


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SURGEWATCH, "replay", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_unchanged_values_are_not_rows_and_every_second_reads_back_exactly(tmp_path: Path) -> None:
    """60 s of 4 sources: only node 0's page and the fleet row change each second; the state at each
    second equals what was fed, and unchanged pages come back as the same objects (the console skips them)."""
    path = tmp_path / "r.sqlite"
    fed = record(path, 60)
    rec = Recording(path)
    rows = dict(rec._q("SELECT s.name, count(*) FROM chunks c JOIN streams s ON s.id = c.stream GROUP BY s.name"))
    assert rows["reading:host"] == rows["reading:traffic"] == rows["reading:gpus"] == 1
    assert rows["page:http://10.0.0.2:9400/metrics"] == 1
    assert rows["page:http://10.0.0.1:9400/metrics"] == rows["reading:fleet"] == 60
    for k in (0, 1, 30, 59):
        assert rec.state_at(FROZEN_NOW + k + 0.5).readings == fed[k]
    a = rec.state_at(FROZEN_NOW + 10).readings[Source.FLEET].sample
    b = rec.state_at(FROZEN_NOW + 11).readings[Source.FLEET].sample
    assert a.nodes[2].gpus is b.nodes[2].gpus  # type: ignore[union-attr]  # both samples hold nodes: recorded above
    assert rec.start == FROZEN_NOW and rec.end == FROZEN_NOW + 59


def test_keep_drops_old_data_but_keeps_the_state_at_the_new_start(tmp_path: Path) -> None:
    """--keep 1h on a 2-hour recording: data older than an hour is gone, the rest reads back exactly,
    including values that last changed before the cut (a page unchanged for 2 hours)."""
    path = tmp_path / "r.sqlite"
    fed = record(path, 7200, keep_s=3600)
    rec = Recording(path)
    assert rec.start >= FROZEN_NOW + 7200 - 3600 - 61  # pruned once a minute
    assert rec._q("SELECT count(*) FROM chunks WHERE at < ?", (rec.start,)).fetchone()[0] < 20
    for k in (7199 - 3500, 7199):
        assert rec.state_at(FROZEN_NOW + k).readings == fed[k]
    info = replay(str(path), "--info")
    assert info.returncode == 0 and "older data dropped before" in info.stdout


def test_a_truncated_empty_or_foreign_file_is_refused_with_exit_2(tmp_path: Path) -> None:
    """Each bad file gets one clear line on stderr naming the problem, exit 2, no traceback."""
    good = tmp_path / "good.sqlite"
    record(good, 30)
    cut = tmp_path / "cut.sqlite"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("incident notes, not a recording\n" * 10)
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t (x)")
    cases = {cut: "truncated", empty: "empty file", text: "not an SQLite database",
             foreign: "not a surgewatch recording", tmp_path / "missing.sqlite": "no such file"}
    for path, words in cases.items():
        for args in (["--info"], ["--json"], []):
            proc = replay(str(path), *args)
            assert proc.returncode == 2, (path, args, proc.stderr)
            assert words in proc.stderr and "Traceback" not in proc.stderr, (path, proc.stderr)
    assert replay(str(good), "--info").returncode == 0


@pytest.mark.parametrize(("args", "words"), [
    (["--at", "25:00:00"], "hours 0-23"),
    (["--at", "+2h"], "outside the recording"),
    (["--at", "soon"], "invalid --at"),
    (["--json", "--every", "0"], "invalid --every"),
    (["--json", "--every", "fast"], "invalid duration"),
    (["--json", "--from", "+20s", "--to", "+10s"], "before --from"),
    (["--at", "+1s", "--every", "5"], "--at prints one document"),
])
def test_bad_times_are_refused_with_exit_2(tmp_path: Path, args: list[str], words: str) -> None:
    path = tmp_path / "r.sqlite"
    record(path, 30)
    proc = replay(str(path), *args)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_json_gives_one_document_per_second_or_every_s_with_snapshot_keys(tmp_path: Path) -> None:
    """--json: one document per recorded second with snapshot's keys (`redis` too), `taken_at` the recorded
    time; --every 10; --at exactly one."""
    import json

    path = tmp_path / "r.sqlite"
    record(path, 30)
    every_s = [json.loads(x) for x in replay(str(path), "--json").stdout.splitlines()]
    assert len(every_s) == 30
    assert {tuple(d) for d in every_s} == {
        ("taken_at", "host", "errors", "nodes", "gpus", "tiers", "redis", "unknown_tiers", "serving")}
    assert {json.dumps(d["redis"]) for d in every_s} == {'{"status": "ok", "error": null}'}  # as snapshot --json
    tens = [json.loads(x) for x in replay(str(path), "--json", "--every", "10").stdout.splitlines()]
    assert [d["taken_at"] for d in tens] == [every_s[0]["taken_at"], every_s[10]["taken_at"], every_s[20]["taken_at"]]
    (one,) = [json.loads(x) for x in replay(str(path), "--at", "+5s").stdout.splitlines()]
    assert one == every_s[5]
    assert one["gpus"][2]["temp_c"] == 45.0  # node 0's first GPU, warmed 5 degrees by second 5


async def test_the_console_records_what_it_renders_from(tmp_path: Path) -> None:
    """`surgewatch --record FILE`: the console's readings land in the file as it rendered them."""
    from surgewatch.settings import Settings
    from tui.app import create_app
    from tui.testing import load_frozen, settle

    path = tmp_path / "console.sqlite"
    readings = frozen_readings()
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"), sources=False, subscribe=False,
                     clock=lambda: FROZEN_NOW, tick_s=None, recorder=Recorder(path, clock=lambda: FROZEN_NOW))
    async with app.run_test(size=(120, 40)) as pilot:
        load_frozen(app, readings)
        await settle(pilot)
        assert len(app.state.rows) == 34
    rec = Recording(path)  # the app closed the recorder when it ended
    assert rec.state_at(FROZEN_NOW).readings == readings


def test_a_recording_written_before_tier_keyed_audit_rows_is_rekeyed_on_append(tmp_path: Path) -> None:
    """A file whose audit table is keyed by entry id alone and has no checksums (as written before): appending
    two tiers' entries of one id keeps both, the old rows still read back, and the file verifies."""
    from quotas.store import AuditEntry

    path = tmp_path / "old.sqlite"
    record(path, 5)
    with sqlite3.connect(path) as conn:  # the schema as it was
        conn.execute("DROP TABLE audit")
        conn.execute("CREATE TABLE audit (id TEXT PRIMARY KEY, at REAL NOT NULL, tier TEXT NOT NULL, "
                     "actor TEXT NOT NULL, data BLOB NOT NULL)")
        conn.execute("ALTER TABLE chunks DROP COLUMN crc")
    before = Recording(path)
    old_state = before.state_at(FROZEN_NOW + 4).readings
    before.close()

    def entry(tier: str) -> AuditEntry:
        return AuditEntry(id="1796621551562-0", tier=tier, actor="surgewatch init", at=FROZEN_NOW + 6, version=1,
                          old=None, new=None, reason="seed default quota")

    rec = Recorder(path, clock=lambda: FROZEN_NOW + 6, flush_s=0.01)
    try:
        rec.quota_changed([entry("plus"), entry("pro")])
    finally:
        rec.close()
    after = Recording(path)
    try:
        assert sorted(e.tier for _, e in after.audit()) == ["plus", "pro"]
        assert after.state_at(FROZEN_NOW + 4).readings == old_state
    finally:
        after.close()
