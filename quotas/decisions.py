"""What a decision is: `Decision`, the request checks every gateway applies, and the library's replies read.

Kept apart from the `Limiter` (quotas/limiter.py) so the enforcers (quotas/rls, quotas/asgi) and the tests
name a decision without the machinery that asks Redis for one.
"""

from __future__ import annotations

from dataclasses import dataclass

from quotas.model import MAX_LIMIT, QuotaError

MAX_USER_BYTES = 128
RECORDABLE = ("blocked", "error")  # what a gateway may record itself (Limiter.record)


@dataclass(frozen=True, slots=True)
class Decision:
    """One limiter decision. `retry_after_s` is seconds (> 0 when refused); `limit` the per-user limit."""

    allowed: bool
    reason: str  # ok, user_quota, tier_cap, paused, unknown_tier, shadow
    remaining: int
    retry_after_s: float
    limit: int | None = None


def validate_user(user: str) -> str:
    """A user id is a non-empty string of at most 128 bytes (UTF-8)."""
    try:
        size = len(user.encode("utf-8")) if isinstance(user, str) else 0
    except UnicodeEncodeError:  # lone surrogates cannot be sent
        size = 0
    if not 1 <= size <= MAX_USER_BYTES:
        raise QuotaError(f"invalid user {str(user)[:40]!r}: a non-empty id of at most {MAX_USER_BYTES} bytes")
    return user


def validate_cost(cost: int) -> int:
    """A cost is a whole number from 1 to 10^9."""
    if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= MAX_LIMIT:
        raise QuotaError(f"invalid cost {cost!r}: a whole number from 1 to {MAX_LIMIT}")
    return cost


_CODES = ("ok", "shadow", "user_quota", "tier_cap", "paused", "unknown_tier")  # sw_check_many's codes
BATCH_CHUNK = 2000  # requests per sw_check_many call: bounds one call's time on the server


FAIL_OPEN = Decision(True, "ok", 0, 0.0, None)
UNKNOWN_RETRY_S = 60.0  # the library's PAUSED_RETRY_S: what it tells a request for a tier without a quota
UNKNOWN_TIER = Decision(False, "unknown_tier", 0, UNKNOWN_RETRY_S, None)
"""The library's answer for a tier without a quota (code 5, limit -1), given here to names no key can hold."""


def batch_decisions(reply: bytes | str) -> list[Decision]:
    """sw_check_many's "LIMIT CODE1 REMAINING1 RETRY_MS1 CODE2 ..." -> one Decision per request, in order."""
    nums = list(map(int, reply.split()))
    limit = None if nums[0] < 0 else nums[0]
    return [Decision(code <= 1, _CODES[code], remaining, ms / 1000.0, limit)
            for code, remaining, ms in zip(nums[1::3], nums[2::3], nums[3::3], strict=False)]
