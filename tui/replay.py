"""Replay: the console fed from a recording instead of its collectors, at the recorded wall-clock time.

`Player` owns the position (the app's clock: ages and countdowns read as they did), play/pause, the
speed and the steps. Moving forward a little posts the recorded changes in between as the very
messages the collectors and the quota feed posted, so the console derives the same events; a jump (back,
or more than a minute ahead) resets the console's state and posts the state at the target (the events
panel then restarts with the quota changes up to that time).
"""

from __future__ import annotations

import math
from typing import Any

from collectors.samples import Source
from surgewatch.recording.documents import parse_time
from surgewatch.recording.format import RecordingError
from surgewatch.recording.reader import Change, Recording
from surgewatch.state import ConsoleState
from tui.messages import SAMPLED, QuotaChanged, QuotasLoaded, SubscriptionChanged

SPEEDS = (1, 10, 60)
TICK_S = 0.1  # how often playing advances (60x: 6 recorded seconds per tick)
FEED_MAX_S = 60.0  # farther ahead than this, a jump is a seek (decoding every change between costs more)
AUDIT_CONTEXT = 20  # quota changes shown in the events panel after a seek


class Player:
    """Position, speed and play state of one replay; `attach(app)` once the app is mounted."""

    def __init__(self, recording: Recording, *, start_at: float | None = None, speed: int = 1) -> None:
        self.rec = recording
        self.start = float(math.floor(recording.start))
        self.end = recording.end
        self.position = self.start if start_at is None else min(max(start_at, self.start), self.end)
        if speed not in SPEEDS:
            raise RecordingError(f"invalid replay speed {speed}: one of {', '.join(map(str, SPEEDS))}")
        self.speed = speed
        self.playing = False
        self.app: Any = None
        self._shown_at: float | None = None  # the position the console's state is at

    def clock(self) -> float:
        return self.position

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
        app.state = ConsoleState(old.thresholds, old.clock, redis_configured=old.redis_configured)
        app.overview.state = app.state
        app.reset_events()
        state = self.rec.state_at(at)
        if state.quotas is not None:
            app.post_message(QuotasLoaded(list(state.quotas)))
        if state.subscription is not None:
            app.post_message(SubscriptionChanged(*state.subscription))
        for source in Source:
            r = state.readings.get(source)
            if r is not None:
                app.post_message(SAMPLED[source](r))
        entries = [e for _, e in self.rec.audit(None, at)][-AUDIT_CONTEXT:]
        app.post_message(QuotaChanged("*", entries))
        self._shown_at = at
        self._changed()

    def _post(self, changes: list[Change]) -> None:
        app = self.app
        for ch in changes:
            if ch.kind == "reading" and ch.source is not None:
                app.post_message(SAMPLED[ch.source](ch.value))
            elif ch.kind == "quotas":
                app.post_message(QuotasLoaded(list(ch.value)))
            elif ch.kind == "subscription":
                app.post_message(SubscriptionChanged(*ch.value))
            elif ch.kind == "audit":
                app.post_message(QuotaChanged(ch.value.tier, [ch.value]))

    def _changed(self) -> None:
        if self.app is not None:
            self.app.overview.show_replay(self)
