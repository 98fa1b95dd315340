"""The events panel: newest last, coloured by severity, bounded."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from tui.alerts import Event

SEVERITY_STYLE = {"info": "cyan", "warn": "yellow", "crit": "bold red"}


def event_line(e: Event) -> Text:
    t = Text()
    t.append(time.strftime("%H:%M:%SZ ", time.gmtime(e.at)), style="dim")
    t.append(f"{e.severity:<4} ", style=SEVERITY_STYLE.get(e.severity, ""))
    t.append(e.text)
    return t


class EventLog(RichLog):
    """Events derived from the samples and the audit stream. Keeps the last 500."""

    DEFAULT_CSS = "EventLog { height: 1fr; }"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=500, wrap=True, markup=False, highlight=False, **kwargs)  # type: ignore[arg-type]
        self.texts: list[str] = []  # plain text of what was shown, for tests and the wall screen

    def add(self, events: list[Event]) -> None:
        for e in events:
            self.texts.append(event_line(e).plain)
            self.write(event_line(e))
        del self.texts[:-500]
