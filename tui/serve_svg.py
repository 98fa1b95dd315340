"""The console's screenshot (Rich's SVG, via Textual) made into what a browser page shows.

Rich draws a desktop window around a terminal screenshot (title bar, three traffic-light dots) and links
its Fira Code font from a CDN. On a wall, the page is the window: the SVG is cut to the terminal's own
cells, without the bottom row (the console's footer lists terminal keys a browser cannot send; the page
draws its own with the keys it does send). The browser draws with its own monospace font, so a glyph that
font family lacks (Textual's header icon `⭘`) is swapped for one that common monospace fonts have.
Control characters never reach the browser: they are written visible (`\\x1b`), whatever let one into
the screen.
"""

from __future__ import annotations

import re

FONT_FACE = re.compile(r"@font-face\s*\{[^}]*\}")  # Rich's SVG links its font from a CDN: the page never does
COMMENT = re.compile(r"<!--.*?-->", re.S)
# a C0/C1 control (newline aside: the SVG's own layout) or DEL: shown as \\xNN text, never sent raw
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
CHROME_TITLE = re.compile(r'<text class="[\w-]+-title"[^>]*>.*?</text>', re.S)
CHROME_DOTS = re.compile(r'<g transform="translate\(26,22\)">\s*(?:<circle[^>]*/>\s*)+</g>')
TERMINAL = re.compile(r'<g transform="translate\(([\d.]+), ?([\d.]+)\)" clip-path="url\(#([\w-]+)-clip-terminal\)">')
VIEWBOX = re.compile(r'viewBox="[^"]*"')
LINE_HEIGHT = re.compile(r"line-height:\s*([\d.]+)px")
ROW_CLIP = re.compile(r'clip-path="url\(#[\w-]+-line-(\d+)\)"')  # as the rows' text uses them
# Glyphs the console draws that DejaVu/Liberation/Noto Mono (what a wall's browser has) lack, and what
# they become; the page test checks every glyph on screen against the browser's missing-glyph box.
GLYPHS = str.maketrans({"⭘": "○", "⏸": "‖"})


def visible_controls(text: str) -> str:
    """`text` with each control character written as `\\xNN`: seen, never interpreted."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def terminal_box(svg: str) -> tuple[float, float, float, float] | None:
    """(x, y, width, height) of the terminal's cells inside Rich's window, or None if the layout is unknown."""
    where = TERMINAL.search(svg)
    if where is None:
        return None
    uid = re.escape(where.group(3))
    rect = re.search(rf'<clipPath id="{uid}-clip-terminal">\s*<rect x="0" y="0" width="([\d.]+)" height="([\d.]+)"',
                     svg)
    if rect is None:
        return None
    return float(where.group(1)), float(where.group(2)), float(rect.group(1)), float(rect.group(2))


def wall_svg(svg: str, *, drop_rows: int = 1) -> str:
    """The screenshot for the page: no web font, no window chrome, no footer row, no control character."""
    svg = COMMENT.sub("", FONT_FACE.sub("", svg))
    svg = CHROME_DOTS.sub("", CHROME_TITLE.sub("", svg))
    box, line = terminal_box(svg), LINE_HEIGHT.search(svg)
    if box is not None and line is not None:
        x, y, width, height = box
        height = max(float(line.group(1)), height - drop_rows * float(line.group(1)))
        svg = VIEWBOX.sub(f'viewBox="{x:g} {y:g} {width:g} {height:.1f}"', svg, count=1)
        svg = drop_last_rows(svg, drop_rows)
    return visible_controls(svg).translate(GLYPHS)


def drop_last_rows(svg: str, rows: int) -> str:
    """Without the text of the last `rows` rows: out of view is not enough, a reader (or a search) sees text."""
    where = TERMINAL.search(svg)
    numbers = [int(n) for n in ROW_CLIP.findall(svg)]
    if where is None or not numbers or rows < 1:
        return svg
    uid, last = re.escape(where.group(3)), max(numbers)
    cut = "|".join(str(n) for n in range(last - rows + 1, last + 1))
    return re.sub(rf'<text [^>]*clip-path="url\(#{uid}-line-(?:{cut})\)">.*?</text>', "", svg, flags=re.S)


__all__ = ["GLYPHS", "terminal_box", "visible_controls", "wall_svg"]
