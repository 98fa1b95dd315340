"""Record the demo for real (headless, real time, a quota cut in the middle), then replay it: as JSON,
and in the console driven by keys. A live `surgewatch record --json` equals its replay second by
second, and a recorder SIGKILLed mid-run leaves a file that replays."""

from __future__ import annotations

import calendar
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.runner import WorldThread
from sim.world import DemoConfig, QuotaChange
from surgewatch.recording.reader import Recording
from surgewatch.settings import Settings
from tests.conftest import ROOT
from tui.app import create_app
from tui.replay import Player
from tui.screens.replay import GotoPrompt, clock_text
from tui.testing import screen_text, wait_until
from tui.widgets.events_log import EventLog

SURGEWATCH = [sys.executable, "-m", "surgewatch.cli"]
CUT_AT = 8
GPUS = 2 * 4


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SURGEWATCH, "replay", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def docs(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(x) for x in proc.stdout.splitlines()]


def tier(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in doc["tiers"] if t["tier"] == name)


def events(app: Any) -> list[str]:
    return list(app.overview.query_one("#events", EventLog).texts)


def mean_temp(doc: dict[str, Any]) -> float:
    temps = [g["temp_c"] for g in doc["gpus"] if g["temp_c"] is not None]
    return sum(temps) / len(temps)


