"""Replay reads like the live console did: it opens where the data starts, a jump into an incident says when the
incident really began, the footer offers only keys that work, and events come in time order however late
they arrive."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from collectors.runner import Reading
from collectors.samples import FleetSample, Source
from quotas.store import AuditEntry
from surgewatch.incidents import clock_text
from surgewatch.recording.reader import Recording
from surgewatch.recording.writer import Recorder
from surgewatch.settings import Settings
from tui.app import create_app
from tui.messages import QuotaChanged
from tui.replay import Player
from tui.screens.replay import GotoPrompt
from tui.testing import FROZEN_NOW, _q, frozen_readings, screen_text, wait_until
from tui.widgets.events_log import EventLog, IncidentBar

T0 = float(FROZEN_NOW)
DATA_FROM_S = 3  # the recorder starts; the first readings come 3 s later
THROTTLE_FROM_S = 20  # node 0's GPUs start throttling here, one more every 5 s
SECONDS = 60


def throttling(k: int) -> int:
    return 0 if k < THROTTLE_FROM_S else min(8, (k - THROTTLE_FROM_S) // 5 + 1)


def second(k: int) -> dict[Source, Reading[Any]]:
    """The readings of second k: every GPU cool, the first throttling(k) GPUs of node 0 thermally throttled."""
    now = T0 + k
    readings = frozen_readings(now)
    fleet = readings[Source.FLEET].sample
    assert isinstance(fleet, FleetSample)
    nodes = []
    for n, node in enumerate(fleet.nodes):
        gpus = tuple(dataclasses.replace(g, throttle=("thermal",) if n == 0 and i < throttling(k) else (), xid=None,
                                         status="ok") for i, g in enumerate(node.gpus))
        nodes.append(dataclasses.replace(node, gpus=gpus, checked_at=now))
    sample = dataclasses.replace(fleet, taken_at=now, nodes=tuple(nodes))
    return {**readings, Source.FLEET: dataclasses.replace(readings[Source.FLEET], sample=sample, sampled_at=now)}


def entry(at: float, version: int) -> AuditEntry:
    return AuditEntry(f"{int(at * 1000)}-0", "free", "alice", at, version, _q("free", 20, 86400),
                      _q("free", 3, 86400, version=version), "surge")


def make_recording(path: Path) -> Recording:
    now = [T0]
    rec = Recorder(path, clock=lambda: now[0], flush_s=0.01)
    try:
        rec.subscription(True)  # the recorder's first row: before any collector answered
        for k in range(DATA_FROM_S, SECONDS):
            now[0] = T0 + k
            for source, r in second(k).items():
                rec.reading(source, r)
            if k == 10:
                rec.quota_changed([entry(T0 + k, 8)])
    finally:
        rec.close()
    return Recording(path)


def footer_text(app: Any) -> str:
    return screen_text(app).splitlines()[-1]


async def test_replay_opens_on_the_first_second_with_data(tmp_path: Path) -> None:
    """The recording starts 3 s before its first readings: replay opens there, GPUs and host on screen."""
    rec = make_recording(tmp_path / "r.sqlite")
    assert rec.start == T0
    player = Player(rec)
    assert player.position == T0 + DATA_FROM_S
    app = create_app(Settings(), replay=player, tick_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: len(app.state.rows) == 4 * 8 + 2, what="every recorded GPU at the opening")
        assert "no data yet" not in screen_text(app)
    rec.close()


async def test_a_jump_into_throttling_says_since_when_it_really_lasts(tmp_path: Path) -> None:
    """g to a second in the middle of the incident: it reads since its first throttled second, with its peak."""
    rec = make_recording(tmp_path / "r.sqlite")
    player = Player(rec)
    app = create_app(Settings(), replay=player, tick_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        bar = app.overview.query_one(IncidentBar)
        for how in ("forward (the changes in between played)", "back (a fresh console at the target)"):
            if how.startswith("back"):
                await pilot.press("shift+right")  # to the end: the jump to 45 s is then a jump back
                await wait_until(pilot, lambda: player.position == player.end, what="the end")
            await pilot.press("g")
            await wait_until(pilot, lambda: isinstance(app.screen, GotoPrompt), what="the go-to prompt")
            await pilot.press(*time.strftime("%H:%M:%S", time.gmtime(T0 + 45)), "enter")
            await wait_until(pilot, lambda: player.position == T0 + 45, what=f"the jump {how}")
            await wait_until(pilot, lambda: any("throttling" in t and "6/" in t for t in bar.texts),
                             what=f"the incident line after the jump {how}")
            (line,) = [t for t in bar.texts if "throttling" in t]
            assert f"since {clock_text(T0 + THROTTLE_FROM_S)}" in line, (how, line)
            assert f"peak {throttling(45)}" in line, (how, line)
    rec.close()


async def test_replay_footer_offers_only_keys_that_work(tmp_path: Path) -> None:
    """No History (it needs Redis, which a replay has not) among the replay's keys; the replay's own are there."""
    rec = make_recording(tmp_path / "r.sqlite")
    app = create_app(Settings(), replay=Player(rec), tick_s=None)
    async with app.run_test(size=(200, 48)) as pilot:
        await wait_until(pilot, lambda: "Go to" in footer_text(app), what="the replay's footer")
        assert "History" not in footer_text(app)
        await pilot.press("h")
        await pilot.pause()
        assert app.screen is app.overview  # h does nothing: no screen answering "No Redis configured"
    rec.close()


async def test_events_stay_in_time_order_when_older_news_arrives_late() -> None:
    """A live change shown first, then the history a late-joining console reads: the log lists them by time."""
    app = create_app(Settings(), sources=False, subscribe=False, clock=lambda: T0, tick_s=None)
    async with app.run_test(size=(160, 48)) as pilot:
        app.post_message(QuotaChanged("free", [entry(T0 - 5, 9)]))
        app.post_message(QuotaChanged("*", [entry(T0 - 300, 7), entry(T0 - 60, 8)]))
        log = app.overview.query_one("#events", EventLog)
        await wait_until(pilot, lambda: len(log.texts) == 3, what="three quota events")
        assert [t.split()[0] for t in log.texts] == [clock_text(T0 - 300), clock_text(T0 - 60), clock_text(T0 - 5)]
        assert [e.at for e in app.state.events] == [T0 - 300, T0 - 60, T0 - 5]
