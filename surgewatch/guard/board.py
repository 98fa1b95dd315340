"""The guard's board in Redis: its status and its proposals, so that every console sees them.

Keys (prefix `P`, see quotas/keys.py and the README's key schema):
- `P{T}:proposal` (string, JSON, expires after the policy's `proposal_ttl_s`): the guard's proposal for
  tier T: the quota it proposes, the version it was computed against, the reason and the preview;
  `state` is `open`, then `accepted` (by whom, the version written) or `dismissed` (by whom);
- `Pguard:status` (string, JSON, expires a few intervals after the guard's last look): who runs it,
  its mode and what it is doing (`watching`, `frozen` with the reason, `waiting` for its step interval, ...);
- `Pguard:events` (pub/sub channel): one JSON message per proposal made, accepted or dismissed.

Accepting a proposal writes it through the store as the operator's own change (their name, a
compare-and-set against the version the guard read, the same temporary override); a tier changed
since is refused as a Conflict and the proposal is withdrawn.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from quotas.keys import DEFAULT_PREFIX, Keys
from quotas.model import Quota, QuotaSpec

TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Proposal:
    """One step the guard proposes: set `tier` to `spec` for `for_s` seconds, from version `version`."""

    id: str
    tier: str
    kind: str  # shed, give_back
    spec: QuotaSpec
    old_spec: QuotaSpec  # the quota the proposal replaces
    for_s: int
    version: int
    reason: str
    actor: str  # the guard that made it
    at: float  # epoch seconds
    state: str = "open"  # open, accepted, dismissed
    by: str = ""  # who accepted or dismissed it
    result_version: int = 0  # the version an accepted proposal was written as

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["quota"] = self.spec.spec
        return d

    @classmethod
    def from_json(cls, text: Any) -> Proposal | None:
        try:
            d = json.loads(text.decode() if isinstance(text, bytes) else text)
            return cls(
                id=str(d["id"]), tier=str(d["tier"]), kind=str(d["kind"]), spec=QuotaSpec(**d["spec"]),
                old_spec=QuotaSpec(**d["old_spec"]), for_s=int(d["for_s"]), version=int(d["version"]),
                reason=str(d["reason"]), actor=str(d["actor"]), at=float(d["at"]), state=str(d.get("state", "open")),
                by=str(d.get("by", "")), result_version=int(d.get("result_version", 0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # junk under the key: no proposal


class Board:
    """Read and write the guard's keys on one Redis client (short timeouts: never block a caller long)."""

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.keys = Keys(prefix)

    def proposal_key(self, tier: str) -> str:
        return self.keys.guard_proposal(tier)

    @property
    def status_key(self) -> str:
        return self.keys.guard_status

    @property
    def channel(self) -> str:
        return self.keys.guard_events

    async def _t(self, aw: Any) -> Any:
        async with asyncio.timeout(TIMEOUT_S):
            return await aw

    async def _announce(self, kind: str, p: Proposal) -> None:
        msg = {"kind": kind, "tier": p.tier, "id": p.id, "quota": p.spec.spec, "by": p.by or p.actor}
        await self._t(self.client.publish(self.channel, json.dumps(msg)))

    async def put_status(self, status: dict[str, Any], ttl_s: int) -> None:
        await self._t(self.client.set(self.status_key, json.dumps(status), ex=max(1, ttl_s)))

    async def status(self) -> dict[str, Any] | None:
        raw = await self._t(self.client.get(self.status_key))
        try:
            d = json.loads(raw) if raw else None
        except ValueError:
            return None
        return d if isinstance(d, dict) else None

    async def propose(self, p: Proposal, ttl_s: int) -> None:
        await self._t(self.client.set(self.proposal_key(p.tier), json.dumps(p.to_json()), ex=max(1, ttl_s)))
        await self._announce("proposal", p)

    async def proposals(self, tiers: list[str] | tuple[str, ...]) -> dict[str, Proposal]:
        """The proposals (any state) of these tiers, in one round trip."""
        if not tiers:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for t in tiers:
            pipe.get(self.proposal_key(t))
        raws = await self._t(pipe.execute(raise_on_error=False))
        out = {}
        for t, raw in zip(tiers, raws, strict=False):
            p = Proposal.from_json(raw) if raw and not isinstance(raw, Exception) else None
            if p is not None and p.tier == t:
                out[t] = p
        return out

    async def _mark(self, p: Proposal) -> None:
        await self._t(self.client.set(self.proposal_key(p.tier), json.dumps(p.to_json()), keepttl=True, xx=True))

    async def withdraw(self, tier: str) -> None:
        await self._t(self.client.delete(self.proposal_key(tier)))

    async def dismiss(self, p: Proposal, by: str) -> Proposal:
        done = replace(p, state="dismissed", by=by)
        await self._mark(done)
        await self._announce("dismissed", done)
        return done

    async def accept(self, store: Any, p: Proposal, actor: str) -> Quota:
        """Write the proposal as `actor`'s own change (CAS on the version the guard read); Conflict if the tier
        changed since (the proposal is withdrawn then)."""
        from quotas.errors import Conflict

        reason = f"accepted guard proposal {p.id}: {p.reason}"[:500]
        try:
            q: Quota = await store.set(p.tier, p.spec, actor=actor, reason=reason, expect_version=p.version,
                                       for_s=p.for_s)
        except Conflict:
            await self.withdraw(p.tier)
            raise
        done = replace(p, state="accepted", by=actor, result_version=q.version)
        await self._mark(done)
        await self._announce("accepted", done)
        return q


def new_id(tier: str, now: float | None = None) -> str:
    """A short id an operator can read out: the tier and the time in ms."""
    return f"{tier}-{int((time.time() if now is None else now) * 1000) % 10**9:09d}"
