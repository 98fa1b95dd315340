"""`?` at 80x24: the whole list on screen, every description whole, only this console's keys."""

from __future__ import annotations

from textual.binding import Binding

from tui.screens.help import HelpScreen
from tui.testing import frozen_session, screen_text, settle, wait_until
from tui.widgets.gpu_table import GpuTable

TEXTUAL_GENERIC = ("super+c", "Page Left", "Page Right", "Focus Next", "Focus Previous", "Copy selected text",
                   "Scroll Home", "Cursor up")


async def test_help_fits_80x24_whole_with_only_our_keys() -> None:
    """Every listed key and every word of its description is on the 80x24 screen; none of Textual's own keys."""
    async with frozen_session((80, 24)) as (app, pilot):
        app.sub_title = ("demo · Redis redis://127.0.0.1:40123/0 · join: surgewatch --redis redis://127.0.0.1:40123/0 "
                         "--nodes @/tmp/surgewatch-valkey-x/nodes.txt · cut: quota set free 3/1d")
        await pilot.press("question_mark")
        help_screen = await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, what="help")
        await settle(pilot)
        text = screen_text(app)
        words = set(text.split())
        for key, desc in help_screen.keys:
            assert set(desc.split()) <= words, (key, desc, text)  # nothing cut at the edge or below the screen
        assert "esc close" in text  # the box's bottom border: nothing scrolled out
        listed = " ".join(f"{k} {d}" for k, d in help_screen.keys)
        for generic in TEXTUAL_GENERIC:
            assert generic not in listed
        assert {"Quit", "Edit quota", "History", "Filter", "Sort"} <= {d for _, d in help_screen.keys}


async def test_help_lists_the_gpu_tables_own_keys_when_it_has_focus() -> None:
    """With the GPU table focused, its m (MIG instances) is listed; its inherited cursor keys are not."""
    async with frozen_session((200, 60)) as (app, pilot):
        app.screen.query_one(GpuTable).focus()
        await settle(pilot)
        await pilot.press("question_mark")
        help_screen = await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, what="help")
        own = {b.key for b in GpuTable.BINDINGS if isinstance(b, Binding)}
        assert "m" in own and "m" in {k for k, _ in help_screen.keys}
        assert not any(d in ("Cursor up", "Page Left") for _, d in help_screen.keys)
