"""Backup and restore of quotas: `quota export` and `quota import`, and the console's restore.

A backup is the JSON list `quota list --json` prints (the `Quota.to_json` objects; extra keys such as
`state` are ignored, `no_quota` entries skipped). A restore goes through the store like any change:
validated whole before anything is written (a malformed file writes nothing), compare-and-set against
the version read, one audit entry per tier changed. A tier changed by someone since it was read is left
as that person made it (reported as a conflict, never overwritten).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from quotas.errors import BrokenQuota, Conflict
from quotas.model import MAX_WINDOW_S, Quota, QuotaError, QuotaSpec, validate_tier
from quotas.safe import safe

FIELDS = ("tier", "limit", "window_s", "tier_cap_rps", "paused", "mode", "expires_at")
MAX_IMPORT_TIERS = 1_000
"""Tiers one import may hold by default: no sane deployment has this many (five tiers is typical); a bigger
file is refused whole before anything is written (`quota import --max-tiers N` raises it)."""


@dataclass(frozen=True, slots=True)
class Saved:
    """One tier's quota as a backup holds it: what to write, and until when (None: permanent)."""

    tier: str
    spec: QuotaSpec
    expires_at: float | None = None

    def same_as(self, other: Saved) -> bool:
        """The same quota; expiries equal to the second (a backup writes them in whole seconds)."""
        if (self.tier, self.spec) != (other.tier, other.spec):
            return False
        if self.expires_at is None or other.expires_at is None:
            return self.expires_at is other.expires_at
        return abs(self.expires_at - other.expires_at) < 1.0

    @classmethod
    def of(cls, q: Quota) -> Saved:
        return cls(q.tier, QuotaSpec(q.limit, q.window_s, q.tier_cap_rps, q.paused, q.mode), q.expires_at)


def _iso_to_epoch(value: Any, where: str) -> float | None:
    if value is None:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise QuotaError(f"{where}: expires_at {value!r} is not an ISO 8601 time") from None


def parse_backup(text: str, *, source: str = "the file", max_tiers: int = MAX_IMPORT_TIERS) -> list[Saved]:
    """The quotas of a backup, every entry validated; QuotaError (exit 2) naming the first bad one, or the bound
    it breaks: more than `max_tiers` entries, or JSON nested deeper than Python's parser goes (a backup is a
    list of flat objects: two levels)."""
    def no_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json keeps the last of a repeated key: {"tier": "free", "tier": "plus"} would write `plus`, unseen
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise QuotaError(f"{source} names {safe(k, 60)!r} twice in one object: refused, nothing written")
            out[k] = v
        return out

    try:
        doc = json.loads(text, object_pairs_hook=no_twice)
    except json.JSONDecodeError as e:
        raise QuotaError(f"{source} is not JSON ({e.msg} at line {e.lineno}): expected `quota export` output") from None
    except RecursionError:
        raise QuotaError(f"{source} nests JSON deeper than a backup ever does (a backup is a list of flat "
                         "objects): refused, nothing written") from None
    if not isinstance(doc, list):
        raise QuotaError(f"{source} is not a list of quotas: expected `quota export` output")
    if len(doc) > max_tiers:
        raise QuotaError(f"{source} holds {len(doc):,} entries, over the bound of {max_tiers:,} tiers per import "
                         "(--max-tiers N raises it): refused, nothing written")
    out: list[Saved] = []
    seen: set[str] = set()
    for i, d in enumerate(doc, 1):
        where = f"{source}, entry {i}"
        if not isinstance(d, dict):
            raise QuotaError(f"{where}: not an object")
        if d.get("state") == "no_quota":
            continue
        missing = [k for k in FIELDS if k not in d]
        if missing:
            raise QuotaError(f"{where}: missing {', '.join(missing)}")
        tier = validate_tier(d["tier"]) if isinstance(d["tier"], str) else validate_tier(str(d["tier"]))
        if tier in seen:
            raise QuotaError(f"{where}: tier {tier!r} appears twice")
        seen.add(tier)
        for key, types in (("limit", int), ("window_s", int), ("tier_cap_rps", (int, type(None))),
                           ("paused", bool), ("mode", str)):
            v = d[key]
            if not isinstance(v, types) or (key != "paused" and isinstance(v, bool)):
                raise QuotaError(f"{where} (tier {tier}): {key} {v!r} has the wrong type")
        try:
            spec = QuotaSpec(d["limit"], d["window_s"], d["tier_cap_rps"], d["paused"], d["mode"])
        except (QuotaError, TypeError, ValueError) as e:
            raise QuotaError(f"{where} (tier {tier}): {e}") from None
        out.append(Saved(tier, spec, _iso_to_epoch(d["expires_at"], where)))
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    tier: str
    action: str  # written, unchanged, skipped (exists), conflict, expired
    quota: Quota | None = None
    detail: str = ""


async def restore(
    store: Any, saved: list[Saved], *, actor: str, reason: str, only_missing: bool = False,
    now: float | None = None,
) -> list[Outcome]:
    """Write each saved quota through the store (CAS against what was read); one Outcome per tier."""
    now = time.time() if now is None else now
    await store.check_room([s.tier for s in saved])  # the bound of tiers in all, before anything is written
    out: list[Outcome] = []
    for s in saved:
        try:
            current = await store.get(s.tier)
            version = current.version if current else 0
        except BrokenQuota:
            current, version = None, None  # a broken value is repaired by a full set, whatever its version
        if current is not None and only_missing:
            out.append(Outcome(s.tier, "skipped (exists)", current))
            continue
        if current is not None and Saved.of(current).same_as(s):
            out.append(Outcome(s.tier, "unchanged", current))
            continue
        for_s = None
        if s.expires_at is not None:
            left = int(s.expires_at - now)
            if left < 1:
                out.append(Outcome(s.tier, "expired", current, "its temporary override ended: not restored"))
                continue
            for_s = min(left, MAX_WINDOW_S)
        try:
            q = await store.set(
                s.tier, s.spec, actor=actor, reason=reason, expect_version=version, create=True, for_s=for_s,
            )
        except Conflict as e:
            out.append(Outcome(s.tier, "conflict", e.current, str(e)))
            continue
        out.append(Outcome(s.tier, "written", q))
    return out
