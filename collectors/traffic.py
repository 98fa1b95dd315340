"""Per-tier traffic from the limiter's counters in Redis, and each tier's current quota.

One pipelined round trip per poll (on a Redis Cluster: INFO of every primary, then one pipeline per
shard as redis-py splits it), whatever the number of tiers: TIME (the server's clock decides
which seconds are complete, so a skewed local clock changes nothing), the tier registry (cached: the
registry read in this poll names the tiers of the next), and for every tier its quota hash and HMGET
of the counter fields `S:OUTCOME` of the seconds not read yet in the minute hashes `P{T}:c:M`. A
complete second never changes again (the limiter counts by the server's clock), so each second is
read once: a 1 Hz poll reads a few seconds per tier, not the whole minute. Only read commands (TIME,
SMEMBERS, HGETALL, HMGET, INFO), so a read-only ACL user works.

Never calm while it burns: the same round trip learns the server's state (`collectors.redis_health`: out of memory,
a read-only replica, MISCONF, loading, a key of the wrong type, no tier at all), and the collector keeps reading
every tier it has seen, so a tier whose quota is deleted, or a server that restarted empty, shows as `no_quota` with
its `unknown_tier` refusals instead of vanishing. An error reply to one key costs that key, never the poll.

Counting: `rejected` = user_quota + tier_cap + paused + blocked + unknown_tier (everything refused,
unknown_tier being the refusals nobody asked for: the tier has no quota);
`error` (the gateway failed) is reported in the by-reason maps only. `accepted` includes shadow-mode
admissions (the limiter counts them as accepted and as shadow); `shadow` is also reported apart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from redis.exceptions import BusyLoadingError, ResponseError

from collectors.cluster_silence import left_primaries, silent_node
from collectors.redis_health import from_error, from_info, health
from collectors.samples import TierTraffic, TrafficSample
from collectors.unknown_tiers import unknown_tiers
from quotas.codec import effective, quota_from_hash
from quotas.connect import ShardedPipeline, is_cluster, lost_midway, master_address
from quotas.errors import BrokenQuota, ErrorKind, Unavailable
from quotas.keys import DEFAULT_PREFIX, OUTCOMES, UNKNOWN_BUCKET_S, Keys
from quotas.library import UNREACHABLE_ERRORS, describe, unavailable, unreachable
from quotas.model import TIER_RE, Quota

log = logging.getLogger(__name__)

REJECTED_OUTCOMES = ("user_quota", "tier_cap", "paused", "blocked", "unknown_tier")
BY_REASON = ("user_quota", "tier_cap", "paused", "blocked", "unknown_tier", "error")
RATE_WINDOW_S = 10
COUNT_WINDOW_S = 60
# a minute read for more seconds than this is read whole (HGETALL: the fields that exist) instead of by field
# (HMGET of every second x outcome, each a reply even when absent): a backfill of 1,000 quiet tiers
# otherwise asks for 7.2 million fields at once (780 MiB of replies in the console, bench/console_tiers.py)
WHOLE_MINUTE_AT = 15
_MARGIN_S = 2  # tolerated error of our estimate of the server's clock between two polls
NODE_TIMEOUT_S = 1.5  # one cluster primary's INFO: a dead one costs its tiers, never the whole poll
# server: its clock (server_time_usec); clients: writes paused (paused_actions)
NODE_INFO = ("server", "persistence", "memory", "replication", "clients")
HEALTH_INFO = ("persistence", "memory", "replication", "clients")


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _n(v: Any) -> int:
    if v is None:
        return 0
    try:
        return max(0, int(v))
    except (TypeError, ValueError):
        return 0  # garbage in a counter counts as nothing


def read_quota(tier: str, raw: dict[Any, Any], now: float) -> tuple[Quota | None, str]:
    """The tier's effective quota from its hash, and "" / why it is unreadable (None, "" when absent)."""
    if not raw:
        return None, ""
    try:
        q, prev = quota_from_hash(tier, raw)
    except (BrokenQuota, ValueError, TypeError) as e:
        return None, str(e) or type(e).__name__
    return effective(q, prev, now), ""


@dataclass
class _Tier:
    """What we know of one tier: complete seconds up to `last`, final once read."""

    last: int  # the last complete second absorbed
    rows: dict[int, dict[str, int]] = field(default_factory=dict)  # the last COUNT_WINDOW_S seconds
    accepted: list[int] = field(default_factory=list)  # history, oldest first, ending at `last`
    rejected: list[int] = field(default_factory=list)


