"""The events panel: ongoing incidents pinned on top, then the log (newest last), coloured by severity."""

from __future__ import annotations

import time
from typing import Self

from rich.text import Text
from textual.widgets import RichLog, Static

from surgewatch.alerts import Event

SEVERITY_STYLE = {"info": "cyan", "warn": "yellow", "crit": "bold red"}


def event_line(e: Event) -> Text:
    t = Text()
    if e.ongoing:  # still going on: its line says since when; the time of its last update is no news
        t.append("▶ ongoing ", style=SEVERITY_STYLE.get(e.severity, ""))
    else:
        t.append(time.strftime("%H:%M:%SZ ", time.gmtime(e.at)), style="dim")
    t.append(f"{e.severity:<4} ", style=SEVERITY_STYLE.get(e.severity, ""))
    t.append(e.text)
    return t


class IncidentBar(Static):
    """The incidents still going on, one line each, updated in place above the log; hidden when none."""

    DEFAULT_CSS = """
    IncidentBar { height: auto; max-height: 4; display: none; padding: 0 0 0 0; }
    IncidentBar.-shown { display: block; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.texts: list[str] = []  # plain text of the lines shown, for tests and the wall screen

    def show(self, ongoing: list[Event]) -> None:
        lines = [event_line(e) for e in ongoing]
        texts = [t.plain for t in lines]
        if texts == self.texts:
            return
        self.texts = texts
        self.set_class(bool(lines), "-shown")
        self.update(Text("\n").join(lines), layout=True)


class EventLog(RichLog):
    """Events derived from the samples and the audit stream. Keeps the last 500."""

    DEFAULT_CSS = "EventLog { height: 1fr; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=500, wrap=True, markup=False, highlight=False, **kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.texts: list[str] = []  # plain text of what was shown, for tests and the wall screen
        self.shown: list[Event] = []  # the events logged, oldest first (texts are their lines)

    def add(self, events: list[Event]) -> None:
        """Log `events` in time order; an ongoing incident is not logged (IncidentBar shows it) until it ends."""
        logged = [e for e in events if not e.ongoing]
        if not logged:
            return
        if self.shown and min(e.at for e in logged) < self.shown[-1].at:
            # older news arriving late (a console's first audit history, a replay's quota change inside a
            # played step): the log is append-only, so it is written again in time order
            merged = sorted([*self.shown, *logged], key=lambda e: e.at)  # stable: one instant keeps its order
            self.clear()
            logged = merged
        for e in logged:
            self.shown.append(e)
            self.texts.append(event_line(e).plain)
            self.write(event_line(e))
        del self.texts[:-500], self.shown[:-500]

    def clear(self) -> Self:
        self.shown.clear()
        self.texts.clear()
        return super().clear()
