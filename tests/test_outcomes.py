"""One mapping from a failed quota operation to its words and exit code, for the CLI, the editor and the guard."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from quotas.errors import AuthFailed, BadData, BrokenQuota, Conflict, Unavailable, Unreachable
from quotas.model import QuotaError
from quotas.outcomes import not_applied, outcome


@pytest.mark.parametrize(("exc", "kind", "code"), [
    (QuotaError("invalid limit 'x'"), "bad_input", 2),
    (Conflict("free", 3, None), "conflict", 3),
    (Unreachable("Redis at h:1 is unreachable: no answer"), "unreachable", 4),
    (AuthFailed("Redis at h:1 refused the login"), "unavailable", 1),
    (Unavailable("Redis at h:1 is out of memory", "OOM"), "unavailable", 1),
    (BrokenQuota("free", "limit is 'junk'"), "broken", 1),
    (BadData("surgewatch:tiers", "a set", "DEL it"), "broken", 1),
    (ResponseError("ERR something odd"), "refused", 1),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "broken", 1),
], ids=lambda v: v if isinstance(v, str | int) else type(v).__name__)
def test_each_failure_has_one_kind_and_the_readmes_exit_code(exc: BaseException, kind: str, code: int) -> None:
    """The README's exit codes: 2 bad input, 3 conflict, 4 unreachable, 1 any other refusal."""
    o = outcome(exc)
    assert (o.kind, o.exit_code, o.known) == (kind, code, True)


def test_an_unknown_exception_is_named_and_not_taken_for_one_of_ours() -> None:
    """A bug is described by its type, exit 1, and marked unknown so the CLI lets it surface."""
    o = outcome(KeyError("x"))
    assert (o.kind, o.exit_code, o.known) == ("error", 1, False) and o.message.startswith("KeyError")


def test_the_console_says_nothing_was_changed_only_where_that_is_true() -> None:
    """An outage changed nothing; a conflict means someone else's change stands, so it does not say so."""
    assert not_applied(Unreachable("Redis at h:1 is unreachable")).endswith("nothing was changed.")
    assert "nothing was changed" not in not_applied(Conflict("free", 3, None))
