"""`Limiter`: the thin async Python wrapper over the library — at most one round trip per decision.

`check` sends `FCALL sw_check_many 1 KEY USER COST` (one pair): the same decision code as `sw_check`,
with a one-string reply ("LIMIT CODE REMAINING RETRY_MS") that is cheaper to build on the server and to
parse here than `sw_check`'s 5-element array. Gateways in other languages may call either.

Coalescing: while one `check` of a tier is in flight, the tier's further checks wait for it and then go
together in one `sw_check_many` call (decided in arrival order, at one instant of the server clock, as
by `check_many`), each still bounded by its own timeout. A sequential caller never waits for anyone;
under concurrency the server runs one call per batch instead of one per request (bench/README.md).
With `batch_window_s` (the rate limit service's), a busy tier's batch is also held open that long for
checks that come just after it (see Limiter.__init__).

Semantics (the library decides, see quotas/lua/):
- A user's usage is the number of requests *admitted* in the current fixed window: windows are aligned
  to epoch multiples of W (a `1d` quota resets at 00:00 UTC, an `1h` one on the hour). Refused requests
  consume nothing. A limit change applies to the usage already counted (used 3 of 3/1d, raised to 5/1d:
  exactly 2 more at once); a change of the window length starts counting afresh.
- Order of refusals: `paused`, then `user_quota`, then `tier_cap` (requests per second, tier-wide).
- `shadow` mode admits what enforce would refuse, returns reason `shadow` and counts it as accepted and
  shadow; it consumes usage like an admitted request.
- `unknown_tier`: refused, counted in the name's counter hash and by name in `Punknown:B` (quotas/keys.py). Any
  tier string gets a decision, never an exception: one the tier rule refuses (`Free`) is decided as a gateway's
  FCALL is; one no key holds (empty, braces, > keys.UNKNOWN_SEND_MAX bytes) gets `UNKNOWN_TIER`, as the library's.
- Unreachable server: `Unreachable` after `timeout_s`, or with `fail_open=True` an admitting
  `Decision(True, "ok", ...)` and a logged warning naming the tier (one line per tier per 10 s). The same
  holds for a server that answers but cannot decide (`Unavailable`: out of memory under `noeviction`, a
  read-only replica, loading, busy) and one that refuses the login (`AuthFailed`): both are Unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from quotas.bounded import remember
from quotas.decisions import (  # re-exported: the limiter's API names them
    _CODES,
    BATCH_CHUNK,
    FAIL_OPEN,
    MAX_USER_BYTES,
    RECORDABLE,
    UNKNOWN_TIER,
    Decision,
    validate_cost,
    validate_user,
)
from quotas.decisions import batch_decisions as _batch_decisions
from quotas.errors import Unreachable
from quotas.held import HeldConnections
from quotas.keys import DEFAULT_PREFIX, Keys, odd_key
from quotas.library import (
    UNREACHABLE_ERRORS,
    Deadlines,
    bounded,
    broken_from,
    fcall,
    is_missing_function,
    load_library,
    unavailable,
    unreachable,
)
from quotas.model import MAX_LIMIT, QuotaError, validate_tier

log = logging.getLogger(__name__)

HOLD_OFF_WINDOWS = 100  # a held batch gathered nobody: the tier's batches go at once for this many windows

@dataclass(slots=True)
class _Lane:
    """One tier's coalescing state: is a `check` call in flight, and which checks wait for the next one."""

    busy: bool = False
    waiting: list[tuple[bytes, int, asyncio.Future[Decision]]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None  # where the call in flight runs
    timer: asyncio.TimerHandle | None = None  # a batch held open for the window (batch_window_s)
    gap_s: float = 1.0  # the average time between two of the tier's checks (a moving average)
    last_at: float = -1.0  # loop time of the tier's latest check
    hold_off_until: float = 0.0  # a held batch gathered nobody: none held before this loop time


class Limiter:
    """Decide requests against the live quota of their tier; count outcomes. Safe to share across tasks."""

    def __init__(self, client: Any, *, prefix: str = DEFAULT_PREFIX, fail_open: bool = False, timeout_s: float = 1.0,
                 hold: int = 16, coalesce: bool = True, batch_window_s: float = 0.0, batch_limit: int = 64) -> None:
        """`hold`: how many idle connections `check` keeps out of the client's pool between calls (one per
        concurrent caller, up to this many; see quotas/held.py); 0 sends every check through the client.
        `coalesce`: while a tier's `check` is in flight, the tier's next checks wait and go together in one
        `sw_check_many` call when it returns (decided in arrival order at one instant, as by `check_many`);
        False sends one call per check.
        `batch_window_s`: while two or more of a tier's checks are due within this (by their average spacing),
        the first check of a batch waits up to this long for the next ones (`batch_limit` waiting: the call
        goes at once), so a busy gateway sends one call per batch where checks would otherwise seldom overlap;
        each waits at most this much longer. 0 (the default): a check goes at once. Like envoyproxy/ratelimit's
        REDIS_PIPELINE_WINDOW and REDIS_PIPELINE_LIMIT, but only under load: a quiet tier never waits, and a
        held batch that gathered nobody (a sequential caller) stops the holding for HOLD_OFF_WINDOWS windows
        (such a caller loses at most 1 % of its time to the window).
        `calls_sent`, `batches_held`, `batches_full`: how many sw_check_many calls `check` sent, how many of its
        batches were held open, and how many of those went because `batch_limit` checks waited (for metrics)."""
        if not 0.0 <= batch_window_s <= 0.1 or batch_limit < 1:
            raise QuotaError(f"invalid batch window {batch_window_s!r} s / limit {batch_limit!r}: 0-0.1 s, >= 1")
        self.client = client
        self.keys = Keys(prefix)
        self.fail_open = fail_open
        self.timeout_s = timeout_s
        self._last_warned: dict[str, float] = {}
        self._quota_keys: dict[str, str] = {}  # validated tier -> its quota key (the hot path skips the regex)
        self._hot_keys: dict[str, bytes] = {}  # validated tier -> its command up to the user, encoded once
        self._decisions: dict[bytes | str, Decision] = {}  # sw_check_many reply -> its Decision (see check)
        self._deadlines = Deadlines()
        pool = HeldConnections.pool_of(client) if hold > 0 else None
        self._held = HeldConnections(pool, keep=hold) if pool is not None else None
        self._costs = {c: b"$%d\r\n%d\r\n" % (len(str(c)), c) for c in range(1, 17)}  # encoded once
        self._coalesce = coalesce
        self._window_s = batch_window_s if coalesce else 0.0
        self._batch_limit = batch_limit
        self.calls_sent = self.batches_held = self.batches_full = 0
        self._lanes: dict[str, _Lane] = {}  # validated tier -> its lane (bounded like the key caches)

    def _key(self, tier: str) -> str:
        """The tier's quota key; for a name the tier rule refuses, the key a gateway would use (not cached), or
        QuotaError when no key can hold it (the callers answer UNKNOWN_TIER)."""
        key = self._quota_keys.get(tier)
        if key is None:
            try:
                key = self.keys.quota(validate_tier(tier))
            except QuotaError:
                odd = odd_key(self.keys, tier)
                if odd is None:
                    raise
                return odd
            remember(self._quota_keys, tier, key)  # bounded: quotas.bounded
        return key

    def _warn_open(self, tier: str, exc: Unreachable) -> None:
        # one line per tier per 10 s: an outage must not flood the log
        now = time.monotonic()
        if now - self._last_warned.get(tier, -1e9) >= 10.0:
            self._last_warned[tier] = now
            log.warning("limiter failing open for tier %s: %s", tier, exc)

    def _hot_key(self, tier: str) -> bytes | None:
        """`FCALL sw_check_many 1 KEY` as RESP, the start of the tier's every check (None: no key holds the name)."""
        head = self._hot_keys.get(tier)
        if head is None:
            try:
                key = self._key(tier).encode()
            except QuotaError:
                return None
            head = b"*6\r\n$5\r\nFCALL\r\n$13\r\nsw_check_many\r\n$1\r\n1\r\n$%d\r\n%s\r\n" % (len(key), key)
            if tier in self._quota_keys:  # a name no tier may have is not kept
                remember(self._hot_keys, tier, head)
        return head

    async def aclose(self) -> None:
        """Let coalesced calls in flight finish, then give the connections the hot path holds back to the
        client's pool (the client stays open)."""
        for tier, lane in list(self._lanes.items()):
            if lane.timer is not None and lane.loop is asyncio.get_running_loop():
                self._start_flush(tier, lane)  # a batch held open goes now
        flushers = [lane.flusher for lane in self._lanes.values() if lane.flusher is not None]
        if flushers:
            await asyncio.wait(flushers, timeout=self.timeout_s)
        if self._held is not None:
            await self._held.aclose()

    async def check(self, tier: str, user: str, cost: int = 1) -> Decision:
        """Decide one request of `user` in `tier` costing `cost`; admitted requests count against the quota."""
        # The hot path of every gateway request: each step here is measured in bench/limiter.py.
        head = self._hot_keys.get(tier) or self._hot_key(tier)
        try:  # encoding here both checks the id and spares redis-py's encoder the work
            raw_user = user.encode() if isinstance(user, str) else b""
        except UnicodeEncodeError:  # lone surrogates cannot be sent
            raw_user = b""
        if not 0 < len(raw_user) <= MAX_USER_BYTES:
            validate_user(user)
        if cost.__class__ is not int or not 0 < cost <= MAX_LIMIT:
            validate_cost(cost)
        if head is None:  # no key can hold the name: the library's answer, without a call
            return UNKNOWN_TIER
        if not self._coalesce:
            return await self._check_one(tier, head, raw_user, cost)
        lane = self._lanes.get(tier) or self._lane(tier)
        loop = asyncio.get_running_loop()
        if self._window_s:
            now = loop.time()
            lane.gap_s += (min(now - lane.last_at, 1.0) - lane.gap_s) * 0.125  # average over about 8 checks
            lane.last_at = now
        if lane.busy:
            if lane.loop is loop:
                return await self._join(tier, lane, raw_user, cost)
            # left busy by an event loop that closed mid-call (a limiter shared across loops): start afresh
            lane = self._lanes[tier] = _Lane()
        lane.busy, lane.loop = True, loop
        # two or more others are due within the window: hold the batch open for them
        if lane.gap_s * 2 < self._window_s and lane.last_at >= lane.hold_off_until:
            self.batches_held += 1
            lane.timer = loop.call_later(self._window_s, self._start_flush, tier, lane)
            return await self._join(tier, lane, raw_user, cost)
        try:
            return await self._check_one(tier, head, raw_user, cost)
        finally:
            if lane.waiting:  # checks that came meanwhile go together, in one call, now
                lane.flusher = loop.create_task(self._flush(tier, lane))
            else:
                lane.busy = False

    def _lane(self, tier: str) -> _Lane:
        lane = _Lane()
        if tier in self._quota_keys or tier in self._hot_keys:  # a name no tier may have is not kept
            remember(self._lanes, tier, lane)  # a busy lane forgotten still serves the checks it holds
        return lane

    async def _check_one(self, tier: str, head: bytes, raw_user: bytes, cost: int) -> Decision:
        try:
            reply = await self._send(tier, lambda: b"%s$%d\r\n%s\r\n%s" % (
                head, len(raw_user), raw_user, self._costs.get(cost) or b"$%d\r\n%d\r\n" % (len(str(cost)), cost)),
                (raw_user, cost))
        except Unreachable as e:
            if self.fail_open:
                self._warn_open(tier, e)
                return FAIL_OPEN
            raise
        return self._decisions.get(reply) or self._decision_of(reply)

    async def _send(self, tier: str, packed: Any, args: tuple[Any, ...]) -> Any:
        """One `sw_check_many` call with `args` (user, cost pairs; `packed()` is it in RESP) -> its reply.
        On a held connection when there is one; a dropped connection or a lost library is retried once
        through the client (which loads the library); Unreachable after timeout_s; BrokenQuota for junk."""
        start = time.monotonic()
        self.calls_sent += 1
        try:
            try:
                # bounded by the shared watchdog, not a timer per call (see Deadlines)
                if self._held is not None:
                    call = self._held.call(packed())
                else:
                    call = self.client.fcall("sw_check_many", 1, self._key(tier), *args)
                return await self._deadlines.run(call, self.timeout_s)
            except (ResponseError, RedisConnectionError) as e:
                if isinstance(e, ResponseError) and not is_missing_function(e):
                    raise
                # through the client: a fresh connection, the library loaded if the server lost it
                left = max(0.05, self.timeout_s - (time.monotonic() - start))  # one deadline in all
                return await fcall(self.client, "sw_check_many", [self._key(tier)], list(args), timeout_s=left)
            except UNREACHABLE_ERRORS as e:
                raise unreachable(self.client, e, self.timeout_s) from e
        except ResponseError as e:
            err = broken_from(e, tier) or unavailable(self.client, e)
            if err is None:
                raise
            raise err from e

    async def _join(self, tier: str, lane: _Lane, raw_user: bytes, cost: int) -> Decision:
        """Wait for the tier's next coalesced call, bounded by this check's own timeout."""
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        lane.waiting.append((raw_user, cost, fut))
        if lane.timer is not None and len(lane.waiting) >= self._batch_limit:
            self.batches_full += 1
            self._start_flush(tier, lane)  # the batch is full: no reason to hold it open longer
        try:
            try:
                return await self._deadlines.run(fut, self.timeout_s)
            except TimeoutError as e:
                raise unreachable(self.client, e, self.timeout_s) from e
        except Unreachable as e:
            if self.fail_open:
                self._warn_open(tier, e)
                return FAIL_OPEN
            raise

    def _start_flush(self, tier: str, lane: _Lane) -> None:
        """The window ended (or the batch filled): send what waits."""
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
            if len(lane.waiting) <= 1:  # nobody came in the window: checks of this tier do not overlap now
                lane.hold_off_until = lane.last_at + HOLD_OFF_WINDOWS * self._window_s
            lane.flusher = asyncio.get_running_loop().create_task(self._flush(tier, lane))

    async def _flush(self, tier: str, lane: _Lane) -> None:
        """Send the checks that waited, BATCH_CHUNK per call, until none wait; then the lane is free."""
        try:
            while lane.waiting:
                batch = [w for w in lane.waiting[:BATCH_CHUNK] if not w[2].done()]  # done: gave up waiting
                del lane.waiting[:BATCH_CHUNK]
                if not batch:
                    continue
                try:
                    decisions = await self._decide_batch(tier, batch)
                except Exception as e:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for (_, _, fut), d in zip(batch, decisions, strict=False):
                    if not fut.done():
                        fut.set_result(d)
        finally:
            for _, _, fut in lane.waiting:  # only when this task is cancelled (the loop is closing)
                fut.cancel()
            lane.waiting.clear()
            lane.busy = False
            lane.flusher = None

    async def _decide_batch(
        self, tier: str, batch: list[tuple[bytes, int, asyncio.Future[Decision]]]
    ) -> list[Decision]:
        head = self._hot_keys.get(tier) or self._hot_key(tier)
        assert head is not None, "a batch is only of a tier check() found a key for"
        args: list[Any] = []
        for u, c, _ in batch:
            args += (u, c)

        def packed() -> bytes:
            parts = [b"*%d\r\n" % (4 + 2 * len(batch)), head[4:]]  # head is the command for one pair ("*6")
            for u, c, _ in batch:
                parts.append(
                    b"$%d\r\n%s\r\n%s" % (len(u), u, self._costs.get(c) or b"$%d\r\n%d\r\n" % (len(str(c)), c))
                )
            return b"".join(parts)

        reply = await self._send(tier, packed, tuple(args))
        if len(batch) == 1:
            return [self._decisions.get(reply) or self._decision_of(reply)]
        return _batch_decisions(reply)

    def _decision_of(self, reply: bytes | str) -> Decision:
        # "LIMIT CODE REMAINING RETRY_MS" (LIMIT -1: unknown tier). Decisions are immutable and an admitted
        # request's reply repeats (same limit, same remaining) for every user, so they are memoized by the
        # reply; refusals carry a changing retry time and are not kept.
        limit, code, remaining, ms = map(int, reply.split())
        d = Decision(code <= 1, _CODES[code], remaining, ms / 1000.0, None if limit < 0 else limit)
        if ms == 0 or code == 5:
            if len(self._decisions) >= 4096:
                self._decisions.clear()
            self._decisions[reply] = d
        return d

    async def check_many(self, requests: Sequence[tuple[str, str, int]]) -> list[Decision]:
        """Decide many requests in one pipelined round trip (per cluster node); same order as `requests`.

        Requests of one tier are decided in order by one `sw_check_many` call per tier (per 2,000), at one
        instant of the server clock. A broken quota raises BrokenQuota after the whole batch was decided."""
        by_tier: dict[str, list[int]] = {}
        unknown: list[int] = []  # names no key can hold: the library's answer, without a call
        for i, (tier, user, cost) in enumerate(requests):
            validate_user(user)
            validate_cost(cost)
            try:
                self._key(tier)
            except QuotaError:
                unknown.append(i)
                continue
            by_tier.setdefault(tier, []).append(i)
        if not by_tier:
            return [UNKNOWN_TIER] * len(requests)
        calls: list[tuple[str, list[int]]] = []
        for tier, idx in by_tier.items():
            calls += [(tier, idx[j : j + BATCH_CHUNK]) for j in range(0, len(idx), BATCH_CHUNK)]
        try:
            replies = await self._pipeline(calls, requests)
        except Unreachable as e:
            if self.fail_open:
                for tier in by_tier:
                    self._warn_open(tier, e)
                return [UNKNOWN_TIER if i in unknown else FAIL_OPEN for i in range(len(requests))]
            raise
        out: list[Decision | None] = [None] * len(requests)
        for i in unknown:
            out[i] = UNKNOWN_TIER
        error: Exception | None = None
        for (tier, idx), reply in zip(calls, replies, strict=False):
            if isinstance(reply, ResponseError):
                down = unavailable(self.client, reply)
                if down is not None and self.fail_open:  # out of memory, a read-only replica, ...
                    self._warn_open(tier, down)
                    for i in idx:
                        out[i] = FAIL_OPEN
                    continue
                error = error or broken_from(reply, tier) or down or reply
                continue
            for i, d in zip(idx, _batch_decisions(reply), strict=False):
                out[i] = d
        if error is not None:
            raise error
        return out  # type: ignore[return-value]  # every slot was filled by the loop above

    async def _pipeline(
        self, calls: list[tuple[str, list[int]]], requests: Sequence[tuple[str, str, int]]
    ) -> list[Any]:
        replies: list[Any] = [None] * len(calls)

        async def run() -> list[Any]:
            todo = list(range(len(calls)))
            for attempt in (0, 1):
                pipe = self.client.pipeline(transaction=False)
                for c in todo:
                    tier, idx = calls[c]
                    args: list[Any] = []
                    for i in idx:
                        args += (requests[i][1], requests[i][2])
                    pipe.fcall("sw_check_many", 1, self._key(tier), *args)
                results = await pipe.execute(raise_on_error=False)
                lost = [c for c, r in zip(todo, results, strict=False) if is_missing_function(r)]
                for c, r in zip(todo, results, strict=False):
                    replies[c] = r
                if not lost or attempt:
                    break
                # the server lost the library: none of those calls ran; load it and redo only them
                await load_library(self.client)
                todo = lost
            return replies

        return await bounded(self.client, run, self.timeout_s)

    async def record(self, tier: str, outcome: str, count: int = 1) -> None:
        """Count `count` requests of `tier` that the gateway ended itself: `blocked` (content filter) or `error`.
        A tier without a quota counts nothing (as in the library), whatever its name."""
        try:
            self._key(tier)
        except QuotaError:
            tier = ""  # no key can hold it: nothing to count, once the outcome and count are checked
        if outcome not in RECORDABLE:
            raise QuotaError(f"invalid outcome {outcome!r}: one of {', '.join(RECORDABLE)}")
        validate_cost(count)
        if not tier:
            return
        try:
            try:
                await fcall(self.client, "sw_record", [self._key(tier)], [outcome, count], timeout_s=self.timeout_s)
            except ResponseError as e:
                down = unavailable(self.client, e)
                if down is None:
                    raise
                raise down from e
        except Unreachable as e:
            if not self.fail_open:
                raise
            self._warn_open(tier, e)
