"""`surgewatch.toml`: where it is, reading it, and the type of every key and table (`surgewatch.settings`
resolves the values; everything here is re-exported there).

A file that is not UTF-8 or not TOML, a file `SURGEWATCH_CONFIG` names that is not there, a misspelt key
or a value of the wrong type (`prometheus = 5`, `interval_s = true`, `redis_cluster = "yes"`) is a
ConfigError naming the file or the key: exit 2 for every command, never a traceback.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quotas.model import QuotaError, validate_tier
from quotas.safe import safe

ECHO_CHARS = 200  # what a message quotes of anything from outside
FILE_NAME = "surgewatch.toml"


class ConfigError(ValueError):
    """A bad setting: the message names the setting and where it came from. A name read from a file (a table's
    key: `[guard.tiers]` "\x1b[2J...") may be in it: made visible here, whoever built the message."""

    def __init__(self, message: str) -> None:
        super().__init__(safe(message, 2000))


def echo(text: str) -> str:
    """Outside text quoted for a message: control characters (ESC too) escaped, cut to ECHO_CHARS."""
    cut = text[:ECHO_CHARS]
    return repr(cut) + (f"... ({len(text)} characters)" if len(text) > len(cut) else "")


def escaped(message: str, limit: int = 1000) -> str:
    """A whole message another layer wrote: control characters escaped, cut to `limit` characters."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message[:limit])
    return out + ("..." if len(message) > limit else "")


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("SURGEWATCH_CONFIG"):
        return Path(env["SURGEWATCH_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "surgewatch" / FILE_NAME


def load_file(path: Path, *, required: bool = False) -> dict[str, Any]:
    """The file's tables; {} when it is not there, unless `required` (SURGEWATCH_CONFIG named it)."""
    shown = echo(str(path))
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (FileNotFoundError, NotADirectoryError):
        if required:
            raise ConfigError(f"config file {shown} (SURGEWATCH_CONFIG) not found") from None
        return {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read config file {shown}: not UTF-8 text "
                          f"(byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {shown}: {escaped(e.strerror or str(e))}") from None
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"cannot read config file {shown}: not TOML ({escaped(str(e))})") from None


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float)


def _urls(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(u, str) for u in v))


# every key surgewatch.toml may hold, with the type it must have; [guard] is the guard's policy
# (surgewatch.guard.policy), [thresholds] and [rls] are read below
FILE_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "redis_url": (lambda v: isinstance(v, str), "a string (a Redis URL)"),
    "redis_cluster": (lambda v: isinstance(v, bool), "true or false"),
    "prefix": (lambda v: isinstance(v, str), "a string (the Redis key prefix)"),
    "nodes": (_urls, "a list of strings (/metrics URLs)"),
    "servers": (_urls, "a list of strings (/metrics URLs)"),
    "prometheus": (lambda v: isinstance(v, str), "a string (a URL)"),
    "prometheus_lookback": (lambda v: isinstance(v, str) or _number(v),
                            "a string (a duration such as \"1h\") or a number of seconds"),
    "interval_s": (_number, "a number of seconds"),
    "node_interval_s": (_number, "a number of seconds"),
    "thresholds": (lambda v: isinstance(v, dict), "a table ([thresholds])"),
    "rls": (lambda v: isinstance(v, dict), "a table ([rls])"),
    "guard": (lambda v: isinstance(v, dict), "a table ([guard])"),
}
FILE_KEYS = frozenset(FILE_TYPES)


def _kind(v: Any) -> str:
    """What a value is, for a message; only a number or a boolean is shown (a string may be a secret)."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | list | dict):
        return "a string" if isinstance(v, str) else "a list" if isinstance(v, list) else "a table"
    return f"a {type(v).__name__}"  # a date or a time


def check_file(file: Mapping[str, Any]) -> None:
    """Every key known and of its type; else ConfigError naming it."""
    unknown = sorted(set(file) - FILE_KEYS)
    if unknown:  # a typo (node_interval = 30) would silently keep the default
        raise ConfigError(f"unknown setting(s) {', '.join(echo(str(k)) for k in unknown[:5])} in {FILE_NAME}; "
                          f"the settings are {', '.join(sorted(FILE_KEYS))}")
    for key, (ok, what) in FILE_TYPES.items():
        if key in file and not ok(file[key]):
            raise ConfigError(f"{FILE_NAME}: {key} must be {what}, not {_kind(file[key])}")


@dataclass(frozen=True)
class RlsSettings:
    """The [rls] table: how `surgewatch rls` reads Envoy's descriptors, and each tier's fail-open policy."""

    tier_key: str = "tier"
    user_key: str = "user"
    default_tier: str | None = None
    default_user: str = "anonymous"
    fail_open: bool | tuple[str, ...] = False  # True: every tier; a tuple: those tiers
    batch_window_ms: float = 2.0  # under load, a batch of one tier's checks is held open this long (Limiter)
    batch_limit: int = 64  # ... or until this many wait


def rls_table(table: Any) -> RlsSettings:
    """Read [rls]; a misspelt key or a value of the wrong kind is a ConfigError naming it (exit 2)."""
    if not isinstance(table, dict):
        raise ConfigError("invalid [rls]: a table (see README, At a real site)")
    known = {f for f in RlsSettings.__dataclass_fields__}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"unknown key {echo(key)} in [rls]: the keys are {', '.join(sorted(known))}")
        if key == "fail_open":
            if not isinstance(value, bool) and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
                raise ConfigError("invalid [rls] fail_open: true, false or a list of tier names")
        elif key == "batch_window_ms":
            if not _number(value) or not 0 <= value <= 100:
                raise ConfigError("invalid [rls] batch_window_ms: a number of milliseconds from 0 to 100")
        elif key == "batch_limit":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2000:
                raise ConfigError("invalid [rls] batch_limit: a whole number from 1 to 2000")
        elif not isinstance(value, str) or not value or len(value) > 128:
            raise ConfigError(f"invalid [rls] {key}: a non-empty string of at most 128 characters")
    open_ = table.get("fail_open", False)
    try:
        named = [table["default_tier"]] if "default_tier" in table else []
        for tier in named + ([] if isinstance(open_, bool) else open_):
            validate_tier(tier)
    except QuotaError as e:
        raise ConfigError(f"[rls]: {e}") from None
    return RlsSettings(
        tier_key=table.get("tier_key", "tier"), user_key=table.get("user_key", "user"),
        default_tier=table.get("default_tier"), default_user=table.get("default_user", "anonymous"),
        fail_open=open_ if isinstance(open_, bool) else tuple(open_),
        batch_window_ms=float(table.get("batch_window_ms", 2.0)), batch_limit=table.get("batch_limit", 64),
    )


def thresholds_table(table: Any) -> dict[str, float]:
    """The [thresholds] table: known names (a typo would silently keep a default), each a finite number
    of at least 0 (a NaN SLO would never be breached: the console calm while it burns)."""
    from surgewatch.thresholds import Thresholds

    if not isinstance(table, dict):
        raise ConfigError("invalid [thresholds]: a table of numbers")
    why = Thresholds.unknown(table)
    if why:
        raise ConfigError(f"invalid [thresholds]: {escaped(why)}")
    out: dict[str, float] = {}
    for k, v in table.items():
        if not _number(v) or not 0 <= v < math.inf:
            shown = echo(v) if isinstance(v, str) else escaped(repr(v), ECHO_CHARS)
            raise ConfigError(f"invalid [thresholds] {k} = {shown}: a finite number, 0 or more")
        out[str(k)] = float(v)
    return out
