"""The Redis key schema: one place, so the limiter, the store, the collectors and other teams agree.

Every key of a tier carries the hash tag `{TIER}` so one limiter call touches a single hash slot and
the same code runs on Redis Cluster. Keys (prefix `P`, default `surgewatch:`):

| key                          | type   | what                                                         |
|------------------------------|--------|--------------------------------------------------------------|
| `P{T}:quota`                 | hash   | the tier's quota: limit, window_s, tier_cap_rps ("" = none),  |
|                              |        | paused (0/1), mode, expires_at ("" = none), version,         |
|                              |        | updated_by, updated_at, prev (JSON of the quota a temporary  |
|                              |        | override replaced, "" when none), enforced (the first six     |
|                              |        | fields joined by "|": what the limiter reads; written with    |
|                              |        | them, so fields that differ were edited by hand: broken)      |
| `P{T}:u:W:I:USER`            | string | admitted requests of USER in fixed window I (= now // W) of   |
|                              |        | length W seconds; expires at the window's end                 |
| `P{T}:c:M`                   | hash   | outcome counters of minute M (= now // 60): field `S:OUTCOME` |
|                              |        | with S the second in the minute (0..59) and OUTCOME one of    |
|                              |        | `accepted`, `user_quota`, `tier_cap`, `paused`, `shadow`,     |
|                              |        | `blocked`, `error`, `unknown_tier` (refused: no quota, e.g.   |
|                              |        | deleted or lost in a restart); field `about`: a sentence over |
|                              |        | 64 bytes (it keeps the hash a hash table, where an increment  |
|                              |        | does not scan the fields; readers skip it); expires after     |
|                              |        | COUNTER_TTL_S                                                 |
| `P{T}:r:M`                   | hash   | admitted requests of minute M by their rank in the user's     |
|                              |        | window: fields `2`..`16`, then `32`, `64`, ... (rank in       |
|                              |        | (16,32], (32,64], ...); rank 1 is not stored: it is the       |
|                              |        | minute's `accepted` less the other fields; `about` as above;  |
|                              |        | expires after COUNTER_TTL_S                                   |
| `P{T}:audit`                 | stream | audit entries: actor, at (epoch ms), tier, version, old, new  |
|                              |        | (quota JSON or ""), reason; MAXLEN ~ AUDIT_MAXLEN             |
| `Ptiers`                     | set    | the registry of tier names                                    |
| `Punknown:B`                 | zset   | names gateways asked for that have no quota, in 10-second     |
|                              |        | bucket B (= now // 10): member the name (first 64 bytes),     |
|                              |        | score the requests refused as unknown_tier; the 16 names      |
|                              |        | counted most are kept; expires after 180 s (not written on    |
|                              |        | Redis Cluster: another slot than the tier's)                  |
| `Pevents` (channel)          | pubsub | one JSON message per accepted change: {"tier", "version",     |
|                              |        | "actor", "kind"}                                              |
| `P{T}:proposal`              | string | the guard's proposal for tier T (JSON: id, kind, spec,        |
|                              |        | old_spec, for_s, version read, reason, actor, at, state       |
|                              |        | open/accepted/dismissed, by); expires after proposal_ttl_s    |
|                              |        | (surgewatch/guard/board.py)                                   |
| `Pguard:status`              | string | the running guard's status (JSON: actor, mode, state, why,    |
|                              |        | values); expires a few intervals after its last look          |
| `Pguard:events` (channel)    | pubsub | one JSON message per proposal made, accepted or dismissed     |
"""

from __future__ import annotations

DEFAULT_PREFIX = "surgewatch:"
LIBRARY_NAME = "surgewatch"
COUNTER_TTL_S = 3900  # 65 minutes: at least 1 hour of per-second history survives
AUDIT_MAXLEN = 10_000
OUTCOMES = ("accepted", "user_quota", "tier_cap", "paused", "shadow", "blocked", "error", "unknown_tier")
REJECT_REASONS = ("user_quota", "tier_cap", "paused")
RANK_EXACT_MAX = 16
UNKNOWN_BUCKET_S = 10  # `Punknown:B`: names of tiers without a quota, counted per 10-second bucket
UNKNOWN_KEEP = 16  # names kept per bucket (the most counted)
UNKNOWN_NAME_MAX = 64  # bytes of a name kept
UNKNOWN_TTL_S = 180
UNKNOWN_SEND_MAX = 256  # bytes of a name the tier rule refuses that the Python limiter still sends (and counts)


def rank_bucket(rank: int) -> int:
    """The rank-counter field for a request's rank in its user's window (1-based)."""
    if rank <= RANK_EXACT_MAX:
        return max(rank, 1)
    b = RANK_EXACT_MAX * 2
    while b < rank:
        b *= 2
    return b


def odd_key(keys: Keys, tier: object) -> str | None:
    """The quota key a gateway would FCALL for a name the tier rule (`quotas.model.validate_tier`) refuses, so the
    Python limiter decides and counts it as the library does theirs; None when no key can hold it (not a string,
    empty, braces, over UNKNOWN_SEND_MAX bytes)."""
    if not isinstance(tier, str) or "{" in tier or "}" in tier:
        return None
    try:
        size = len(tier.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    return keys.quota(tier) if 0 < size <= UNKNOWN_SEND_MAX else None


class Keys:
    """Key names for one prefix. Pure string building, no I/O."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or any(c in prefix for c in "{} \r\n"):
            raise ValueError(f"invalid key prefix {prefix!r}: no braces, spaces or newlines")
        self.prefix = prefix

    def tag(self, tier: str) -> str:
        return f"{self.prefix}{{{tier}}}"

    def quota(self, tier: str) -> str:
        return f"{self.tag(tier)}:quota"

    def counters(self, tier: str, minute: int) -> str:
        return f"{self.tag(tier)}:c:{minute}"

    def ranks(self, tier: str, minute: int) -> str:
        return f"{self.tag(tier)}:r:{minute}"

    def audit(self, tier: str) -> str:
        return f"{self.tag(tier)}:audit"

    def usage(self, tier: str, window_s: int, window_index: int, user: str) -> str:
        return f"{self.tag(tier)}:u:{window_s}:{window_index}:{user}"

    def guard_proposal(self, tier: str) -> str:
        """The guard's open proposal for a tier (in the tier's slot, beside its quota)."""
        return f"{self.tag(tier)}:proposal"

    @property
    def guard_status(self) -> str:
        return f"{self.prefix}guard:status"

    @property
    def guard_events(self) -> str:
        """The channel on which the guard announces proposals and what became of them."""
        return f"{self.prefix}guard:events"

    @property
    def tiers(self) -> str:
        return f"{self.prefix}tiers"

    def unknown(self, bucket: int) -> str:
        return f"{self.prefix}unknown:{bucket}"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"
