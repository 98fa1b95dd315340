"""The gate: one request (tier, user, cost) -> a verdict with its header fields, for any enforcer.

Both the Envoy rate limit service and the ASGI middleware decide through it, so the rules below exist once:
- No tier: the configured default tier, else `unknown_tier` (refused, like a tier without a quota). A tier
  name that is not legal cannot have a quota: `unknown_tier` too, without asking Redis.
- No user: the configured default user (default `anonymous`: all such requests share one quota).
- A user id or cost the limiter refuses (`quotas.limiter.validate_user`/`validate_cost`): `invalid_request`,
  refused, so a malformed id is never a way around the quota.
- Redis cannot decide (`Unreachable`, and its `Unavailable`/`AuthFailed`; or a `BrokenQuota`): the tier's
  own fail-open policy decides: `fail_open` admits, otherwise `unavailable` refuses (retry in 1 s).
  Each policy is a `Limiter` of its own, so each tier's concurrent checks still coalesce into one
  `sw_check_many` call (quotas/limiter.py) and the limiter's counters are the console's tier counters.
- The window for the header fields comes from the stored quota, cached per tier: read again after
  WINDOW_TTL_S, or at once when a decision names another limit than the cached one (a `quota set`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from quotas.errors import BrokenQuota, Unreachable
from quotas.keys import DEFAULT_PREFIX
from quotas.limiter import FAIL_OPEN, Decision, Limiter, validate_cost, validate_user
from quotas.model import TIER_RE, QuotaError
from quotas.rls.headers import rate_limit_headers, reset_after_s
from quotas.safe import safe
from quotas.store import QuotaStore

WINDOW_TTL_S = 1.0  # a window-only change (3/1d -> 3/1h) shows in the header fields within this
MAX_CACHED_TIERS = 10_000  # made-up tier names must not grow the cache without bound
UNKNOWN = Decision(False, "unknown_tier", 0, 60.0, None)  # what the library answers for a tier without quota
NO_ANSWER = Decision(False, "unavailable", 0, 1.0, None)
INVALID = Decision(False, "invalid_request", 0, 0.0, None)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One gate decision: the limiter's `decision`, the `outcome` counted for it (its reason, or
    `fail_open`), and the header fields a client gets. `window_s`/`reset_s`: None when unknown."""

    tier: str
    decision: Decision
    outcome: str
    headers: tuple[tuple[str, str], ...]
    window_s: int | None
    reset_s: int | None

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


@dataclass(slots=True)
class _Window:
    limit: int
    window_s: int
    read_at: float  # monotonic


class Gate:
    """Decide requests against the live quotas through `Limiter`s on `client`; safe to share across tasks."""

    def __init__(self, client: Any, *, prefix: str = DEFAULT_PREFIX, fail_open: bool | Collection[str] = False,
                 default_tier: str | None = None, default_user: str = "anonymous", timeout_s: float = 1.0,
                 batch_window_s: float = 0.0, batch_limit: int = 64) -> None:
        """`fail_open`: True for every tier, or the tiers admitted while Redis cannot decide.
        `batch_window_s`, `batch_limit`: how long a busy tier's batch of checks is held open (quotas.limiter)."""
        if default_tier is not None and not TIER_RE.fullmatch(default_tier):
            raise QuotaError(f"invalid default tier {default_tier!r}")
        validate_user(default_user)
        self.default_tier = default_tier
        self.default_user = default_user
        self._all_open = fail_open is True
        self._open_tiers = frozenset() if isinstance(fail_open, bool) else frozenset(fail_open)
        self._open, self._closed = (
            Limiter(client, prefix=prefix, fail_open=open_, timeout_s=timeout_s, batch_window_s=batch_window_s,
                    batch_limit=batch_limit) for open_ in (True, False))
        self._store = QuotaStore(client, prefix=prefix, timeout_s=timeout_s, read_only=True)
        self._windows: dict[str, _Window] = {}
        self._reading: dict[str, asyncio.Task[int | None]] = {}

    def fails_open(self, tier: str) -> bool:
        return self._all_open or tier in self._open_tiers

    def limiters(self) -> tuple[Limiter, Limiter]:
        """Both policies' limiters (their counters of calls and batches: quotas/rls/server.py's metrics)."""
        return self._open, self._closed

    def limiter(self, tier: str) -> Limiter:
        """The limiter with `tier`'s fail-open policy (also what `record` counts through)."""
        return self._open if self.fails_open(tier) else self._closed

    async def decide(self, tier: str | None, user: str | None, cost: int = 1) -> Verdict:
        tier = tier or self.default_tier
        if tier is None or not TIER_RE.fullmatch(tier):  # echoed in the ASGI body: made visible, never raw
            return self._verdict(safe(tier, 64) if tier else "-", UNKNOWN, "unknown_tier", None)
        user = user or self.default_user
        try:
            validate_user(user)
            validate_cost(cost)
        except QuotaError:
            return self._verdict(tier, INVALID, "invalid_request", None)
        try:
            decision = await self.limiter(tier).check(tier, user, cost)
        except (Unreachable, BrokenQuota):
            if self.fails_open(tier):
                return self._verdict(tier, FAIL_OPEN, "fail_open", None)
            return self._verdict(tier, NO_ANSWER, "unavailable", None)
        if decision is FAIL_OPEN:  # the limiter admitted without an answer from Redis
            return self._verdict(tier, decision, "fail_open", None)
        window_s = await self._window(tier, decision.limit) if decision.limit is not None else None
        return self._verdict(tier, decision, decision.reason, window_s)

    async def record(self, tier: str, outcome: str, count: int = 1) -> None:
        """Count requests the front ended itself (`blocked`: its content filter; `error`), as gateways do."""
        await self.limiter(tier).record(tier, outcome, count)

    async def aclose(self) -> None:
        for task in list(self._reading.values()):
            task.cancel()
        await self._open.aclose()
        await self._closed.aclose()

    def invalid(self) -> Verdict:
        """A request that names no tier or user that can be read (not UTF-8, too many descriptors): refused."""
        return self._verdict("-", INVALID, "invalid_request", None)

    def _verdict(self, tier: str, decision: Decision, outcome: str, window_s: int | None) -> Verdict:
        now_s = time.time()
        headers = rate_limit_headers(tier, decision, outcome, window_s, now_s)
        reset_s = reset_after_s(window_s, now_s) if window_s else None
        return Verdict(tier, decision, outcome, tuple(headers), window_s, reset_s)

    async def _window(self, tier: str, limit: int) -> int | None:
        cached = self._windows.get(tier)
        if cached is not None and cached.limit == limit and time.monotonic() - cached.read_at < WINDOW_TTL_S:
            return cached.window_s
        task = self._reading.get(tier)
        if task is None:  # one read per tier at a time, however many requests wait for it
            task = self._reading[tier] = asyncio.ensure_future(self._read_window(tier))
            task.add_done_callback(lambda _: self._reading.pop(tier, None))
        return await asyncio.shield(task)

    async def _read_window(self, tier: str) -> int | None:
        cached = self._windows.get(tier)
        try:
            quota = await self._store.get(tier)
        except Exception:  # no answer, a broken quota: the last window known, else none (no policy fields)
            return cached.window_s if cached is not None else None
        if quota is None:
            self._windows.pop(tier, None)
            return None
        if tier in self._windows or len(self._windows) < MAX_CACHED_TIERS:
            self._windows[tier] = _Window(quota.limit, quota.window_s, time.monotonic())
        return quota.window_s
