"""Settings as operators expect them: flags, then environment, then `surgewatch.toml`.

The file lives in `$XDG_CONFIG_HOME/surgewatch/surgewatch.toml` (default `~/.config/...`), or wherever
`SURGEWATCH_CONFIG` points. Example:

    redis_url = "redis://:secret@10.0.0.5:6379/0"   # or cluster startup nodes, or redis+sentinel://...
    prefix = "surgewatch:"
    nodes = ["http://gpu-01:9400/metrics", "http://gpu-02:9400/metrics"]
    servers = ["http://gpu-01:8000/metrics"]   # inference servers (vLLM, NIM, SGLang, TGI, Triton)
    prometheus = "http://prometheus:9090"
    interval_s = 1.0
    node_interval_s = 5.0

    [thresholds]
    temp_hot_c = 80
    util_busy_pct = 90
    reject_spike_pct = 20

    [rls]                     # surgewatch rls: Envoy's descriptors -> tier and user
    tier_key = "tier"
    user_key = "user"
    default_tier = "free"     # a request without a tier (else: refused as unknown_tier)
    default_user = "anonymous"
    fail_open = ["free"]      # tiers admitted while Redis cannot decide (true: all; default: none)
    batch_window_ms = 2.0     # under load, one tier's checks go to Redis in batches held open this long
    batch_limit = 64          # ... or until this many wait
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.nodes import NodeListError, redact_url
from collectors.nodes import parse_nodes as _parse_nodes
from quotas.keys import DEFAULT_PREFIX
from quotas.model import QuotaError, validate_redis_url, validate_tier

__all__ = [
    "SERVER_EXAMPLE", "ConfigError", "RlsSettings", "Settings", "config_path", "load_file", "parse_lookback",
    "parse_nodes", "parse_servers", "redact_url", "resolve",
]


SERVER_EXAMPLE = "http://gpu-01:8000/metrics"  # vLLM's default port


class ConfigError(ValueError):
    """A bad setting: the message names the setting and where it came from."""


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("SURGEWATCH_CONFIG"):
        return Path(env["SURGEWATCH_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "surgewatch" / "surgewatch.toml"


def load_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


def parse_lookback(text: str) -> float:
    """'1h', '30m', '2d', '90s' or a number of seconds -> seconds. ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"invalid lookback {text!r}: a duration such as 1h, 30m or 90s")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not 1 <= value <= 30 * 86400:
        raise ValueError(f"invalid lookback {text!r}: between 1 s and 30 days")
    return value


def parse_nodes(value: str | list[str] | None) -> list[str]:
    """The node list, with a bad entry reported as a ConfigError (exit 2)."""
    try:
        return _parse_nodes(value)
    except NodeListError as e:
        raise ConfigError(str(e)) from e


def parse_servers(value: str | list[str] | None) -> list[str]:
    """The inference servers' list (`--servers`), read like the node list."""
    try:
        return _parse_nodes(value, "server", SERVER_EXAMPLE)
    except NodeListError as e:
        raise ConfigError(str(e)) from e


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


def _rls_table(table: Any) -> RlsSettings:
    """Read [rls]; a misspelt key or a value of the wrong kind is a ConfigError naming it (exit 2)."""
    if not isinstance(table, dict):
        raise ConfigError("invalid [rls]: a table (see README, At a real site)")
    known = {f for f in RlsSettings.__dataclass_fields__}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"unknown key {key!r} in [rls]: the keys are {', '.join(sorted(known))}")
        if key == "fail_open":
            if not isinstance(value, bool) and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
                raise ConfigError("invalid [rls] fail_open: true, false or a list of tier names")
        elif key == "batch_window_ms":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
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


# every key surgewatch.toml may hold; [guard] is the guard's policy (surgewatch.guard.policy)
FILE_KEYS = frozenset({"redis_url", "redis_cluster", "prefix", "nodes", "servers", "prometheus", "prometheus_lookback",
                       "interval_s", "node_interval_s", "thresholds", "rls", "guard"})


