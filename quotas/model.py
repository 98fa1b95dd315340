"""Tier quotas: the value objects and the validation rules shared by the CLI, the console and the store.

Every rule an operator can trip over lives here, so the CLI, the console's editor and the store refuse
exactly the same inputs with exactly the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

TIER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_LIMIT = 10**9
MIN_WINDOW_S = 1
MAX_WINDOW_S = 31 * 86400
MAX_TIER_CAP_RPS = 10**9
MAX_REASON_LEN = 500
MAX_ACTOR_LEN = 64

Mode = Literal["enforce", "shadow"]
MODES: tuple[Mode, ...] = ("enforce", "shadow")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"([0-9]{1,9})([smhd])")  # always fullmatch: `$` would let a newline through
_LIMIT_RE = re.compile(r"[0-9]{1,10}")
# credentials in a URL: quotas.errors.redact hides them. The lookbehind starts a scheme only where a word starts:
# without it every position of a long run of letters was tried again (quadratic: 4.5 s for a 40,000-digit port)
_CRED_RE = re.compile(r"(?<![\w+.-])(\w[\w+.-]*://)[^/@\s]*@")


class QuotaError(ValueError):
    """Bad operator input: the message says what is wrong and what is accepted."""


def validate_tier(tier: str) -> str:
    """Return `tier` unchanged if it is a legal tier name, else raise QuotaError."""
    if not isinstance(tier, str) or not TIER_RE.fullmatch(tier):
        shown = repr(tier)[:60]
        raise QuotaError(
            f"invalid tier name {shown}: a tier name is 1 to 32 characters, a lowercase letter "
            "first, then lowercase letters, digits, '_' or '-'"
        )
    return tier


def parse_duration(text: str, *, what: str = "window") -> int:
    """Parse `30s`, `10m`, `3h`, `1d` into seconds (1 s .. 31 d). Nothing else: not even a space or a newline
    (`"3/1d\n"` from a script is a mistake to refuse, not to guess at)."""
    m = _DURATION_RE.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise QuotaError(
            f"invalid {what} {text!r}: write a whole number and a unit s, m, h or d, "
            "e.g. 30s, 10m, 3h, 1d"
        )
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise QuotaError(f"invalid {what} {text!r}: it must be between 1s and 31d")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest exact spelling: 86400 -> '1d', 5400 -> '90m', 45 -> '45s'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def quota_text(limit: int, window_s: int) -> str:
    """A quota as text, everywhere one is shown: `LIMIT/WINDOW` as operators write it (`50/1d`, never
    `50/86400s`)."""
    return f"{limit}/{format_duration(window_s)}"


def quota_size(q: Quota | None) -> float:
    """How much a quota allows (requests per second, limit / window): what tiers are ordered by, smallest first;
    a tier without a readable quota ranks after all."""
    return q.limit / q.window_s if q is not None else float("inf")


def sorted_tiers(names: Iterable[str], size: Callable[[str], float]) -> list[str]:
    """The one tier order (the console's tier panel, `quota list`, `snapshot`): by `size(tier)` (`quota_size` of
    its quota), smallest first, ties by name."""
    return sorted(set(names), key=lambda n: (size(n), n))


def parse_limit(text: str) -> int:
    """Parse a per-user limit: an integer 0..10^9."""
    t = text if isinstance(text, str) else ""
    if not _LIMIT_RE.fullmatch(t) or int(t) > MAX_LIMIT:
        raise QuotaError(f"invalid limit {text!r}: the limit is a whole number from 0 to {MAX_LIMIT}")
    return int(t)


def parse_spec(spec: str) -> tuple[int, int]:
    """Parse `LIMIT/WINDOW` (`3/1d`, `600/1m`) into (limit, window_s)."""
    if not isinstance(spec, str) or spec.count("/") != 1:
        raise QuotaError(
            f"invalid quota {spec!r}: write LIMIT/WINDOW, e.g. 3/1d, 50/3h, 600/1m, 10/30s"
        )
    limit_text, window_text = spec.split("/")
    return parse_limit(limit_text), parse_duration(window_text)


def parse_tier_cap(text: str | None) -> int | None:
    """Parse a tier-wide cap in requests per second; `none`/empty clears it."""
    if text is None:
        return None
    t = str(text).strip().lower()
    if t in ("", "none", "off"):
        return None
    if not _LIMIT_RE.fullmatch(t) or not 1 <= int(t) <= MAX_TIER_CAP_RPS:
        raise QuotaError(
            f"invalid tier cap {text!r}: a whole number of requests per second from 1 to "
            f"{MAX_TIER_CAP_RPS}, or 'none'"
        )
    return int(t)


def validate_reason(reason: str | None) -> str:
    r = (reason or "").strip()
    if len(r) > MAX_REASON_LEN or any(ord(c) < 32 and c != "\t" for c in r):
        raise QuotaError(f"invalid reason: at most {MAX_REASON_LEN} printable characters, one line")
    return r


def validate_actor(actor: str) -> str:
    a = (actor or "").strip()
    if not a or len(a) > MAX_ACTOR_LEN or any(ord(c) < 32 for c in a):
        shown = repr(actor[:40]) + ("..." if len(actor) > 40 else "")  # never echo a 10 kB argument back
        raise QuotaError(f"invalid actor {shown} ({len(actor)} characters): 1 to {MAX_ACTOR_LEN} printable characters")
    return a


def validate_redis_url(url: str) -> str:
    """Return `url` if it is one of the forms `quotas.connect` opens (one server, cluster startup nodes,
    Sentinel), each part as redis-py would connect to it; else QuotaError, without the password."""
    from quotas.redis_url import parse_target  # it builds on validate_node_url below

    parse_target(url)
    return url


def validate_node_url(url: str, accepted: str) -> str:
    """Return `url` if redis-py would connect where it says: redis:// or rediss:// with a host, a port that
    is a number and a database (the path) that is a number; or unix://PATH. Else QuotaError, without the
    password (`redis://host:6379/abc` is refused, not silently database 0)."""
    shown = _CRED_RE.sub(r"\1***@", url)
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError:
        why = "the port is not a number from 1 to 65535"
        raise QuotaError(f"invalid Redis URL {shown!r}: {why} ({accepted})") from None
    if p.scheme == "unix":
        if not p.path:
            raise QuotaError(f"invalid Redis URL {shown!r}: no socket path ({accepted})")
        return url
    if p.scheme not in ("redis", "rediss"):
        raise QuotaError(f"invalid Redis URL {shown!r}: unknown scheme {p.scheme + '://'!r} ({accepted})")
    if not p.hostname:
        raise QuotaError(f"invalid Redis URL {shown!r}: no host ({accepted})")
    if port == 0:
        raise QuotaError(f"invalid Redis URL {shown!r}: port 0 ({accepted})")
    db = p.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise QuotaError(f"invalid Redis URL {shown!r}: the database {db!r} is not a number ({accepted})")
    return url


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with a Z, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    """What an operator asks for: the settable part of a quota."""

    limit: int
    window_s: int
    tier_cap_rps: int | None = None
    paused: bool = False
    mode: Mode = "enforce"

    def __post_init__(self) -> None:
        if not 0 <= self.limit <= MAX_LIMIT:
            raise QuotaError(f"invalid limit {self.limit}: from 0 to {MAX_LIMIT}")
        if not MIN_WINDOW_S <= self.window_s <= MAX_WINDOW_S:
            raise QuotaError(f"invalid window {self.window_s}s: between 1s and 31d")
        if self.tier_cap_rps is not None and not 1 <= self.tier_cap_rps <= MAX_TIER_CAP_RPS:
            raise QuotaError(f"invalid tier cap {self.tier_cap_rps}: from 1 to {MAX_TIER_CAP_RPS}")
        if self.mode not in MODES:
            raise QuotaError(f"invalid mode {self.mode!r}: 'enforce' or 'shadow'")

    @property
    def spec(self) -> str:
        """`LIMIT/WINDOW`, as operators write it."""
        return quota_text(self.limit, self.window_s)


@dataclass(frozen=True, slots=True)
class Quota:
    """A tier's quota as stored, with its version and provenance. Immutable."""

    tier: str
    limit: int
    window_s: int
    tier_cap_rps: int | None
    paused: bool
    mode: Mode
    expires_at: float | None  # epoch seconds of a temporary override's end, else None
    version: int
    updated_by: str
    updated_at: float  # epoch seconds

    @property
    def spec(self) -> str:
        return quota_text(self.limit, self.window_s)

    @property
    def state(self) -> Literal["paused", "override", "active"]:
        """A stored quota's state: the one rule behind `snapshot --json`, `quota list` and the console."""
        if self.paused:
            return "paused"
        return "override" if self.expires_at is not None else "active"

    def settings(self) -> QuotaSpec:
        return QuotaSpec(self.limit, self.window_s, self.tier_cap_rps, self.paused, self.mode)

    def with_spec(self, spec: QuotaSpec) -> Quota:
        return replace(
            self,
            limit=spec.limit,
            window_s=spec.window_s,
            tier_cap_rps=spec.tier_cap_rps,
            paused=spec.paused,
            mode=spec.mode,
        )

    def to_json(self) -> dict[str, Any]:
        """The public JSON shape (`surgewatch quota list --json`): a contract, keep keys stable."""
        d = asdict(self)
        d["expires_at"] = iso(self.expires_at)
        d["updated_at"] = iso(self.updated_at)
        return {
            k: d[k]
            for k in (
                "tier", "limit", "window_s", "tier_cap_rps", "paused", "mode",
                "expires_at", "version", "updated_by", "updated_at",
            )
        }
