"""The response header fields of one decision: draft-ietf-httpapi-ratelimit-headers-11, Retry-After, ours.

One rule for both enforcers (the Envoy rate limit service and the ASGI middleware), so a client sees the
same fields whichever front it went through:

    ratelimit-policy: "free";q=3;w=86400      the tier's per-user quota: q requests per w seconds
    ratelimit: "free";r=2;t=3600              r of them left, the window resets in t seconds
    retry-after: 3600                         only when refused: whole seconds, rounded up, at least 1
    x-surgewatch-reason: user_quota           why (ok, shadow, user_quota, tier_cap, paused, unknown_tier,
                                              fail_open, unavailable, invalid_request)

The policy and ratelimit fields are sent only when the limiter named the tier's limit and its window is
known: an unknown tier or a decision Redis could not make has no quota to describe. Names are lowercase
(HTTP/2 and gRPC metadata require it; HTTP/1 clients match names case-insensitively).
"""

from __future__ import annotations

import math

from quotas.limiter import Decision

REASON_HEADER = "x-surgewatch-reason"


def reset_after_s(window_s: int, now_s: float) -> int:
    """Seconds until the fixed window that holds `now_s` ends (windows are aligned to epoch multiples of W)."""
    return window_s - int(now_s) % window_s


def retry_after_header_s(retry_after_s: float) -> int:
    """Retry-After is whole seconds: rounded up (never early), at least 1 (0 would invite a busy loop)."""
    return max(1, math.ceil(retry_after_s))


def rate_limit_headers(tier: str, decision: Decision, reason: str, window_s: int | None,
                       now_s: float) -> list[tuple[str, str]]:
    """The header fields for `decision` of `tier` (a legal tier name: safe inside a Structured Field string)."""
    out: list[tuple[str, str]] = []
    if decision.limit is not None and window_s:
        out.append(("ratelimit-policy", f'"{tier}";q={decision.limit};w={window_s}'))
        out.append(("ratelimit", f'"{tier}";r={max(0, decision.remaining)};t={reset_after_s(window_s, now_s)}'))
    if not decision.allowed and decision.retry_after_s > 0:
        out.append(("retry-after", str(retry_after_header_s(decision.retry_after_s))))
    out.append((REASON_HEADER, reason))
    return out
