"""The one sanitiser for strings that come from outside (exporter labels, node names, Prometheus'
`lastError`, tier names, actors, reasons, server error messages) before any view shows them.

A terminal interprets control characters: `ESC ] 2 ; ... BEL` renames the operator's window, `ESC [ 8 m`
hides what follows, a C1 `CSI` (0x9b) does the same in one byte, a bidi override reorders what is read.
`safe` makes every such character visible as its escape (`\\x1b`, `\\u202e`) so it is shown, never
interpreted, and bounds the length so a hostile string cannot fill a screen or a log. It lives in the
lowest layer (quotas) so collectors, the core and the front ends all apply the same rule at the edge
where a string enters.
"""

from __future__ import annotations

import hashlib
import re

MAX_CHARS = 200
"""Longest text kept from one outside string (a label, a name, one error message)."""

ELLIPSIS = "…"

# C0 controls (tab and newline included: a newline would forge a line in a table or a log), DEL and the C1
# controls, the bidi embeddings/overrides/isolates and marks, line and paragraph separators, zero-width
# space and BOM, and lone surrogates (a terminal cannot encode them)
_UNSAFE_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)


def _visible(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, max_chars: int = MAX_CHARS) -> str:
    """`text` with every control character and escape sequence made visible, at most `max_chars` long
    (cut with an ellipsis). Idempotent: what it returns passes through it unchanged (within the bound)."""
    s = text if isinstance(text, str) else str(text)
    if len(s) <= max_chars and _UNSAFE_RE.search(s) is None:
        return s  # the common case: nothing to change, no copy
    shown = _UNSAFE_RE.sub(_visible, s[: max_chars + 1])
    if len(shown) > max_chars:
        shown = shown[: max_chars - 1] + ELLIPSIS
    return shown


def safe_opt(text: str | None, max_chars: int = MAX_CHARS) -> str | None:
    """`safe` for an optional string: None stays None (an absent label is n/a, not "None")."""
    return None if text is None else safe(text, max_chars)


def safe_name(text: str, max_chars: int = MAX_CHARS) -> str:
    """`safe` for a name that identifies something (a model): two names that differ only past the cut stay two,
    the cut one ending in a digest of the whole (`…#1a2b3c4d`). Names within the bound are `safe`'s."""
    if len(text) <= max_chars:
        return safe(text, max_chars)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return safe(text, max_chars - 9)[:-1] + f"{ELLIPSIS}#{digest}"
