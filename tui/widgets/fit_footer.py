"""A footer that always shows `q Quit` and `? Help`, and only keys that fit whole.

Textual's Footer lists the focused widget's keys first and the app's last, and the terminal cuts what
does not fit: at 80 columns `q Quit` was gone and `e Edit quota` read `e Edit quot`. Here the keys an
operator needs first lead, and a key that would not fit whole is left out (`?` lists every key).
"""

from __future__ import annotations

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # Textual's own footer key widget (bounded by textual<9)

FIRST = ("q", "question_mark", "e")  # quit, help, edit: always first, in this order


def key_width(key: FooterKey) -> int:
    """Cells a (non-compact) footer key takes: ` k ` then `description `."""
    return cell_len(key.key_display) + 2 + (cell_len(key.description) + 1 if key.description else 0)


class FitFooter(Footer):
    def compose(self) -> ComposeResult:
        widgets = list(super().compose())
        keys = [w for w in widgets if isinstance(w, FooterKey) and not w.has_class("-command-palette")]
        rest = [w for w in widgets if w not in keys]
        keys.sort(key=lambda k: FIRST.index(k.key) if k.key in FIRST else len(FIRST))
        budget = self.app.size.width - sum(key_width(w) + 1 for w in rest if isinstance(w, FooterKey))
        shown = []
        for k in keys:
            w = key_width(k)
            if w <= budget:
                shown.append(k)
                budget -= w
            elif k.key in FIRST[:2]:
                shown.append(k)  # never dropped; the palette hint gives way first (below)
                budget -= w
        if budget < 0:
            rest = [w for w in rest if not (isinstance(w, FooterKey) and w.has_class("-command-palette"))]
        yield from shown
        yield from rest

    def on_resize(self) -> None:
        self.call_after_refresh(self.recompose)


__all__ = ["FitFooter"]
