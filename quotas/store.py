"""`QuotaStore`: list, get, set with compare-and-set, pause/resume, history and what-if preview.

Every change is one call of the library's `sw_set`, which validates, bumps the version, writes the
audit entry and publishes the event atomically with the change. Reads are plain commands, so a
read-only ACL user can list and get (an expired override is shown as its fallback, computed here).
"""

from __future__ import annotations

import builtins
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from quotas.codec import effective, quota_from_hash, quota_from_json
from quotas.errors import BadData, BrokenQuota, Conflict, UnknownTier, Unreachable
from quotas.keys import DEFAULT_PREFIX, Keys
from quotas.library import UNREACHABLE_ERRORS, bounded, fcall, installed_version, load_library, text, unreachable
from quotas.model import (
    MAX_WINDOW_S,
    Quota,
    QuotaError,
    QuotaSpec,
    iso,
    validate_actor,
    validate_reason,
    validate_tier,
)
from quotas.preview import Impact, impact_from
from quotas.safe import safe

log = logging.getLogger(__name__)

# `surgewatch init` seeds these where absent (never overwrites): (limit, window_s)
SEED_TIERS: dict[str, tuple[int, int]] = {
    "free": (20, 86400),
    "plus": (200, 86400),
    "pro": (600, 3600),
    "team": (3000, 3600),
    "enterprise": (20000, 3600),
}

__all__ = [
    "SEED_TIERS",
    "AuditEntry",
    "BrokenQuota",
    "Conflict",
    "Impact",
    "QuotaStore",
    "UnknownTier",
    "Unreachable",
]


@dataclass(frozen=True)
class AuditEntry:
    """One accepted change of a tier's quota, as written atomically with it. `at` is epoch seconds."""

    id: str
    tier: str
    actor: str
    at: float
    version: int
    old: Quota | None
    new: Quota | None
    reason: str
    kind: str = "set"  # set, pause, resume, expired
    at_us: int = 0  # server microseconds: orders entries of different tiers written in the same ms
    old_broken: dict[str, Any] | None = None
    """What stood before a repair, when it was no quota: {"broken": why, "type": ..., "raw": ...} as the library
    recorded it (old is then None)."""

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape (`surgewatch quota history --json`): a contract, keep keys stable. `old` is the
        quota object, the broken value a repair replaced (`{"broken", "type", "raw"}`), or null (a new tier)."""
        return {
            "tier": self.tier,
            "actor": self.actor,
            "at": iso(self.at),
            "version": self.version,
            "old": self.old.to_json() if self.old else self.old_broken,
            "new": self.new.to_json() if self.new else None,
            "reason": self.reason,
        }


def _entry(tier: str, entry_id: Any, fields: dict[Any, Any]) -> AuditEntry:
    f = {text(k): text(v) for k, v in fields.items()}
    try:
        at = int(f.get("at", "0")) / 1000.0
        version = int(f.get("version", "0"))
        at_us = int(f.get("at_us") or at * 1e6)
    except ValueError:
        at, version, at_us = 0.0, 0, 0
    old = quota_from_json(f.get("old"))
    return AuditEntry(  # the stream's fields are outside text (anyone may XADD): made visible (quotas.safe)
        id=text(entry_id), tier=safe(f.get("tier", tier)), actor=safe(f.get("actor", "")), at=at, version=version,
        old=old, new=quota_from_json(f.get("new")), reason=safe(f.get("reason", ""), 400),
        kind=safe(f.get("kind", "set"), 40), at_us=at_us, old_broken=None if old is not None else _broken(f.get("old")),
    )


def _broken(value: str | None) -> dict[str, Any] | None:
    """The library's record of a broken value (`{"broken": why, "type", "raw"}`), or None."""
    try:
        d = json.loads(value or "")
    except ValueError:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("broken"), str):
        return None
    return {"broken": d["broken"], "type": d.get("type"), "raw": d.get("raw")}


MAX_TIERS = 10_000
"""Tiers in all, by default: no sane deployment meets it, and a console, a guard and a poll read every tier;
a change that would create one more is refused (QuotaError, exit 2), naming the bound."""


