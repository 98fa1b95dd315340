"""Stored forms of a quota -> `Quota`: the hash in `P{T}:quota` and the JSON in audit entries.

Strict on purpose: junk in Redis becomes BrokenQuota with what is wrong, never a guessed quota.
"""

from __future__ import annotations

import json
from typing import Any

from quotas.errors import BrokenQuota
from quotas.model import MAX_LIMIT, MAX_TIER_CAP_RPS, MAX_WINDOW_S, MIN_WINDOW_S, MODES, Quota
from quotas.safe import safe

EXPIRED_BY = "surgewatch (override expired)"
# what the hash's `enforced` field joins with '|', in this order (keys.py documents it)
ENFORCED_FIELDS = ("limit", "window_s", "tier_cap_rps", "paused", "mode", "expires_at")


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _int(h: dict[str, str], k: str, lo: int, hi: int, tier: str) -> int:
    v = h.get(k)
    if v is None or not v.isdigit() or not lo <= int(v) <= hi:
        raise BrokenQuota(tier, f"{k}={v!r}")
    return int(v)


def _float(h: dict[str, str], k: str, tier: str, *, optional: bool = False) -> float | None:
    v = h.get(k)
    if optional and v == "":
        return None
    try:
        f = float(v)  # type: ignore[arg-type]  # v is a str or bytes from Redis; a bad one raises, which the caller reports
    except (TypeError, ValueError):
        raise BrokenQuota(tier, f"{k}={v!r}") from None
    if not 0 <= f < 1e11:
        raise BrokenQuota(tier, f"{k}={v!r}")
    return f


NO_ENFORCED = "no enforced field (written by hand, or by a library before v3)"  # the Lua library's words


def quota_from_hash(tier: str, raw: dict[Any, Any]) -> tuple[Quota, dict[str, Any] | None]:
    """Parse a quota hash; returns the quota and the decoded `prev` (the override's fallback) or None."""
    h = {_s(k): _s(v) for k, v in raw.items()}
    cap_text = h.get("tier_cap_rps")
    cap = None if cap_text == "" else _int(h, "tier_cap_rps", 1, MAX_TIER_CAP_RPS, tier)
    paused = h.get("paused")
    if paused not in ("0", "1"):
        raise BrokenQuota(tier, f"paused={paused!r}")
    mode = h.get("mode")
    if mode not in MODES:
        raise BrokenQuota(tier, f"mode={mode!r}")
    q = Quota(
        tier=tier,
        limit=_int(h, "limit", 0, MAX_LIMIT, tier),
        window_s=_int(h, "window_s", MIN_WINDOW_S, MAX_WINDOW_S, tier),
        tier_cap_rps=cap,
        paused=paused == "1",
        mode=mode,
        expires_at=_float(h, "expires_at", tier, optional=True),
        version=_int(h, "version", 0, 10**12, tier),
        updated_by=safe(h.get("updated_by", "")),  # anyone who can write Redis writes this: outside text
        updated_at=_float(h, "updated_at", tier) or 0.0,
    )
    enforced = h.get("enforced")
    if enforced is None:  # the limiter refuses such a hash the same way (quotas/lua/1_quota.lua)
        raise BrokenQuota(tier, NO_ENFORCED)
    # the limiter reads only `enforced` (quotas/lua/): fields that differ from it were edited
    # outside surgewatch and are not what gateways enforce, so they must not be shown as the quota
    fields = "|".join(h.get(f, "") for f in ENFORCED_FIELDS)
    if enforced != fields:
        raise BrokenQuota(tier, f"fields edited outside surgewatch ({fields}) while the limiter enforces "
                                f"{enforced}")
    prev = None
    if h.get("prev"):
        try:
            prev = json.loads(h["prev"])
        except ValueError:
            prev = None
    return q, prev if isinstance(prev, dict) else None


def quota_from_json(value: Any) -> Quota | None:
    """The library's quota JSON (audit old/new, function results) -> Quota; '' or junk -> None."""
    s = _s(value) if value is not None else ""
    if not s:
        return None
    try:
        d = json.loads(s)
        cap = d.get("tier_cap_rps")
        exp = d.get("expires_at")
        return Quota(
            tier=safe(d["tier"]), limit=int(d["limit"]), window_s=int(d["window_s"]),
            tier_cap_rps=None if cap is None else int(cap), paused=bool(d["paused"]),
            mode="shadow" if d.get("mode") == "shadow" else "enforce",
            expires_at=None if exp is None else float(exp), version=int(d["version"]),
            updated_by=safe(d.get("updated_by", "")), updated_at=float(d.get("updated_at") or 0.0),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def effective(q: Quota, prev: dict[str, Any] | None, now: float) -> Quota:
    """What the tier is once an expired override fell back (the library writes the same on next touch)."""
    if q.expires_at is None or now < q.expires_at:
        return q
    base = dict(limit=q.limit, window_s=q.window_s, tier_cap_rps=q.tier_cap_rps, paused=q.paused, mode=q.mode)
    if prev:
        try:
            cap = prev.get("tier_cap_rps")
            base = dict(
                limit=int(prev["limit"]), window_s=int(prev["window_s"]),
                tier_cap_rps=None if cap is None else int(cap), paused=prev.get("paused") is True,
                mode="shadow" if prev.get("mode") == "shadow" else "enforce",
            )
        except (KeyError, TypeError, ValueError):
            pass
    return Quota(
        tier=q.tier, expires_at=None, version=q.version + 1, updated_by=EXPIRED_BY,
        updated_at=q.expires_at, **base,  # type: ignore[arg-type]  # base holds exactly Quota's settable fields
    )