def _seconds(name: str, raw: Any) -> float:
    """An interval in seconds, 0.1 to 3600: 0, a negative number, NaN or infinity would scrape on every
    poll or never, without saying so."""
    try:
        value = float(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {name} {raw!r}: a number of seconds") from e
    if not 0.1 <= value <= 3600:  # NaN fails this too
        raise ConfigError(f"invalid {name} {value}: between 0.1 and 3600 seconds")
    return value


def _thresholds(table: Any) -> dict[str, float]:
    """The [thresholds] table: known names (a typo would silently keep a default), each a finite number
    of at least 0 (a NaN SLO would never be breached: the console calm while it burns)."""
    from surgewatch.thresholds import Thresholds

    if not isinstance(table, dict):
        raise ConfigError("invalid [thresholds]: a table of numbers")
    why = Thresholds.unknown(table)
    if why:
        raise ConfigError(f"invalid [thresholds]: {why}")
    out: dict[str, float] = {}
    for k, v in table.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
            raise ConfigError(f"invalid [thresholds] {k} = {v!r}: a finite number, 0 or more")
        out[str(k)] = float(v)
    return out


@dataclass(frozen=True)
class Settings:
    """Resolved settings. `redis_url` may hold a password: show `redis_url_shown` instead."""

    redis_url: str | None = field(default=None, repr=False)  # may hold a password: never repr it
    prefix: str = DEFAULT_PREFIX
    nodes: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()  # inference servers' /metrics (collectors.serving), parsed like nodes
    prometheus: str | None = None
    prometheus_lookback_s: float = 3600.0  # how far back Prometheus' history is read for a down target
    interval_s: float = 1.0
    node_interval_s: float = 5.0
    read_only: bool = False
    wall: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    redis_cluster: bool = False  # --redis-cluster: the cluster client without detecting (quotas.connect)
    rls: RlsSettings = field(default_factory=RlsSettings)  # the [rls] table (surgewatch rls)

    @property
    def redis_url_shown(self) -> str | None:
        url = self.redis_url
        if url and ("," in url or "+sentinel://" in url):  # several hosts: redact_url parses one
            from quotas.redis_url import shown

            return shown(url)
        return redact_url(url)

    def __repr__(self) -> str:
        return (
            f"Settings(redis_url={self.redis_url_shown!r}, nodes={len(self.nodes)}, "
            f"read_only={self.read_only}, wall={self.wall})"
        )


def resolve(
    *,
    redis: str | None = None,
    nodes: str | None = None,
    prometheus: str | None = None,
    servers: str | None = None,
    interval: float | None = None,
    prometheus_lookback: str | None = None,
    read_only: bool = False,
    wall: bool = False,
    redis_cluster: bool = False,
    env: dict[str, str] | None = None,
    file: dict[str, Any] | None = None,
) -> Settings:
    """Flags win over the environment, which wins over the file."""
    env = dict(os.environ) if env is None else env
    file = load_file(config_path(env)) if file is None else file
    unknown = sorted(set(file) - FILE_KEYS)
    if unknown:  # a typo (node_interval = 30) would silently keep the default
        raise ConfigError(f"unknown setting(s) {', '.join(map(repr, unknown))} in surgewatch.toml; "
                          f"the settings are {', '.join(sorted(FILE_KEYS))}")

    redis_url = redis or env.get("SURGEWATCH_REDIS_URL") or env.get("REDIS_URL") or file.get("redis_url")
    # `--nodes ''` (or `--servers ''`) is given (and refused as naming none), not absent
    node_value: str | list[str] | None = (
        nodes if nodes is not None else env.get("SURGEWATCH_NODES") or file.get("nodes"))
    server_value: str | list[str] | None = (
        servers if servers is not None else env.get("SURGEWATCH_SERVERS") or file.get("servers"))
    prom = prometheus or env.get("SURGEWATCH_PROMETHEUS") or file.get("prometheus")
    prefix = env.get("SURGEWATCH_PREFIX") or file.get("prefix") or DEFAULT_PREFIX
    raw_interval: Any = (
        interval if interval is not None else env.get("SURGEWATCH_INTERVAL") or file.get("interval_s", 1.0)
    )
    interval_s = _seconds("interval", raw_interval)
    node_interval_s = _seconds("node_interval_s",
                               env.get("SURGEWATCH_NODE_INTERVAL") or file.get("node_interval_s", 5.0))
    raw_lookback = prometheus_lookback or env.get("SURGEWATCH_PROMETHEUS_LOOKBACK") or file.get(
        "prometheus_lookback", "1h")
    try:
        lookback_s = parse_lookback(str(raw_lookback))
    except ValueError as e:
        raise ConfigError(f"--prometheus-lookback: {e}") from None
    thresholds = _thresholds(file.get("thresholds", {}))
    if redis_url:
        try:
            validate_redis_url(str(redis_url))
        except QuotaError as e:
            raise ConfigError(str(e)) from None
    return Settings(
        redis_url=redis_url or None,
        prefix=str(prefix),
        nodes=tuple(parse_nodes(node_value)),
        servers=tuple(parse_servers(server_value)),
        prometheus=prom or None,
        prometheus_lookback_s=lookback_s,
        interval_s=interval_s,
        node_interval_s=node_interval_s,
        read_only=read_only or wall,
        wall=wall,
        thresholds=thresholds,
        redis_cluster=redis_cluster or env.get("SURGEWATCH_REDIS_CLUSTER", "").lower() in ("1", "true", "yes")
        or file.get("redis_cluster") is True,
        rls=_rls_table(file.get("rls", {})),
    )