class QuotaStore:
    """The control plane's read/write API over one Redis (or Redis Cluster) client."""

    def __init__(
        self, client: Any, *, prefix: str = DEFAULT_PREFIX, timeout_s: float = 5.0, read_only: bool = False,
        max_tiers: int = MAX_TIERS,
    ) -> None:
        self.client = client
        self.max_tiers = max_tiers
        """The most tiers the registry may hold: creating one more is refused (`check_room`)."""
        self.read_only = read_only
        """Never write, not even an expired override's fallback (the console's --read-only)."""
        self.keys = Keys(prefix)
        self.timeout_s = timeout_s
        self.broken: dict[str, str] = {}
        """Tiers the last `list()` skipped because their stored quota is unreadable: tier -> message."""
        self.missing: list[str] = []
        """Tiers the last `list()` found in the registry without a quota: gateways get unknown_tier."""
        self.library_before: int | None = None
        """The library version the server had before the last `init()` (None: it had none)."""

    async def _b(self, make: Any) -> Any:
        return await bounded(self.client, make, self.timeout_s)

    async def _pipe(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """One pipelined round trip (per cluster node) of ("method", key[, kwargs]) calls; errors as values."""
        if not calls:
            return []

        async def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for method, key, *kw in calls:
                getattr(pipe, method)(key, **(kw[0] if kw else {}))
            return await pipe.execute(raise_on_error=False)

        replies = await self._b(run)
        lost = next((r for r in replies if isinstance(r, UNREACHABLE_ERRORS)), None)
        if lost is not None:  # a cluster shard that did not answer: an outage, never a broken key
            raise unreachable(self.client, lost, self.timeout_s)
        return list(replies)

    async def init(self) -> list[str]:
        """Load (or upgrade) the functions library and seed the default tiers where absent; returns tiers created."""
        if self.read_only:
            raise QuotaError("this quota store is read-only: nothing is written")
        self.library_before = await self._b(lambda: installed_version(self.client))
        await self._b(lambda: load_library(self.client))
        await self.registry()  # a registry of the wrong type: named (BadData) before anything is written
        created: list[str] = []
        for tier, (limit, window_s) in SEED_TIERS.items():
            try:
                await self.set(
                    tier,
                    QuotaSpec(limit, window_s),
                    actor="surgewatch init",
                    reason="seed default quota",
                    expect_version=0,
                    create=True,
                )
            except Conflict:
                continue
            created.append(tier)
        return created

    async def _read(self, tier: str, raw: dict[Any, Any]) -> Quota:
        q, prev = quota_from_hash(tier, raw)
        if q.expires_at is None:
            return q
        now = await self._now()
        if now < q.expires_at:
            return q
        if self.read_only:
            return effective(q, prev, now)
        try:  # persist the fallback when we may write; a read-only user still sees it
            reply = await fcall(self.client, "sw_get", [self.keys.quota(tier)], [], timeout_s=self.timeout_s)
            got = quota_from_json(reply[1]) if text(reply[0]) == "ok" else None
            if got is not None:
                return got
        except ResponseError as e:
            log.debug("cannot persist the expiry of tier %s: %s", tier, e)
        return effective(q, prev, now)

    async def _now(self) -> float:
        """The server's clock (the limiter's), or ours when an ACL forbids TIME (`+@read` lacks it)."""
        try:
            secs, usecs = await self._b(lambda: self.client.time())
        except ResponseError:
            return time.time()
        return int(secs) + int(usecs) / 1e6

    async def registry(self) -> set[str]:
        """The names in the tier registry; BadData (naming the key and the repair) if it is not a set."""
        try:
            members = await self._b(lambda: self.client.smembers(self.keys.tiers))
        except ResponseError as e:
            if "WRONGTYPE" not in str(e):
                raise
            raise BadData(
                self.keys.tiers, "a set",
                f"redis-cli DEL {self.keys.tiers}, then `surgewatch init` re-creates the registry (quotas are kept)",
            ) from None
        return {text(m) for m in members}

    async def check_room(self, tiers: builtins.list[str]) -> None:
        """QuotaError (nothing written) when creating those of `tiers` the registry lacks would take it past
        `max_tiers`."""
        try:
            stored = await self._b(lambda: self.client.scard(self.keys.tiers))
        except ResponseError:
            stored = None  # not a set: registry() below names it (BadData)
        if stored is not None and stored + len(tiers) <= self.max_tiers:
            return  # one SCARD per create in the common case: room whatever the registry holds
        registry = await self.registry()
        new = set(tiers) - registry
        if new and len(registry) + len(new) > self.max_tiers:
            raise QuotaError(
                f"refused: {len(new):,} new tier{'s' if len(new) != 1 else ''} on top of the {len(registry):,} "
                f"stored would pass the bound of {self.max_tiers:,} tiers in all (SURGEWATCH_MAX_TIERS raises it); "
                "nothing written")

    async def list(self) -> list[Quota]:
        """All tiers' quotas, sorted by tier; unreadable ones are skipped, logged and kept in `self.broken`;
        registered tiers without a quota are kept in `self.missing`."""
        members = await self.registry()
        tiers = sorted({text(m) for m in members})
        broken: dict[str, str] = {}
        missing: builtins.list[str] = []
        valid = []
        for t in tiers:
            try:
                valid.append(validate_tier(t))
            except QuotaError:
                broken[t] = f"invalid tier name {t[:40]!r} in the registry {self.keys.tiers}"
        raws = await self._pipe([("hgetall", self.keys.quota(t)) for t in valid])
        out: builtins.list[Quota] = []
        for t, raw in zip(valid, raws, strict=False):
            if isinstance(raw, Exception):
                broken[t] = str(BrokenQuota(t, "the quota key is not a hash"))
                continue
            if not raw:
                missing.append(t)  # registered, but its quota is gone: every decision is unknown_tier
                continue
            try:
                out.append(await self._read(t, raw))
            except BrokenQuota as e:
                broken[t] = str(e)
        for t, msg in broken.items():
            log.warning("skipping tier %s: %s", safe(t, 60), msg)  # a name from Redis: outside text
        self.broken = broken
        self.missing = missing
        return out

    async def get(self, tier: str) -> Quota | None:
        """The tier's quota, or None if it does not exist; BrokenQuota if its stored value is junk."""
        validate_tier(tier)
        try:
            raw = await self._b(lambda: self.client.hgetall(self.keys.quota(tier)))
        except ResponseError:
            raise BrokenQuota(tier, "the quota key is not a hash") from None
        if not raw:
            return None
        return await self._read(tier, raw)

    async def _change(
        self,
        tier: str,
        kind: str,
        actor: str,
        reason: str,
        expect_version: int | None,
        create: bool,
        for_s: int | None,
        spec: QuotaSpec | None,
    ) -> Quota:
        if self.read_only:
            raise QuotaError("this quota store is read-only: nothing is written")
        validate_tier(tier)
        actor = validate_actor(actor)
        reason = validate_reason(reason)
        if expect_version is not None and (
            isinstance(expect_version, bool) or not isinstance(expect_version, int) or expect_version < 0
        ):
            raise QuotaError(f"invalid expected version {expect_version!r}: a whole number from 0")
        if for_s is not None and (
            isinstance(for_s, bool) or not isinstance(for_s, int) or not 1 <= for_s <= MAX_WINDOW_S
        ):
            raise QuotaError(f"invalid duration {for_s!r}: an override lasts from 1s to 31d")
        if spec is not None and not isinstance(spec, QuotaSpec):
            raise QuotaError("invalid quota: a QuotaSpec is expected")
        if create:
            await self.check_room([tier])
            # the registry lives outside the tier's hash slot, so it cannot join the atomic call
            await self._b(lambda: self.client.sadd(self.keys.tiers, tier))
        s = spec or QuotaSpec(0, 1)
        args = [
            kind,
            actor,
            reason,
            "" if expect_version is None else str(expect_version),
            "1" if create else "0",
            "" if for_s is None else str(for_s),
            str(s.limit),
            str(s.window_s),
            "" if s.tier_cap_rps is None else str(s.tier_cap_rps),
            "1" if s.paused else "0",
            s.mode,
        ]
        status, body = await fcall(self.client, "sw_set", [self.keys.quota(tier)], args, timeout_s=self.timeout_s)
        status = text(status)
        if status == "ok":
            q = quota_from_json(body)
            assert q is not None, "the library returns the quota it wrote"
            return q
        if status == "conflict":
            raise Conflict(tier, expect_version, quota_from_json(body))
        if status == "unknown":
            # pause and resume have no --create: the one command that creates a tier is named
            raise UnknownTier(f"unknown tier {tier!r}: create it with `surgewatch quota set {tier} LIMIT/WINDOW "
                              "--create` (see `surgewatch quota list`)")
        raise BrokenQuota(tier, text(body))

    async def set(
        self,
        tier: str,
        spec: QuotaSpec,
        *,
        actor: str,
        reason: str = "",
        expect_version: int | None = None,
        create: bool = False,
        for_s: int | None = None,
    ) -> Quota:
        """Replace the tier's quota with `spec` (atomic, audited, published).

        `expect_version`: compare-and-set (0 = only if the tier does not exist); `create`: allow a new tier;
        `for_s`: a temporary override that falls back to the last permanent quota after that many seconds."""
        if not isinstance(spec, QuotaSpec):
            raise QuotaError("invalid quota: a QuotaSpec is expected")
        return await self._change(tier, "set", actor, reason, expect_version, create, for_s, spec)

    async def pause(self, tier: str, *, actor: str, reason: str = "", expect_version: int | None = None) -> Quota:
        """Refuse everyone in the tier (reason `paused`); everything else is kept."""
        return await self._change(tier, "pause", actor, reason, expect_version, False, None, None)

    async def resume(self, tier: str, *, actor: str, reason: str = "", expect_version: int | None = None) -> Quota:
        """Undo `pause`; everything else is kept."""
        return await self._change(tier, "resume", actor, reason, expect_version, False, None, None)

    async def history(self, tier: str | None = None, count: int = 20) -> builtins.list[AuditEntry]:
        """The newest `count` audit entries, newest first, of one tier or (tier None) of all tiers merged."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
            raise QuotaError(f"invalid count {count!r}: a whole number from 1 to 10000")
        tiers = [validate_tier(tier)] if tier is not None else sorted(t for t in await self.registry() if _legal(t))
        if not tiers:
            return []
        results = await self._pipe([("xrevrange", self.keys.audit(t), {"count": count}) for t in tiers])
        entries: builtins.list[AuditEntry] = []
        for t, rows in zip(tiers, results, strict=False):
            if isinstance(rows, Exception):
                log.warning("skipping the audit stream of tier %s: %s", t, rows)
                continue
            entries.extend(_entry(t, i, f) for i, f in rows)
        entries.sort(key=lambda e: (e.at_us, _seq(e.id)), reverse=True)
        return entries[:count]

    async def preview(self, tier: str, spec: QuotaSpec, *, minutes: int = 5) -> Impact:
        """What-if: how many of the tier's admitted requests of the last `minutes` minutes `spec` would refuse."""
        validate_tier(tier)
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 60:
            raise QuotaError(f"invalid minutes {minutes!r}: from 1 to 60")
        minute = int(await self._now()) // 60
        calls: builtins.list[tuple[Any, ...]] = []
        for m in range(minute - minutes + 1, minute + 1):
            calls += [("hgetall", self.keys.ranks(tier, m)), ("hgetall", self.keys.counters(tier, m))]
        res = await self._pipe(calls)
        ranks = [r for r in res[0::2] if isinstance(r, dict)]
        counters = [c for c in res[1::2] if isinstance(c, dict)]
        return impact_from(spec, ranks, counters, await self._ceiling(tier, (minute - minutes + 1) * 60))

    async def _ceiling(self, tier: str, since: float) -> int | None:
        """The highest per-user limit enforced on the tier since `since` (no admitted request ranks above it),
        or None when unknown: no readable quota, or shadow mode (which admits any rank) in the period."""
        try:
            current = await self.get(tier)
        except BrokenQuota:
            return None
        if current is None:
            return None
        seen = [current]
        for e in await self.history(tier, count=200):
            if e.at < since - 1:
                if e.new is not None:
                    seen.append(e.new)  # in force when the period began
                break
            seen += [q for q in (e.old, e.new) if q is not None]
        if any(q.mode == "shadow" for q in seen):
            return None
        return max(q.limit for q in seen)


def _legal(t: str) -> bool:
    try:
        validate_tier(t)
        return True
    except QuotaError:
        return False


def _seq(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return (int(ms) if ms.isdigit() else 0, int(seq) if seq.isdigit() else 0)
