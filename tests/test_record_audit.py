"""The black box keeps every quota change: `surgewatch init` seeds its tiers within a millisecond or two (tiers
written in the same millisecond share one audit stream id), and the recording lists every one, in
`replay --info` and in the replayed events."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from quotas.store import SEED_TIERS
from sim.valkey import ValkeyProcess
from surgewatch.recording.reader import Recording
from surgewatch.settings import Settings
from tests.conftest import ROOT
from tui.app import create_app
from tui.replay import Player
from tui.testing import wait_until
from tui.widgets.events_log import EventLog

SURGEWATCH = [sys.executable, "-m", "surgewatch.cli"]
INIT_TIERS = len(SEED_TIERS)


def _count(path: Path, sql: str) -> int:
    """A count read from the recording while the recorder writes it (WAL readers never block it)."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.DatabaseError:
        return 0  # not created yet


def _wait_for(path: Path, sql: str, want: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s  # a hang guard, not a timing assertion
    got = _count(path, sql)
    while got < want and time.monotonic() < deadline:
        time.sleep(0.2)
        got = _count(path, sql)
    return got


def test_init_recorded_live_keeps_all_seven_changes_in_info_and_replayed_events(
    tmp_path: Path, valkey: ValkeyProcess
) -> None:
    """`record` running while `init` seeds every default tier: `replay --info` lists one change per tier."""
    path = tmp_path / "init.sqlite"
    recorder = subprocess.Popen([*SURGEWATCH, "--redis", valkey.url, "record", str(path), "--no-local"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        subscribed = ("SELECT count(*) FROM chunks JOIN streams ON streams.id = chunks.stream "
                      "WHERE streams.name = 'subscription'")
        assert _wait_for(path, subscribed, 1) >= 1, "the recorder never subscribed to the change feed"
        init = subprocess.run([*SURGEWATCH, "--redis", valkey.url, "init"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert init.returncode == 0, init.stderr
        _wait_for(path, "SELECT count(*) FROM audit", INIT_TIERS)
    finally:
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(30)
    info = subprocess.run([*SURGEWATCH, "replay", str(path), "--info", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    changes = json.loads(info.stdout)["quota_changes"]
    tiers = [c["tier"] for c in changes]
    assert len(changes) == INIT_TIERS and len(set(tiers)) == INIT_TIERS and {"plus", "pro"} <= set(tiers)
    assert {c["actor"] for c in changes} == {"surgewatch init"}
    text = subprocess.run([*SURGEWATCH, "replay", str(path), "--info"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout
    assert f"quota changes: {INIT_TIERS}" in text and "  " in text and " pro v1 by surgewatch init" in text


async def test_replayed_events_hold_every_tier_of_one_millisecond(tmp_path: Path, valkey: ValkeyProcess) -> None:
    """The replayed console's events panel shows the init entry of every tier, not one per shared id."""
    path = tmp_path / "init.sqlite"
    recorder = subprocess.Popen([*SURGEWATCH, "--redis", valkey.url, "record", str(path), "--no-local"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subscribed = ("SELECT count(*) FROM chunks JOIN streams ON streams.id = chunks.stream "
                      "WHERE streams.name = 'subscription'")
        assert _wait_for(path, subscribed, 1) >= 1
        subprocess.run([*SURGEWATCH, "--redis", valkey.url, "init"], cwd=ROOT, capture_output=True, timeout=60,
                       check=True)
        _wait_for(path, "SELECT count(*) FROM audit", INIT_TIERS)
        time.sleep(1.5)  # one more second recorded after the changes, so the replay steps over them
    finally:
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(30)
    rec = Recording(path)
    ids = {e.id for _, e in rec.audit()}
    assert len(ids) < INIT_TIERS  # the drill's premise: tiers written in one millisecond share stream ids
    app = create_app(Settings(), replay=Player(rec), tick_s=None)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("shift+right")

            def inits() -> set[str]:
                texts = app.overview.query_one("#events", EventLog).texts
                return {m.group(1) for t in texts if (m := re.search(r"quota (\S+) v1 by surgewatch init", t))}

            await wait_until(pilot, lambda: len(inits()) == INIT_TIERS, what="every tier's init entry")
            assert {"plus", "pro"} <= inits()
    finally:
        rec.close()