@pytest.fixture(scope="module")
def demo_recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """`surgewatch demo --headless --record FILE`: 16 real seconds, free cut to 3/1d at second 8."""
    path = tmp_path_factory.mktemp("rec") / "demo.sqlite"
    proc = subprocess.run(
        [*SURGEWATCH, "demo", "--headless", "--record", str(path), "--duration", "16", "--nodes", "2",
         "--gpus-per-node", "4", "--seed", "3", "--quota-change", f"{CUT_AT}:free:3/1d"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    yield path, [json.loads(x) for x in proc.stdout.splitlines()]


def test_the_quota_cut_appears_at_its_second_with_its_actor(demo_recording: tuple[Path, list[Any]]) -> None:
    """--info names who cut which quota when; --json shows free at 20/1d before that second and 3/1d after,
    every GPU of the fleet, and the rejections that the cut causes."""
    path, ticks = demo_recording
    assert [t["t"] for t in ticks] == list(range(1, 17))  # the live run's own lines are unchanged
    info = json.loads(replay(str(path), "--info", "--json").stdout)
    (cut,) = [c for c in info["quota_changes"] if c["actor"] == "demo-operator"]
    assert (cut["tier"], cut["old"], cut["new"]) == ("free", "20/1d", "3/1d")
    assert info["gpus"] == GPUS and info["nodes"] == 2 and "free" in info["tiers"]
    assert set(info["sources"]) >= {"fleet", "traffic"}
    seconds = docs(replay(str(path), "--json"))
    before = [d for d in seconds if d["taken_at"] < cut["at"]]
    after = [d for d in seconds if d["taken_at"] > cut["at"]]
    assert before and after
    assert {tier(d, "free")["limit"] for d in before if d["tiers"]} == {20}
    assert tier(after[-1], "free")["limit"] == 3 and tier(after[-1], "free")["rejected_rps"] > 0
    assert len(seconds[-1]["gpus"]) == GPUS
    (at_cut,) = docs(replay(str(path), "--at", cut["at"]))
    assert at_cut["taken_at"] == cut["at"]


def test_a_time_before_the_end_is_taken_as_the_readme_writes_it(demo_recording: tuple[Path, list[Any]]) -> None:
    """`replay FILE --at -5s` (a separate word, as documented) is the second 5 s before the end, as `--at=-5s`."""
    path, _ = demo_recording
    seconds = docs(replay(str(path), "--json"))
    (spaced,) = docs(replay(str(path), "--at", "-5s"))
    (joined,) = docs(replay(str(path), "--at=-5s"))
    assert spaced == joined and spaced["taken_at"] < seconds[-1]["taken_at"]
    tail = docs(replay(str(path), "--json", "--from", "-5s"))
    assert tail == docs(replay(str(path), "--json", "--from=-5s")) and tail[-1] == seconds[-1]


def test_live_record_json_equals_replay_and_a_sigkilled_recorder_leaves_a_file_that_replays(tmp_path: Path) -> None:
    """`surgewatch record FILE --json` against the demo world prints each second what it recorded; after
    SIGKILL mid-run, `replay --at` gives those same documents (tier rates, GPU count, mean temperature...)."""
    path = tmp_path / "live.sqlite"
    world = WorldThread(DemoConfig(nodes=2, gpus_per_node=4, seed=5, speed=1.0,
                                   quota_changes=(QuotaChange(5, "free", 3, 86400),)))
    world.start()
    proc = subprocess.Popen(
        [*SURGEWATCH, "--redis", world.redis_url, "--nodes", ",".join(world.node_urls), "--interval", "1",
         "record", str(path), "--json", "--no-local"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    printed: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
        while len(printed) < 12 and time.monotonic() < deadline:
            printed.append(json.loads(proc.stdout.readline()))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        world.stop()
    assert len(printed) == 12
    rec = Recording(path)  # readable after SIGKILL
    assert rec.end >= calendar.timegm(time.strptime(printed[-1]["taken_at"], "%Y-%m-%dT%H:%M:%SZ")) - 1
    rec.close()
    full = [d for d in printed if len(d["gpus"]) == GPUS and d["tiers"]]
    assert len(full) >= 6
    for live in full[:-2]:  # the last second may be the one SIGKILL cost
        (replayed,) = docs(replay(str(path), "--at", live["taken_at"]))
        assert replayed == live
        assert mean_temp(replayed) == mean_temp(live)
    limits = [tier(d, "free")["limit"] for d in full]
    assert limits[0] == 20 and limits[-1] == 3  # the cut, live and replayed


async def test_console_replay_steps_jumps_plays_and_shows_the_recorded_time(
    demo_recording: tuple[Path, list[Any]],
) -> None:
    """The same console, read-only, on the recording: the REPLAY banner shows the recorded time; → steps one
    second, ⇧→ a minute (clamped at the end), g jumps to the cut's second (its audit line and 3/1d on
    screen), ⇧← back to the start (20/1d again), space plays, 3 plays at 60x to the end."""
    path, _ = demo_recording
    rec = Recording(path)
    (cut,) = [e for _, e in rec.audit() if e.actor == "demo-operator"]
    player = Player(rec)
    app = create_app(Settings(), replay=player, tick_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        start = player.position
        await wait_until(pilot, lambda: "REPLAY" in screen_text(app) and clock_text(start) in screen_text(app),
                         what="the REPLAY banner with the start time")
        assert app.read_only and app.session.store is None
        await pilot.press("right")
        assert player.position == start + 1 and not player.playing
        await wait_until(pilot, lambda: clock_text(start + 1) in screen_text(app), what="the time after one step")
        await pilot.press("right", "right", "right")
        assert player.position == start + 4
        await wait_until(pilot, lambda: len(app.state.rows) == GPUS, what="the recorded GPUs (scraped by then)")
        await pilot.press("shift+right")
        assert player.position == player.end

        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(app.screen, GotoPrompt), what="the go-to prompt")
        target = time.strftime("%H:%M:%S", time.gmtime(cut.at + 2))
        await pilot.press(*target, "enter")
        await wait_until(pilot, lambda: abs(player.position - (int(cut.at) + 2)) < 1, what="the jump")
        await wait_until(pilot, lambda: app.state.quotas.get("free") is not None
                         and app.state.quotas["free"].spec == "3/1d", what="free at 3/1d")
        await wait_until(pilot, lambda: any("by demo-operator" in t for t in events(app)), what="the cut event")
        assert "3/1d" in screen_text(app)

        await pilot.press("shift+left")
        assert player.position == player.start
        await pilot.press("right", "right", "right", "right")
        await wait_until(pilot, lambda: app.state.quotas.get("free") is not None
                         and app.state.quotas["free"].spec == "20/1d", what="free back at 20/1d")
        assert not any("by demo-operator" in t for t in events(app))

        await pilot.press("space")
        assert player.playing
        await wait_until(pilot, lambda: player.position > player.start + 0.5, what="playing moves on")
        await pilot.press("3")
        assert player.speed == 60
        await wait_until(pilot, lambda: not player.playing and player.position == player.end, timeout=20,
                         what="60x reaches the end and stops")
    rec.close()
