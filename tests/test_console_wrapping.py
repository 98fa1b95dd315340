"""Text is never lost where lines wrap: the wrapping rule itself, and the events and host lines on screen."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.text import Text

from collectors.samples import Source
from quotas.store import AuditEntry
from tui.messages import QuotaChanged
from tui.testing import FROZEN_NOW, _q, frozen_readings, frozen_session, region_text, settle, wait_until
from tui.widgets.events_log import EventLog
from tui.widgets.status import HostLine, host_groups
from tui.widgets.wrap import pack_groups, wrap_plain, wrap_text

# letters, digits, the punctuation of event lines, spaces, newlines and wide characters (two cells each)
TEXTS = st.text(alphabet=st.sampled_from([*"abcdefghij0123456789 ()/:.,%->_", " ", " ", "\n", "°", "↓", "中", "▶"]),
                max_size=300)


@given(TEXTS, st.integers(min_value=1, max_value=200))
def test_wrapping_keeps_every_character_in_order(text: str, width: int) -> None:
    """Wrapped lines joined are the text itself, each fits the width; a word is cut only in a line without a space."""
    lines = wrap_plain(text, width)
    assert "".join(lines) == text
    for i, line in enumerate(lines):
        shown = line.rstrip("\n")
        shown = shown[:-1] if shown.endswith(" ") and cell_len(shown) > width else shown
        assert cell_len(shown) <= width or len(shown) == 1, (line, width)
        if i + 1 < len(lines) and not line.endswith((" ", "\n")) and not lines[i + 1].startswith(" "):
            assert " " not in line, (line, lines[i + 1], width)


@given(TEXTS, st.integers(min_value=1, max_value=200))
def test_styled_wrapping_shows_every_visible_character(text: str, width: int) -> None:
    """The styled lines a widget draws hold every visible character in order, each within the width, styles kept."""
    styled = Text(text, style="bold")
    lines = wrap_text(styled, width)
    assert "".join(line.plain for line in lines).replace(" ", "").replace("\n", "") == \
        text.replace(" ", "").replace("\n", "")
    assert all(line.cell_len <= width or len(line.plain) == 1 for line in lines)
    assert all(span.style == "bold" for line in lines for span in line.spans)


GROUP = st.text(alphabet="abc xyz/.:", min_size=1, max_size=40).map(lambda g: " ".join(g.split())).filter(bool)


@given(st.lists(GROUP, max_size=8), st.integers(min_value=40, max_value=120), st.integers(min_value=1, max_value=3))
def test_groups_are_packed_whole_or_left_out_whole(groups: list[str], width: int, max_lines: int) -> None:
    """Groups that fit a line are shown whole, in order, or left out whole; the first one always; within the lines."""
    lines = [line.plain for line in pack_groups([Text(g) for g in groups], width, max_lines)]
    assert len(lines) <= max_lines and all(cell_len(line) <= width for line in lines)
    shown = iter(groups)
    assert all(any(tok == g for g in shown) for line in lines for tok in line.split("  "))  # a subsequence
    assert not groups or lines[0].startswith(groups[0])


def letters(text: str) -> str:
    return "".join(text.split())


def audit(tier: str, version: int, reason: str) -> AuditEntry:
    return AuditEntry(f"{int(FROZEN_NOW * 1000)}-{version}", tier, "surgewatch init", FROZEN_NOW - 5, version,
                      None, _q(tier, 20, 86400, version=version), reason)


async def show_long_quota_changes(app: Any, pilot: Any) -> EventLog:
    reasons = ["seed default quota", "seed default quota after the user_quota 7.4/s surge of the night shift"]
    for version, reason in enumerate(reasons, start=1):
        app.post_message(QuotaChanged("plus", [audit("plus", version, reason)]))
    log = app.overview.query_one(EventLog)
    await wait_until(pilot, lambda: sum("seed default" in t for t in log.texts) == 2, what="quota events")
    await settle(pilot)
    return log


def assert_every_event_whole(app: Any, log: EventLog) -> None:
    rows = region_text(app, log)
    shown = letters("".join(rows))
    for text in log.texts:
        assert letters(text) in shown, (text, rows)
    assert max(len(t) for t in log.texts) > log.content_region.width  # the longest does wrap at this size
    assert all(len(line) <= log.content_region.width for line in log.lines)


@pytest.mark.parametrize("size", [(160, 48), (120, 40)])
async def test_long_event_lines_wrap_without_losing_a_character(size: tuple[int, int]) -> None:
    """At 160x48 and 120x40 a quota change longer than the events panel reads whole across its lines."""
    async with frozen_session(size) as (app, pilot):
        assert_every_event_whole(app, await show_long_quota_changes(app, pilot))


async def test_event_lines_wrap_again_when_the_terminal_narrows() -> None:
    """Lines shown at 160x48 are wrapped again at 120x40, never cropped at the width they were drawn at."""
    async with frozen_session((160, 48)) as (app, pilot):
        log = await show_long_quota_changes(app, pilot)
        await pilot.resize_terminal(120, 40)
        await wait_until(pilot, lambda: log.content_region.width < 70, what="narrower panel")
        await settle(pilot)
        assert_every_event_whole(app, log)


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (120, 40), (200, 60)])
async def test_host_line_ends_between_groups(size: tuple[int, int]) -> None:
    """The host line never ends inside a group ("disk r n/a w"): each group is on screen whole or not at all."""
    host_sample = frozen_readings()[Source.HOST].sample
    async with frozen_session(size) as (app, _pilot):
        host = app.overview.query_one(HostLine)
        rows = region_text(app, host)
        shown = " ".join(rows)
        groups = [g.plain for g in host_groups(host_sample, None, None)]
        assert groups[0] in shown  # the name and the CPU always
        for g in groups:
            head = g.split()[0]
            assert g in shown or head not in shown.split(), (g, rows)
        if size[0] >= 120:
            assert all(g in shown for g in groups), rows  # wide enough for all of it


async def test_ongoing_incidents_beyond_their_room_are_counted_not_cut() -> None:
    """More ongoing incidents than the bar above the log holds: whole ones are shown and a last line counts the rest."""
    from surgewatch.alerts import Event
    from tui.widgets.events_log import IncidentBar

    async with frozen_session((120, 40)) as (app, pilot):
        bar = app.overview.query_one(IncidentBar)
        incidents = [Event(FROZEN_NOW, "crit", "node_down", f"node 10.0.9.{i}:9400 down since 20:26:40Z: "
                           "connection refused by the exporter after three retries", incident=f"down-{i}", ongoing=True)
                     for i in range(5)]
        bar.show(incidents)
        await settle(pilot)
        rows = [row for row in region_text(app, bar) if row]
        assert len(rows) <= IncidentBar.MAX_LINES and rows[-1].startswith("… ")
        shown = [i for i in range(5) if f"10.0.9.{i}:9400" in " ".join(rows)]
        assert rows[-1].startswith(f"… {5 - len(shown)} more ongoing incidents")
        for i in shown:  # each one shown is whole
            assert letters(incidents[i].text) in letters("".join(rows))
