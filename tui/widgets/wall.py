"""Wall mode's own widgets: large digits that can write a ratio, every tier's rejection % in large coloured
digits, and the panel cycle's state."""

from __future__ import annotations

import re
from collections.abc import Mapping

from rich.align import Align, AlignMethod
from rich.segment import Segment
from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.renderables.digits import Digits as DigitsFont
from textual.widget import Widget
from textual.widgets import Digits, Label, Static

from collectors.samples import TrafficSample
from quotas.model import Quota
from surgewatch.thresholds import BAD, OK, WARN, Thresholds
from tui.widgets.tiers import TierOrder

MAX_WALL_TIERS = 8
STYLE_CLASS = {OK: "ok", WARN: "warn", BAD: "bad"}
# Textual's 3x3 digit font has no "/": Digits draws one it lacks as a plain character on the bottom row,
# where it reads as a comma ("88/128" looks like "88,128", from across a room and up close). Between two
# digits a slash is drawn three rows tall instead, corner to corner, as the digits are.
RATIO = re.compile(r"(?<=[0-9])/(?=[0-9])")
TALL_SLASH = ("  \u2571", " \u2571 ", "\u2571  ")  # box drawing, as the digits are: a font with them has it
ALIGNS: tuple[AlignMethod, ...] = ("left", "center", "right")


class WallDigits(Digits):
    """Textual's Digits, which also write a ratio ("88/128") with a slash as tall as the digits."""

    def render(self) -> RenderResult:
        parts = RATIO.split(self.value)
        if len(parts) == 1:
            return super().render()
        style = self.rich_style
        rows = ["", "", ""]
        for n, part in enumerate(parts):
            glyphs = [*TALL_SLASH] if n else ["", "", ""]
            segments = (s for s in DigitsFont(part, style).render(style) if isinstance(s, Segment))  # all are
            lines = list(Segment.split_lines(segments))
            rows = [row + slash + "".join(seg.text for seg in line)
                    for row, slash, line in zip(rows, glyphs, lines, strict=True)]
        align = str(self.styles.text_align)
        return Align(Text("\n".join(rows), style=style, no_wrap=True),
                     next((a for a in ALIGNS if a == align), "left"), style)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        parts = RATIO.split(self.value)
        return sum(DigitsFont.get_width(p) for p in parts) + len(TALL_SLASH[0]) * (len(parts) - 1)



def reject_pct(rejected: float, accepted: float) -> float | None:
    total = rejected + accepted
    return 100.0 * rejected / total if total > 0 else None


class WallTiers(Widget):
    """One box per tier (at most 8, in the tier order): its name and rejection % in Digits, coloured by
    the thresholds (green, yellow, red), dimmed with a `?` when the traffic is stale."""

    DEFAULT_CSS = """
    WallTiers { height: auto; layout: horizontal; }
    WallTiers > Vertical { width: 1fr; height: auto; border: heavy $primary 60%; padding: 0 1; }
    WallTiers Label { text-style: bold; }
    WallTiers Digits { width: auto; }
    WallTiers .ok { color: $success; }
    WallTiers .warn { color: $warning; }
    WallTiers .bad { color: $error; }
    WallTiers .stale { color: $text-muted; }
    """

    def __init__(self, thresholds: Thresholds, order: TierOrder, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.thresholds = thresholds
        self.order = order
        self._names: list[str] = []
        self._digits: dict[str, Digits] = {}

    def show(self, quotas: Mapping[str, Quota | None], traffic: TrafficSample | None, stale: bool) -> None:
        by_tier = {t.tier: t for t in traffic.tiers} if traffic else {}
        known = {n: quotas.get(n) for n in set(quotas) | set(by_tier)}  # the state's quotas only
        names = self.order.sort(known, known)[:MAX_WALL_TIERS]
        if names != self._names:
            self._names = names
            self.remove_children()
            self._digits = {n: Digits("-") for n in names}
            self.mount_all([Vertical(Label(f"{n} rejected"), self._digits[n]) for n in names])
        for name in names:
            t = by_tier.get(name)
            pct = reject_pct(t.rejected_rps, t.accepted_rps) if t else None
            digits = self._digits[name]
            digits.update("-" if pct is None else f"{pct:.0f}%" if pct >= 10 else f"{pct:.1f}%")
            cls = "stale" if stale else STYLE_CLASS.get(self.thresholds.reject_style(pct), "")
            for c in ("ok", "warn", "bad", "stale"):
                digits.set_class(c == cls, c)

    def compose(self) -> ComposeResult:
        yield from ()


class CycleLine(Static):
    """Which panel the wall shows and whether the cycle runs: a paused wall must not pass for a live one."""

    DEFAULT_CSS = """
    CycleLine { height: 1; padding: 0 1; background: $boost; }
    CycleLine.-paused { background: $warning 40%; text-style: bold; }
    """

    def show(self, panel: str, index: int, count: int, paused: bool, next_in_s: float | None) -> None:
        t = Text()
        if paused:
            t.append(f"⏸ CYCLE PAUSED on {panel} ({index}/{count})", style="bold")
            t.append("  · space resumes · ← → other panels")
        else:
            t.append(f"▶ {panel} ({index}/{count})", style="bold")
            if next_in_s is not None:
                t.append(f"  · next panel in {max(0, round(next_in_s))} s")
            t.append("  · space pauses")
        self.set_class(paused, "-paused")
        self.update(t)


__all__ = ["CycleLine", "WallDigits", "WallTiers"]