class TrafficCollector:
    """Polls every registered tier; `backfill()` first fills `history_s` seconds of per-second history."""

    name = "traffic"

    def __init__(self, client: Any, *, prefix: str = DEFAULT_PREFIX, history_s: int = 900,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.history_s = max(int(history_s), COUNT_WINDOW_S)
        self._clock = clock
        self._registry: tuple[str, ...] | None = None
        self._known: dict[str, None] = {}  # every tier seen since start, in the order seen: read even if gone
        self._problems: list[tuple[str, str]] = []  # this poll's (status, message) of the server and its keys
        self._skew: float | None = None  # server clock - local clock
        self._state: dict[str, _Tier] = {}
        self._unreadable: dict[str, str] = {}  # tier -> why its quota is unreadable, as last logged
        self._illegal_warned = 0  # illegal names in the registry, as last logged
        self._cluster = is_cluster(client)
        self._down: dict[str, str] = {}  # this poll's cluster primaries that did not answer -> why
        self._last_masters: dict[str, str] = {}  # tier -> the master that served it at the last whole poll
        self._registry_unread = False  # this poll's registry read failed (an error reply)
        self._first_read: dict[str, int] = {}  # this poll's first second read, per tier
        self._unknown_read: dict[int, Any] = {}  # this poll's `Punknown:B` replies, per bucket
        self._shown: dict[str, TierTraffic] = {}  # each tier as last read, kept while its shard is away
        self.round_trips = 0

    async def aclose(self) -> None:
        """The client belongs to the caller."""

    # -- round trips ---------------------------------------------------------------------------
    def _pipeline(self, info: bool) -> Any:
        """A pipeline starting with TIME (and INFO) on one server; on a cluster, where redis-py refuses
        both in a pipeline, they go to every primary apart (`_cluster_meta`) and the pipeline holds only
        keyed reads, sent as one pipeline per shard (quotas.connect.ShardedPipeline)."""
        if self._cluster:
            return ShardedPipeline(self.client)
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        if info:
            pipe.info(*HEALTH_INFO)
        return pipe

    async def _execute(self, pipe: Any, info: bool = False) -> tuple[float, list[Any]]:
        """Run the pipeline: (the server's time, the keyed commands' replies). Error replies come back as
        values, a lost connection or login as Unreachable (AuthFailed), and a server that cannot answer
        even TIME (LOADING, ...) as Unavailable."""
        t0 = self._clock()
        server = await self._cluster_meta() if self._cluster else None
        try:
            replies = await pipe.execute(raise_on_error=False)
        except BusyLoadingError as e:  # redis-py raises LOADING as a connection error: it is not one
            raise Unavailable(f"Redis at {describe(self.client)} is loading its data set: {e}", "LOADING") from e
        except UNREACHABLE_ERRORS as e:
            if self._down:  # a primary already named as silent took the whole pipeline down: name it
                raise Unavailable("; also ".join(self._down.values()), "CLUSTERDOWN") from e
            raise unreachable(self.client, e, 0) from e
        t1 = self._clock()
        self.round_trips += 1
        if server is None:
            if isinstance(replies[0], BaseException):
                down = unavailable(self.client, replies[0])
                raise down or replies[0]
            secs, usecs = replies[0]
            server = int(secs) + int(usecs) / 1e6
            if info and not isinstance(replies[1], BaseException):  # an ACL user may not run INFO: unknown
                self._problems.extend(from_info(replies[1]))
            replies = replies[2 if info else 1:]
        self._skew = server - (t0 + t1) / 2
        return server, list(replies)

    async def _cluster_meta(self) -> float:
        """INFO of every primary, each on its own: the earliest of their clocks (every shard's seconds
        before it are complete), and each primary's state named with its address; a primary that does
        not answer is named with its tiers (a failover under way, or down) and costs only those."""
        nodes = list(self.client.get_primaries())

        async def one(node: Any) -> tuple[float | None, dict[str, Any] | None]:
            async with asyncio.timeout(NODE_TIMEOUT_S):
                try:
                    info = await lost_midway(self.client.info(*NODE_INFO, target_nodes=node))
                except ResponseError:  # an ACL user without INFO: the clock alone
                    secs, usecs = await self.client.execute_command("TIME", target_nodes=node)
                    return int(secs) + int(usecs) / 1e6, None
            return int(info.get("server_time_usec", 0)) / 1e6 or None, info

        results = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
        clocks = []
        for node, res in zip(nodes, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, (*UNREACHABLE_ERRORS, TimeoutError)):
                    raise res
                self._node_down(node.name, res)
                continue
            clock, info = res
            if clock is not None:
                clocks.append(clock)
            # a primary turned replica is a failover the client has not followed yet: its next MOVED does
            self._problems.extend((k, f"Redis cluster node {node.name}: {m}") for k, m in from_info(info)
                                  if k != ErrorKind.READ_ONLY_REPLICA)
        if not clocks:
            first = next(r for r in results if isinstance(r, BaseException))
            raise unreachable(self.client, first, NODE_TIMEOUT_S)
        return min(clocks)

    def _node_down(self, name: str, err: BaseException) -> None:
        """Name a cluster primary that does not answer, and the tiers it serves, once per poll."""
        if name in self._down:
            return
        why = " ".join(str(err).split()) or f"no answer within {NODE_TIMEOUT_S:g} s"
        self._down[name] = silent_node(name, (t for t in self._known if self.master(t) == name), why)
        self._problems.append((ErrorKind.UNAVAILABLE, self._down[name]))

    def found_before_timeout(self) -> str | None:
        """Why a poll the runner cut off took so long, where it can be named (collectors.runner): the cluster
        primaries it found silent, else the masters of the last poll that have left the client's primaries (a
        killed master drops out of the slot map before its replica is elected)."""
        if self._down or not self._cluster:
            return "; also ".join(self._down.values()) or None
        try:
            primaries = {str(n.name) for n in self.client.get_primaries()}
        except Exception:  # no slot map at all: nothing more to name
            return None
        return "; also ".join(left_primaries(self._last_masters, primaries)) or None

    def master(self, tier: str) -> str:
        """host:port of the master serving `tier` as this client knows it ("" for a single server)."""
        if self._cluster:
            try:
                return str(self.client.get_node_from_key(self.keys.quota(tier)).name)
            except Exception:  # no slot map yet (never reached): unknown
                return ""
        return master_address(self.client) or ""

    def _members(self, reply: Any) -> tuple[str, ...]:
        """The registry's tiers, or none (named as a problem) when its reply is an error."""
        if isinstance(reply, BaseException):
            self._problems.append(from_error(reply, self.keys.tiers, "a set"))
            self._registry_unread = True  # not "no tiers": unknown
            return ()
        return self._legal(reply)

    async def _bootstrap(self) -> None:
        """TIME and the registry, for the very first poll."""
        pipe = self._pipeline(info=False)
        pipe.smembers(self.keys.tiers)
        _, replies = await self._execute(pipe)
        self._registry = self._members(replies[0])

    def _legal(self, members: Iterable[Any]) -> tuple[str, ...]:
        names = sorted({_s(m) for m in members})
        good = tuple(n for n in names if TIER_RE.fullmatch(n))
        if (illegal := len(names) - len(good)) != self._illegal_warned and illegal:  # once a change, not a refresh
            log.warning("ignoring %d illegal tier name(s) in %s", illegal, self.keys.tiers)
        self._illegal_warned = illegal
        return good

    def _plan(self, tier: str, first: int, end: int) -> list[tuple[str, list[int]]]:
        """(minute key, seconds) to read for seconds first..end of one tier."""
        out: list[tuple[str, list[int]]] = []
        for m in range(first // 60, end // 60 + 1):
            secs = list(range(max(first, m * 60), min(end, m * 60 + 59) + 1))
            if secs:
                out.append((self.keys.counters(tier, m), secs))
        return out

    async def _read(self, since: dict[str, int], end: int) -> tuple[float, tuple[str, ...], dict[str, Any]]:
        """One round trip: TIME, registry, the server's state, and per tier its quota and seconds
        since[tier]..end."""
        pipe = self._pipeline(info=True)
        pipe.smembers(self.keys.tiers)
        plans: dict[str, list[tuple[str, list[int]]]] = {}
        for tier, first in since.items():
            pipe.hgetall(self.keys.quota(tier))
            plans[tier] = self._plan(tier, first, end)
            if plans[tier]:  # the first second this poll read of the tier (its rows hold only counted ones)
                self._first_read[tier] = min(self._first_read.get(tier, first), first)
            for key, secs in plans[tier]:
                if len(secs) > WHOLE_MINUTE_AT:
                    pipe.hgetall(key)  # only the fields that exist: a quiet minute costs nothing
                else:
                    pipe.hmget(key, [f"{s % 60}:{o}" for s in secs for o in OUTCOMES])
        buckets = list(range((end - COUNT_WINDOW_S) // UNKNOWN_BUCKET_S, end // UNKNOWN_BUCKET_S + 1))
        for b in buckets:  # the names gateways asked for without a quota (last): a misspelt tier is seen
            pipe.zrange(self.keys.unknown(b), 0, -1, withscores=True)
        server, replies = await self._execute(pipe, info=True)
        self._unknown_read = dict(zip(buckets, replies[len(replies) - len(buckets):], strict=True))
        replies = replies[:len(replies) - len(buckets)]
        per_tier: dict[str, Any] = {}
        i = 1
        for tier, plan in plans.items():
            quota_raw = replies[i]
            i += 1
            rows: dict[int, dict[str, int]] = {}
            lost = isinstance(quota_raw, UNREACHABLE_ERRORS)
            for key, secs in plan:
                reply = replies[i]
                i += 1
                if isinstance(reply, UNREACHABLE_ERRORS):
                    lost = True  # its shard did not answer: nothing of this poll is kept for the tier
                elif isinstance(reply, BaseException):
                    self._problems.append(from_error(reply, key, "a hash"))
                    reply = [None] * (len(secs) * len(OUTCOMES))
                if lost:
                    continue
                # a second with no count is left out (read as zeros): a quiet tier's backfill holds no rows
                if isinstance(reply, dict):  # HGETALL of the whole minute
                    fields = {_s(k): v for k, v in reply.items()}
                    for s in secs:
                        if any(f"{s % 60}:{o}" in fields for o in OUTCOMES):
                            rows[s] = {o: _n(fields.get(f"{s % 60}:{o}")) for o in OUTCOMES}
                    continue
                values = list(reply)
                for j, s in enumerate(secs):
                    got = values[j * len(OUTCOMES):(j + 1) * len(OUTCOMES)]
                    if any(v is not None for v in got):
                        rows[s] = {o: _n(v) for o, v in zip(OUTCOMES, got, strict=True)}
            if lost:
                err = next(r for r in (quota_raw, *replies[i - len(plan):i]) if isinstance(r, UNREACHABLE_ERRORS))
                self._node_down(self.master(tier) or "?", err)
                continue
            per_tier[tier] = (quota_raw, rows)
        return server, self._members(replies[0]), per_tier

    # -- public --------------------------------------------------------------------------------
    async def backfill(self) -> TrafficSample:
        """Fill the last `history_s` seconds of history (a restarted console is not blank)."""
        return await self._poll(self.history_s)

    async def poll(self) -> TrafficSample:
        return await self._poll(COUNT_WINDOW_S)

    async def _poll(self, new_tier_span: int) -> TrafficSample:
        self._problems = []
        self._down = {}
        self._registry_unread = False
        self._first_read = {}
        if self._registry is None or self._skew is None:
            await self._bootstrap()
            self._problems, self._down = [], {}  # named again by the read below, with the tiers it finds
        assert self._skew is not None and self._registry is not None
        guess_last = math.floor(self._clock() + self._skew) - 1
        end = guess_last + _MARGIN_S
        oldest = guess_last - self.history_s - _MARGIN_S + 1
        since = {}
        self._known.update(dict.fromkeys(self._registry))
        for tier in self._known:
            st = self._state.get(tier)
            if st is not None and new_tier_span == COUNT_WINDOW_S:
                start = st.last + 1  # complete seconds are final: read each one once
            else:
                start = guess_last - new_tier_span - _MARGIN_S + 1
            since[tier] = max(start, oldest)
        server, registry, per_tier = await self._read(since, end)
        last = math.floor(server) - 1
        if last > end:
            # our clock estimate was off by more than the margin (a long pause, a server clock jump):
            # one more trip for the seconds we did not ask for
            more = {t: end + 1 for t in per_tier}
            if last - end > self.history_s:
                more = {t: last - COUNT_WINDOW_S - _MARGIN_S for t in per_tier}
            server, registry, extra = await self._read(more, last + _MARGIN_S)
            last = math.floor(server) - 1
            for t, (quota_raw, rows) in extra.items():
                if t in per_tier:
                    per_tier[t] = (quota_raw, {**per_tier[t][1], **rows})
            for t in set(per_tier) - set(extra):
                del per_tier[t]  # its shard stopped answering between the two trips
        tiers = []
        for tier in since:
            if tier not in per_tier:  # its shard did not answer: last values kept, named in redis.error
                if tier in self._state and tier in self._shown:
                    tiers.append(replace(self._shown[tier], master=self.master(tier)))
                continue
            quota_raw, rows = per_tier[tier]
            st = self._absorb(tier, rows, last, self._first_read.get(tier, last + 1))
            if isinstance(quota_raw, BaseException):
                status, why = from_error(quota_raw, self.keys.quota(tier), "a hash")
                self._problems.append((status, why))
                quota, error = None, why
            else:
                quota, error = read_quota(tier, quota_raw, server)
            if error and self._unreadable.get(tier) != error:  # once per new problem, not once a second
                log.warning("unreadable quota of tier %s: %s", tier, error)
            if error:
                self._unreadable[tier] = error
            else:
                self._unreadable.pop(tier, None)
            shown = self._shown[tier] = self._tier(tier, quota, error, st)
            tiers.append(shown)
        self._registry = registry  # the next poll reads the registry as of this one
        if not registry and not self._registry_unread and not any(t.quota is not None or t.quota_error for t in tiers):
            self._problems.append(("no_tiers", (
                f"Redis answers but holds no tier at all (no {self.keys.tiers}): restarted empty or flushed? "
                "Every gateway decision is refused as unknown_tier; restore the quotas "
                "(surgewatch quota import FILE, or the console's offer) or run surgewatch init"
            )))
        self._last_masters = {t.tier: t.master for t in tiers if t.master}
        return TrafficSample(taken_at=server, tiers=tuple(tiers), redis=health(self._problems),
                             unknown_tiers=unknown_tiers(self._unknown_read, last,
                                                         {t.tier for t in tiers if t.quota is not None}))

    # -- arithmetic ----------------------------------------------------------------------------
    def _absorb(self, tier: str, rows: dict[int, dict[str, int]], last: int, first: int) -> _Tier:
        """Append complete seconds `first`..`last` (`rows` holds those with a count); later seconds were read
        too early and are dropped."""
        st = self._state.get(tier)
        if st is None or st.last < first - 1:  # new tier, or a gap we could not read: start afresh
            st = _Tier(last=first - 1, accepted=[0] * self.history_s, rejected=[0] * self.history_s)
            self._state[tier] = st
        empty = dict.fromkeys(OUTCOMES, 0)
        for s in range(st.last + 1, last + 1):
            row = rows.get(s, empty)
            if row is not empty:
                st.rows[s] = row
            st.accepted.append(row["accepted"])
            st.rejected.append(sum(row[o] for o in REJECTED_OUTCOMES))
        st.last = max(st.last, last)
        extra = len(st.accepted) - self.history_s
        if extra > 0:
            del st.accepted[:extra]
            del st.rejected[:extra]
        for s in [s for s in st.rows if s <= st.last - COUNT_WINDOW_S]:
            del st.rows[s]
        return st

    def _tier(self, tier: str, quota: Quota | None, quota_error: str, st: _Tier) -> TierTraffic:
        def total(span: int) -> dict[str, int]:
            out = dict.fromkeys(OUTCOMES, 0)
            for s in range(st.last - span + 1, st.last + 1):
                row = st.rows.get(s)
                if row:
                    for o, n in row.items():
                        out[o] += n
            return out

        r10, r60 = total(RATE_WINDOW_S), total(COUNT_WINDOW_S)
        return TierTraffic(
            tier=tier,
            quota=quota,
            quota_error=quota_error,
            accepted_rps=r10["accepted"] / RATE_WINDOW_S,
            rejected_rps=sum(r10[o] for o in REJECTED_OUTCOMES) / RATE_WINDOW_S,
            rejected_by_reason_rps={o: r10[o] / RATE_WINDOW_S for o in BY_REASON},
            shadow_rps=r10["shadow"] / RATE_WINDOW_S,
            accepted_1m=r60["accepted"],
            rejected_1m=sum(r60[o] for o in REJECTED_OUTCOMES),
            rejected_by_reason_1m={o: r60[o] for o in BY_REASON},
            shadow_1m=r60["shadow"],
            accepted_history=tuple(st.accepted),
            rejected_history=tuple(st.rejected),
            history_end_s=st.last,
            master=self.master(tier),
        )
