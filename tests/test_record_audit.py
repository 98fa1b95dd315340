"""The black box keeps every quota change: audit entries of different tiers written in the same millisecond
share one stream id (`init` often does it; an import or the guard may), and the recording lists every one,
in `replay --info` and in the replayed events. `init` runs for real; two entries with one explicit id make
the shared id certain whatever the machine's speed."""

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
SHARED = ("plus", "pro")


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


def _same_millisecond(url: str) -> None:
    """Two tiers changed in one millisecond, as an import or the guard may: their entries get one explicit id."""
    import redis

    from quotas.keys import Keys

    keys = Keys()
    r = redis.Redis.from_url(url)
    try:
        ms = int(r.time()[0]) * 1000 + 5000  # after every id init wrote
        for tier in SHARED:
            r.xadd(keys.audit(tier), {"actor": "importer", "at": str(ms), "tier": tier, "version": "2", "old": "",
                                      "new": "", "reason": "same millisecond", "kind": "set",
                                      "at_us": str(ms * 1000)}, id=f"{ms}-0")
            r.publish(keys.events, json.dumps({"tier": tier, "version": 2, "actor": "importer", "kind": "set"}))
    finally:
        r.close()


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
        _same_millisecond(valkey.url)
        _wait_for(path, "SELECT count(*) FROM audit", INIT_TIERS + len(SHARED))
    finally:
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(30)
    info = subprocess.run([*SURGEWATCH, "replay", str(path), "--info", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    changes = json.loads(info.stdout)["quota_changes"]
    inits = {c["tier"] for c in changes if c["actor"] == "surgewatch init"}
    assert len(changes) == INIT_TIERS + len(SHARED) and inits == set(SEED_TIERS)
    assert sorted(c["tier"] for c in changes if c["actor"] == "importer") == sorted(SHARED)
    text = subprocess.run([*SURGEWATCH, "replay", str(path), "--info"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60).stdout
    assert f"quota changes: {INIT_TIERS + len(SHARED)}" in text and " pro v2 by importer" in text


async def test_replayed_events_hold_every_tier_of_one_millisecond(tmp_path: Path, valkey: ValkeyProcess) -> None:
    """The replayed console's events panel shows both tiers' entries of one shared id, not one of them."""
    path = tmp_path / "init.sqlite"
    recorder = subprocess.Popen([*SURGEWATCH, "--redis", valkey.url, "record", str(path), "--no-local"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subscribed = ("SELECT count(*) FROM chunks JOIN streams ON streams.id = chunks.stream "
                      "WHERE streams.name = 'subscription'")
        assert _wait_for(path, subscribed, 1) >= 1
        subprocess.run([*SURGEWATCH, "--redis", valkey.url, "init"], cwd=ROOT, capture_output=True, timeout=60,
                       check=True)
        _same_millisecond(valkey.url)
        _wait_for(path, "SELECT count(*) FROM audit", INIT_TIERS + len(SHARED))
        time.sleep(1.5)  # one more second recorded after the changes, so the replay steps over them
    finally:
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(30)
    rec = Recording(path)
    assert len({e.id for _, e in rec.audit() if e.actor == "importer"}) == 1  # one id, two tiers
    app = create_app(Settings(), replay=Player(rec), tick_s=None)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("shift+right")

            def shared() -> set[str]:
                texts = app.overview.query_one("#events", EventLog).texts
                return {m.group(1) for t in texts if (m := re.search(r"quota (\S+) v2 by importer", t))}

            await wait_until(pilot, lambda: shared() == set(SHARED), what="both entries of the shared id")
    finally:
        rec.close()
