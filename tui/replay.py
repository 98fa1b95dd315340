"""Replay: the console fed from a recording instead of its collectors, at the recorded wall-clock time.

`Player` owns the position (the app's clock: ages and countdowns read as they did), play/pause, the
speed and the steps. Moving forward a little posts the recorded changes in between as the very
messages the collectors and the quota feed posted, so the console derives the same events; a jump (back,
or more than a minute ahead) resets the console's state and posts the state at the target (the events
panel then restarts with the quota changes up to that time).

A replay opens on the first second at which every recorded source has a reading (a recorder starts before
its first scrape answers: its first seconds would show "GPUs 0" and "no data yet"). A jump into the middle
of a throttling incident first shows the console the GPU readings that opened it and its peak, so the
incident says since when it really lasts, not "since" the second jumped to.
"""

from __future__ import annotations

import math
from typing import Any

from collectors.runner import Reading
from collectors.samples import FleetSample, GpusSample, Source
from surgewatch.incidents import END_QUIET_S
from surgewatch.kpis import is_throttled
from surgewatch.recording.documents import parse_time
from surgewatch.recording.format import RecordingError
from surgewatch.recording.reader import Change, Recording
from surgewatch.state import ConsoleState
from tui.messages import SAMPLED, QuotaChanged, QuotasLoaded, SubscriptionChanged

SPEEDS = (1, 10, 60)
TICK_S = 0.1  # how often playing advances (60x: 6 recorded seconds per tick)
FEED_MAX_S = 60.0  # farther ahead than this, a jump is a seek (decoding every change between costs more)
AUDIT_CONTEXT = 20  # quota changes shown in the events panel after a seek
FIRST_DATA_SCAN_S = 600.0  # how far into a recording its first data is looked for (beyond: open at its start)
INCIDENT_LOOKBACK_S = 3600.0  # how far back a jump looks for the start of the throttling it lands in
SCAN_STEP_S = 60.0  # the recording is read in windows of this many seconds while looking
GPU_SOURCES = (Source.GPUS, Source.FLEET)


def throttled_gpus(reading: Reading[Any]) -> int:
    """How many GPUs of a GPU reading throttle (0 for a reading that holds no GPUs)."""
    sample = reading.sample
    if isinstance(sample, GpusSample):
        return sum(1 for g in sample.gpus if is_throttled(g))
    if isinstance(sample, FleetSample):
        return sum(1 for n in sample.nodes for g in n.gpus if is_throttled(g))
    return 0


def first_data_at(rec: Recording) -> float:
    """The first whole second at which every recorded source has a reading (the recording's start if none
    is found within FIRST_DATA_SCAN_S)."""
    wanted = {n for n in rec.stream_ids if n.startswith("reading:")}
    seen: set[str] = set()
    lo, stop = rec.start - 1.0, min(rec.end, rec.start + FIRST_DATA_SCAN_S)
    while wanted and lo < stop:
        for ch in rec.changes(lo, lo + SCAN_STEP_S):
            if ch.kind == "reading" and ch.source is not None:
                seen.add(f"reading:{ch.source}")
                if seen >= wanted:
                    return min(float(math.ceil(ch.at)), rec.end)
        lo += SCAN_STEP_S
    return rec.start


def incident_openers(rec: Recording, at: float) -> list[Change]:
    """The GPU readings to show a fresh console before the state at `at` so that the throttling going on at
    `at` reads as it did: the first reading of the incident (its start) and the one with the most GPUs
    throttling (its peak), oldest first; none when nothing throttles at `at` or within END_QUIET_S before.
    The same rule as surgewatch.incidents: END_QUIET_S without throttling ends an incident."""
    earliest: Change | None = None
    peak: tuple[int, Change] | None = None
    hi, ended = at, False
    while not ended and hi > at - INCIDENT_LOOKBACK_S:
        window = [c for c in rec.changes(hi - SCAN_STEP_S, hi) if c.kind == "reading" and c.source in GPU_SOURCES]
        for ch in reversed(window):  # newest first
            if (earliest.at if earliest is not None else at) - ch.at >= END_QUIET_S:
                ended = True  # a quiet stretch: what throttled before it was another incident
                break
            n = throttled_gpus(ch.value)
            if n:
                earliest = ch
                if peak is None or n > peak[0]:  # strictly more: the latest reading at the peak count
                    peak = (n, ch)
        hi -= SCAN_STEP_S
    found = [c for c in (earliest, peak[1] if peak else None) if c is not None]
    return sorted({id(c): c for c in found}.values(), key=lambda c: c.at)


