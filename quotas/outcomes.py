"""The one mapping from a failed quota operation to what a person is told and what a script gets.

Used by the quota CLI (exit codes), the console's editor and the guard panel (the words on screen), so
a refused write reads the same everywhere and carries the same exit code. The CLI's exit codes are a
contract (README): 0 ok, 1 error, 2 bad input, 3 conflict, 4 Redis unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis.exceptions import ResponseError

from quotas.errors import AuthFailed, BadData, BrokenQuota, Conflict, NotACluster, Unavailable, Unreachable
from quotas.library import unavailable
from quotas.model import QuotaError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_CONFLICT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4

OutcomeKind = Literal["bad_input", "conflict", "unavailable", "unreachable", "broken", "refused", "error"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a failure means: its kind, one line for a person, the CLI's exit code. `known`: one of ours
    (an unknown exception is still described, but the CLI lets it surface as the bug it is)."""

    kind: OutcomeKind
    message: str
    exit_code: int
    known: bool = True


def outcome(exc: BaseException) -> Outcome:
    """The outcome of `exc`, from its class (never from its text, except the server's own error words)."""
    if isinstance(exc, QuotaError | NotACluster):
        return Outcome("bad_input", str(exc), EXIT_BAD_INPUT)
    if isinstance(exc, Conflict):
        return Outcome("conflict", f"conflict: {exc}", EXIT_CONFLICT)
    if isinstance(exc, AuthFailed | Unavailable):  # not an outage (a refused login, OOM, LOADING...): not exit 4
        return Outcome("unavailable", str(exc), EXIT_ERROR)
    if isinstance(exc, Unreachable):
        return Outcome("unreachable", str(exc), EXIT_UNREACHABLE)
    if isinstance(exc, BrokenQuota | BadData):
        return Outcome("broken", str(exc), EXIT_ERROR)
    if isinstance(exc, ResponseError):
        down = unavailable(None, exc)  # out of memory, a read-only replica, ...: nothing was written
        if down is not None:
            return Outcome("unavailable", str(down), EXIT_ERROR)
        if type(exc).__name__ in ("MovedError", "AskError"):  # a cluster moving the slot even now
            return Outcome("refused", f"the Redis Cluster moved a key's slot while the command ran ({exc}): it "
                           "stopped at that key; run it again (what was written is not written twice)", EXIT_ERROR)
        if "WRONGTYPE" in str(exc):
            return Outcome("broken", f"a surgewatch key holds the wrong type ({exc}); `surgewatch snapshot --json` "
                           "names it in redis.error", EXIT_ERROR)
        return Outcome("refused", f"the server refused: {exc}", EXIT_ERROR)
    if isinstance(exc, TimeoutError | ConnectionError | OSError):
        return Outcome("unreachable", f"Redis unreachable ({exc or type(exc).__name__})", EXIT_UNREACHABLE)
    return Outcome("error", f"{type(exc).__name__}: {exc}", EXIT_ERROR, known=False)


def not_applied(exc: BaseException) -> str:
    """The words a console shows when a write it was asked for failed (nothing was changed, unless a
    conflict: then someone else's change stands)."""
    o = outcome(exc)
    if o.kind in ("bad_input", "conflict", "error"):
        return f"Not applied: {o.message}"
    return f"Not applied: {o.message}; nothing was changed."
