"""The console's NO_COLOR theme: greys only, alarms marked by reverse video and bold, every text legible.

Textual's own NO_COLOR filter turns each colour into the grey of its luminance: the console's alarm red
(#f4005f) became grey 59 on grey 18, so "hot 7", "rejected 38.3%", "ongoing crit" and the status "hot"
were the least visible text on the screen. This filter takes its place (SurgewatchApp.get_line_filters):

- text drawn in an alarm colour (red, magenta) or on an alarm background (the error banner) is shown in
  reverse video and bold: the strongest mark a monochrome terminal has;
- text in a warning colour (yellow, orange) is bold;
- every other text keeps its grey, made lighter or darker where it would read below WCAG's 4.5:1 contrast
  against its background (dim text too: it is drawn in a grey that meets it, not left to the terminal);
- glyphs that are pictures, not text (the heat map's blocks, sparklines, scrollbars) keep the grey of
  their colour: their shade is what they say.

A terminal that keeps its own ANSI palette (native ANSI colours) gets its default colours, with the same
marks: there the terminal's theme decides contrast.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from textual.color import Color
from textual.filter import LineFilter, Monochrome, NoColor, monochrome_style

MIN_CONTRAST = 4.5  # WCAG 2 AA for normal text
ALARM, WARN = "alarm", "warn"
ALARM_MARK = Style(reverse=True, bold=True)
WARN_MARK = Style(bold=True)
BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG relative luminance of an sRGB colour."""
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4
    r, g, b = rgb
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG contrast ratio of two colours, 1 to 21."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def is_text(text: str) -> bool:
    """True if `text` holds a character that reads as text: anything but spaces and block elements (U+2580
    to U+259F: the heat map's cells, sparkline bars, scrollbars). Box drawing counts as text: the wall's big
    figures are drawn with it, and borders gain from being legible too."""
    return any(not ch.isspace() and not 0x2580 <= ord(ch) <= 0x259F for ch in text)


def _rgb(colour: RichColor | None, fallback: tuple[int, int, int]) -> tuple[int, int, int]:
    if colour is None or colour.is_default:
        return fallback
    t = colour.get_truecolor()
    return (t.red, t.green, t.blue)


def meaning(colour: RichColor | None) -> str | None:
    """ALARM for reds and magentas, WARN for yellows and oranges, None for greys, greens and blues."""
    if colour is None or colour.is_default:
        return None
    hue_turns, saturation, lightness = Color(*_rgb(colour, BLACK)).hsl
    if saturation < 0.35 or lightness < 0.15 or lightness > 0.92:
        return None  # a grey, or too dark or light to be a hue anyone reads as a signal
    hue = hue_turns * 360
    if hue < 18 or hue >= 285:
        return ALARM
    return WARN if hue < 70 else None


def _grey(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    g = Color(*rgb).monochrome.r
    return (g, g, g)


def legible(fg: tuple[int, int, int], bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """`fg`, or the grey nearest to it that reads at MIN_CONTRAST on `bg` (black or white at worst: one of
    them always does)."""
    if contrast(fg, bg) >= MIN_CONTRAST:
        return fg
    towards = WHITE if contrast(WHITE, bg) >= contrast(BLACK, bg) else BLACK
    for step in range(1, 21):
        g = tuple(round(f + (t - f) * step / 20) for f, t in zip(fg, towards, strict=True))
        if contrast(g, bg) >= MIN_CONTRAST:  # type: ignore[arg-type]  # three channels in, three out
            return g  # type: ignore[return-value]  # three channels in, three out
    return towards


@lru_cache(4096)
def themed_style(style: Style, background: tuple[int, int, int], text: bool) -> Style:
    """`style` in the NO_COLOR theme, for a segment on `background` (used where the style sets none)."""
    fg_meaning, bg_meaning = meaning(style.color), meaning(style.bgcolor)
    bg = _grey(_rgb(style.bgcolor, background))
    fg = _grey(_rgb(style.color, WHITE if luminance(bg) < 0.18 else BLACK))
    if not text:
        return monochrome_style(style)  # a picture's shade is its meaning: Textual's greys as they are
    if style.dim:  # what a terminal's faint would do, then kept legible: dim stays dimmer than plain text
        fg = tuple(round(b + (f - b) * 0.66) for f, b in zip(fg, bg, strict=True))  # type: ignore[assignment]  # three channels
    fg = legible(fg, bg)
    colours = Style.from_color(RichColor.from_rgb(*fg), RichColor.from_rgb(*bg))
    mark = ALARM_MARK if ALARM in (fg_meaning, bg_meaning) else WARN_MARK if fg_meaning == WARN else Style()
    return style + colours + Style(dim=False) + mark


@lru_cache(4096)
def default_style(style: Style) -> Style:
    """`style` for a terminal's own palette: default colours, the same marks."""
    m = meaning(style.color), meaning(style.bgcolor)
    mark = ALARM_MARK if ALARM in m else WARN_MARK if m[0] == WARN else Style()
    return style + Style.from_color(RichColor.default(), RichColor.default()) + mark


class AlarmGreys(LineFilter):
    """Greys, with alarms in reverse video and warnings in bold; text at WCAG AA contrast (see the module)."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        bg = (background.r, background.g, background.b)
        return [Segment(text, themed_style(style, bg, is_text(text)) if style else style, None)
                for text, style, _ in segments]


class AlarmDefaults(LineFilter):
    """The terminal's default colours, with alarms in reverse video and warnings in bold."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [Segment(text, default_style(style) if style and is_text(text) else
                        (style + Style.from_color(RichColor.default(), RichColor.default()) if style else style), None)
                for text, style, _ in segments]


def no_color_filters(filters: Sequence[LineFilter]) -> list[LineFilter]:
    """`filters` with Textual's NO_COLOR filter replaced by this theme's."""
    out: list[LineFilter] = []
    for f in filters:
        if isinstance(f, Monochrome):
            out.append(_GREYS)
        elif isinstance(f, NoColor):
            out.append(_DEFAULTS)
        else:
            out.append(f)
    return out


_GREYS, _DEFAULTS = AlarmGreys(), AlarmDefaults()


class NoColorTheme:
    """For the App (first among its bases): under NO_COLOR, this theme's filter in place of Textual's plain
    greys, which drew the alarm red darkest of all. Textual asks the app for its filters through this method."""

    no_color: bool

    def get_line_filters(self) -> Sequence[LineFilter]:
        filters: Sequence[LineFilter] = super().get_line_filters()  # type: ignore[misc]  # the App's, next in the MRO
        return no_color_filters(filters) if self.no_color else filters

__all__ = ["AlarmDefaults", "AlarmGreys", "NoColorTheme", "contrast", "is_text", "meaning", "no_color_filters"]