class Player:
    """Position, speed and play state of one replay; `attach(app)` once the app is mounted."""

    def __init__(self, recording: Recording, *, start_at: float | None = None, speed: int = 1) -> None:
        self.rec = recording
        self.start = float(math.floor(recording.start))
        self.end = recording.end
        self.position = first_data_at(recording) if start_at is None else min(max(start_at, self.start), self.end)
        if speed not in SPEEDS:
            raise RecordingError(f"invalid replay speed {speed}: one of {', '.join(map(str, SPEEDS))}")
        self.speed = speed
        self.playing = False
        self.app: Any = None
        self._shown_at: float | None = None  # the position the console's state is at
        self._applying_at: float | None = None  # while a recorded change is applied: its recorded time

    def clock(self) -> float:
        """The console's clock: the position, or the time of the recorded change being applied."""
        return self.position if self._applying_at is None else self._applying_at

    def attach(self, app: Any) -> None:
        self.app = app
        app.state.redis_configured = "reading:traffic" in self.rec.stream_ids
        self.seek(self.position)
        app.set_interval(TICK_S, self._tick)

    # ----- operator actions
    def toggle(self) -> None:
        if not self.playing and self.position >= self.end:
            self.seek(self.start)  # play at the end starts over, as players do
        self.playing = not self.playing
        self._changed()

    def set_speed(self, speed: int) -> None:
        self.speed = speed
        self._changed()

    def step(self, seconds: float) -> None:
        """One step (±1 s) or one minute (±60 s); pauses, so a step is a still picture."""
        self.playing = False
        target = math.floor(self.position) + seconds if seconds > 0 else math.ceil(self.position) + seconds
        self.move_to(target)

    def goto(self, text: str) -> str | None:
        """Go to an operator's time (`14:32:05`, `+10m`, `-30s`); the error to show, or None."""
        try:
            at = parse_time(text, self.start, self.end, now=self.position)
        except RecordingError as e:
            return str(e)
        self.move_to(at)
        return None

    # ----- moving
    def _tick(self) -> None:
        if not self.playing:
            return
        target = self.position + self.speed * TICK_S
        if target >= self.end:
            target, self.playing = self.end, False
        self.move_to(target)

    def move_to(self, at: float) -> None:
        at = min(max(at, self.start), self.end)
        shown = self._shown_at
        if shown is not None and 0 <= at - shown <= FEED_MAX_S:
            self.position = at
            self._post(self.rec.changes(shown, at))
            self._shown_at = at
            self._changed()
        else:
            self.seek(at)

    def seek(self, at: float) -> None:
        """Reset the console and load the state at `at`."""
        app = self.app
        self.position = at
        if app is None:
            return
        old = app.state
        state = ConsoleState(old.thresholds, old.clock, redis_configured=old.redis_configured)
        try:  # the incident's start and peak, each at its own time, before the state at `at`
            for ch in incident_openers(self.rec, at):
                self._applying_at = ch.at
                state.apply(ch.source, ch.value)  # type: ignore[arg-type]  # GPU_SOURCES only: never None
        finally:
            self._applying_at = None
        app.state = state
        app.overview.state = app.state
        app.reset_events()
        app.overview.add_events(state.ongoing())  # the incident line, even if the state at `at` repeats it
        recorded = self.rec.state_at(at)
        if recorded.quotas is not None:
            app.post_message(QuotasLoaded(list(recorded.quotas)))
        if recorded.subscription is not None:
            app.post_message(SubscriptionChanged(*recorded.subscription))
        for source in Source:
            r = recorded.readings.get(source)
            if r is not None:
                app.post_message(SAMPLED[source](r))
        entries = [e for _, e in self.rec.audit(None, at)][-AUDIT_CONTEXT:]
        app.post_message(QuotaChanged("*", entries))
        self._shown_at = at
        self._changed()

    def _post(self, changes: list[Change]) -> None:
        """Apply the recorded changes in order, each at its recorded time: the handlers run now, while the
        clock reads that time, so an event carries the second it happened (a posted message would be handled
        later, at the step's end: a minute's step would date all its events, and stale its readings, at once)."""
        app = self.app
        try:
            for ch in changes:
                self._applying_at = ch.at
                if ch.kind == "reading" and ch.source is not None:
                    app._sampled(SAMPLED[ch.source](ch.value))
                elif ch.kind == "quotas":
                    app.on_quotas_loaded(QuotasLoaded(list(ch.value)))
                elif ch.kind == "subscription":
                    app.on_subscription_changed(SubscriptionChanged(*ch.value))
                elif ch.kind == "audit":
                    app.on_quota_changed(QuotaChanged(ch.value.tier, [ch.value]))
        finally:
            self._applying_at = None

    def _changed(self) -> None:
        if self.app is not None:
            self.app.overview.show_replay(self)
