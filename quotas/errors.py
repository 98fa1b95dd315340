"""The exceptions of the quota layer, and the one place that turns driver errors into them."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from quotas.model import _CRED_RE, QuotaError, iso
from quotas.safe import safe

if TYPE_CHECKING:
    from quotas.model import Quota



def redact(text: str) -> str:
    """Hide credentials in any URL inside `text` (`redis://:secret@h` -> `redis://***@h`)."""
    return _CRED_RE.sub(r"\1***@", text)


class ErrorKind(StrEnum):
    """Why a source (Redis, a node, NVML) gave no fresh data: carried beside the message, so nobody
    re-parses error text. The values are the `redis.status` names of `snapshot --json`."""

    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    OUT_OF_MEMORY = "out_of_memory"
    READ_ONLY_REPLICA = "read_only_replica"
    PERSISTENCE_ERROR = "persistence_error"
    LOADING = "loading"
    UNAVAILABLE = "unavailable"  # answers but cannot decide now for another reason (BUSY, CLUSTERDOWN, ...)
    BAD_DATA = "bad_data"
    ERROR = "error"


# the first word of a "cannot decide now" error reply -> its kind
UNAVAILABLE_KIND = {
    "OOM": ErrorKind.OUT_OF_MEMORY,
    "READONLY": ErrorKind.READ_ONLY_REPLICA,
    "MISCONF": ErrorKind.PERSISTENCE_ERROR,
    "LOADING": ErrorKind.LOADING,
}


class UnknownTier(QuotaError):
    """The tier has no quota (and the call did not ask to create it)."""


class Conflict(Exception):
    """A compare-and-set lost: someone changed the tier since the version the caller read.

    `current` is the quota now stored (None when the tier does not exist)."""

    def __init__(self, tier: str, expected: int | None, current: Quota | None) -> None:
        self.tier = tier
        self.expected = expected
        self.current = current
        if current is None:
            msg = f"tier {tier!r} does not exist (you expected version {expected})"
        else:
            msg = (
                f"tier {tier!r} was changed by {current.updated_by} at {iso(current.updated_at)}: "
                f"it is at version {current.version}, you expected version {expected}; "
                "re-read it and try again"
            )
        super().__init__(msg)


class Unreachable(Exception):
    """The Redis server could not be reached or did not answer in time. The message has no password, and
    what the server said in it is made visible, never interpreted (quotas.safe)."""

    kind = ErrorKind.UNREACHABLE

    def __init__(self, message: str) -> None:
        super().__init__(safe(redact(message), 400))


class Unavailable(Unreachable):
    """The server answered but cannot decide now: out of memory under `noeviction`, a read-only replica
    (a gateway still pointed at the old primary after a failover), loading its data, busy with a script,
    or a cluster without a majority. To a gateway this is no answer, so `fail_open` admits it too.
    `code` is the reply's first word (OOM, READONLY, ...), `kind` what it means."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.kind = UNAVAILABLE_KIND.get(code, ErrorKind.UNAVAILABLE)


class AuthFailed(Unreachable):
    """The server refused the login: a wrong or missing password, or a disabled ACL user. The message
    has no password; to a gateway this is no answer too (a rotated password must not stop the service)."""

    kind = ErrorKind.AUTH_FAILED


class NotACluster(Unreachable):
    """Cluster mode was forced (`--redis-cluster`) on a server that is not a cluster member: a setting to
    change, not an outage to wait out (exit 2)."""

    kind = ErrorKind.ERROR


class BadData(Exception):
    """A surgewatch key holds the wrong type or garbage where a structure is needed; the message names
    the key and the repair."""

    kind = ErrorKind.BAD_DATA

    def __init__(self, key: str, what: str, fix: str) -> None:
        self.key = key
        super().__init__(f"{key} is not {what} (WRONGTYPE): {fix}")


class BrokenQuota(Exception):
    """A tier's stored quota is unreadable (junk values, wrong type): refused, never guessed."""

    kind = ErrorKind.BAD_DATA

    def __init__(self, tier: str, what: str) -> None:
        self.tier = tier
        self.what = what = safe(what, 300)  # quotes what Redis holds: outside text
        super().__init__(
            f"the stored quota of tier {tier!r} is broken ({what}); repair it with "
            f"`surgewatch quota set {safe(tier, 60)} LIMIT/WINDOW`"
        )
