"""The events panel: ongoing incidents pinned on top, then the log (newest last), coloured by severity."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from surgewatch.alerts import Event
from tui.widgets.wrap import wrap_text

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
    IncidentBar { height: auto; display: none; padding: 0 0 0 0; }
    IncidentBar.-shown { display: block; }
    """
    MAX_LINES = 6  # the log below keeps its room; past this a last line says how much is not shown

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.texts: list[str] = []  # plain text of the lines shown, for tests and the wall screen
        self._lines: list[Text] = []

    def show(self, ongoing: list[Event]) -> None:
        lines = [event_line(e) for e in ongoing]
        texts = [t.plain for t in lines]
        if texts == self.texts:
            return
        self.texts = texts
        self._lines = lines
        self.set_class(bool(lines), "-shown")
        self.refresh(layout=True)

    def _wrapped(self, width: int) -> list[Text]:
        """The incidents wrapped whole, as many as fit MAX_LINES; never cut silently: a last line counts the
        incidents left out."""
        wrapped = [wrap_text(line, width) for line in self._lines]
        if sum(len(w) for w in wrapped) <= self.MAX_LINES:
            return [piece for w in wrapped for piece in w]
        out: list[Text] = []
        for i, w in enumerate(wrapped):
            if len(out) + len(w) > self.MAX_LINES - 1:
                left = len(wrapped) - i
                more = Text(f"… {left} more ongoing incident{'s' if left != 1 else ''}", style="bold")
                return [*out, *wrap_text(more, width)]
            out.extend(w)
        return out

    def render(self) -> Text:
        return Text("\n").join(self._wrapped(max(1, self.content_size.width)))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._wrapped(max(1, width)))


class EventLog(ScrollView, can_focus=True):
    """Events derived from the samples and the audit stream, newest last. Keeps the last 500.

    Lines are wrapped here (tui.widgets.wrap) at the width the log has now, and again after every resize:
    a line is never cropped by a width it was rendered at before (RichLog keeps the lines it rendered
    once, so a narrower panel or a scrollbar that appears later cut characters at the wrap). The
    scrollbar's gutter is always reserved, so the width lines are wrapped to does not change under them."""

    DEFAULT_CSS = "EventLog { height: 1fr; scrollbar-gutter: stable; scrollbar-size-vertical: 1; overflow-x: hidden; }"
    MAX_EVENTS = 500

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.texts: list[str] = []  # plain text of what was shown, for tests and the wall screen
        self.shown: list[Event] = []  # the events logged, oldest first (texts are their lines)
        self._events: deque[Text] = deque(maxlen=self.MAX_EVENTS)
        self._lines: list[Strip] = []
        self._wrapped_at = 0  # the width the lines were wrapped to (0: not yet)
        self._rewrap_due = False

    def add(self, events: list[Event]) -> None:
        """Log `events` in time order; an ongoing incident is not logged (IncidentBar shows it) until it ends."""
        logged = [e for e in events if not e.ongoing]
        if not logged:
            return
        if self.shown and min(e.at for e in logged) < self.shown[-1].at:
            # older news arriving late (a console's first audit history, a replay's quota change inside a
            # played step): the log is written again in time order (stable: one instant keeps its order)
            logged = sorted([*self.shown, *logged], key=lambda e: e.at)
            self.shown.clear()
            self.texts.clear()
            self._events.clear()
        for e in logged:
            line = event_line(e)
            self.shown.append(e)
            self.texts.append(line.plain)
            self._events.append(line)
        del self.texts[: -self.MAX_EVENTS], self.shown[: -self.MAX_EVENTS]
        self._rewrap(follow=True)

    def clear(self) -> None:
        """Forget every line (a replay's jump starts the log afresh)."""
        self._events.clear()
        self.shown.clear()
        self.texts.clear()
        self._rewrap(follow=True)

    @property
    def lines(self) -> list[str]:
        """The lines as they are wrapped now, plain text (what the panel shows, scrolled or not)."""
        return [strip.text for strip in self._lines]

    def on_resize(self) -> None:
        self._rewrap(follow=self._at_end())

    def _at_end(self) -> bool:
        return self.scroll_offset.y >= self.max_scroll_y

    def _rewrap(self, *, follow: bool) -> None:
        width = self.scrollable_content_region.width
        if not self.is_mounted or width <= 0:
            return  # on_resize wraps them once the log has a width
        follow = follow or self._at_end()
        console = self.app.console
        self._lines = [Strip(line.render(console), line.cell_len)
                       for text in self._events for line in wrap_text(text, width)]
        self._wrapped_at, self._rewrap_due = width, False
        self.virtual_size = Size(width, len(self._lines))
        if follow:
            self.scroll_end(animate=False, immediate=False, x_axis=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if width != self._wrapped_at and self._events and not self._rewrap_due:
            # a width that changed without a resize event reaching the log: wrap again after this frame
            self._rewrap_due = True
            self.call_after_refresh(self._rewrap, follow=self._at_end())
        i = self.scroll_offset.y + y
        strip = self._lines[i] if 0 <= i < len(self._lines) else Strip.blank(0)
        return strip.crop_extend(0, width, None).apply_style(self.rich_style)
