"""What the guard says in its log: a state that lasts, once (its countdowns and readings change every second:
"next step possible in 12 s", "for 40 s"); an action, each time (its numbers are what it did); a fault, once until
it clears (Redis down for an hour is one line, not 3,600)."""

from __future__ import annotations

import re
from dataclasses import dataclass

LASTING_STATES = frozenset({"watching", "waiting", "budget", "nothing to shed", "frozen"})
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class Said:
    """The last state line and fault said, as compared (a lasting state's numbers masked)."""

    line: str = ""
    fault_text: str = ""

    def changed(self, state: str, line: str) -> bool:
        """Whether `line` (of `state`) is news to the log; remembers it."""
        key = _NUMBERS.sub("#", line) if state in LASTING_STATES else line
        news, self.line = key != self.line, key
        return news

    def fault(self, text: str) -> bool:
        """Whether the fault `text` ("" once it cleared) is news to the log; remembers it."""
        news, self.fault_text = bool(text) and text != self.fault_text, text
        return news
