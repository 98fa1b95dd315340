"""Wrapping that never loses a character: lines are cut from the text, never re-flowed or cropped.

Rich's and RichLog's wrapping drop the spaces at a break and, once a line has been rendered at one width,
crop it at a narrower one: an event line then read "(seed defaul" / "quota)". Here every line is a slice
of the text, the slices joined are the text, and each fits the width in cells: a line is cut mid-word
only when it holds no space to break at. Widgets wrap again at their current width on every resize.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text


def wrap_offsets(text: str, width: int) -> list[int]:
    """Where `text` is cut into lines of at most `width` cells: the end offset of each line (the last is
    len(text)). A line may end with the space it breaks at (or a newline) beyond the width: it is blank and
    trimmed when shown. A character wider than `width` gets its own line."""
    width = max(1, width)
    ends: list[int] = []
    start, n = 0, len(text)
    while start < n:
        end, used = start, 0
        while end < n and text[end] != "\n" and used + cell_len(text[end]) <= width:
            used += cell_len(text[end])
            end += 1
        if end < n and text[end] == "\n":
            end += 1  # the newline ends this line (it takes no cell)
        elif end == start:
            end = start + 1  # one character wider than the width: alone on its line
        elif end < n and text[end] == " ":
            end += 1  # the line is full and a space follows: it ends the line (a cell past the width, blank)
        elif end < n:
            space = text.rfind(" ", start, end)
            if space >= start:
                end = space + 1  # break after the last space: the word moves to the next line whole
        ends.append(end)
        start = end
    return ends


def wrap_plain(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` cells, not counting the one space or newline a line may end with."""
    out, start = [], 0
    for end in wrap_offsets(text, width):
        out.append(text[start:end])
        start = end
    return out


def wrap_text(text: Text, width: int) -> list[Text]:
    """`text` as styled lines of at most `width` cells; newlines and a break's trailing space are
    trimmed from the shown line only (they take no cell on screen, and no visible character is lost)."""
    lines = text.divide(wrap_offsets(text.plain, width)[:-1]) if text.plain else [text.copy()]
    for line in lines:
        line.rstrip()  # a trailing newline or space at a break, never a visible character
    return list(lines)


def pack_groups(groups: Sequence[Text], width: int, max_lines: int | None = None, sep: str = "  ") -> list[Text]:
    """Whole groups (e.g. "disk r 1.2 MB/s w 8 kB/s") packed into lines of at most `width` cells, never split
    between lines; a group wider than a line is wrapped on its own lines. With `max_lines`, the groups that
    do not fit are left out whole (the first groups are the ones that matter most)."""
    lines: list[Text] = []
    for group in groups:
        if not group.plain:
            continue
        if lines and lines[-1].cell_len + len(sep) + group.cell_len <= width:
            lines[-1].append(sep)
            lines[-1].append_text(group)
            continue
        pieces = wrap_text(group, width) if group.cell_len > width else [group.copy()]
        if max_lines is not None and len(lines) + len(pieces) > max_lines:
            continue  # left out whole: a later, shorter group may still fit
        lines.extend(pieces)
    return lines


__all__ = ["pack_groups", "wrap_offsets", "wrap_plain", "wrap_text"]
