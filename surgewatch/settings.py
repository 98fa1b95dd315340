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

Every value is checked here, whatever its source, before any command runs: a bad one is a ConfigError
(exit 2) naming the setting and its source. Booleans from the environment are 1/true/yes/on or
0/false/no/off (any case); an empty variable counts as unset, an empty flag (`--prometheus ''`) is refused.
Outside text a message quotes is escaped and cut (`settings_file.echo`); a password is never shown.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collectors.nodes import NodeListError, redact_url
from collectors.nodes import parse_nodes as _parse_nodes
from quotas.keys import DEFAULT_PREFIX
from quotas.model import QuotaError, validate_redis_url
from quotas.redis_url import shown
from surgewatch.settings_file import (
    FILE_KEYS,
    FILE_NAME,
    ConfigError,
    RlsSettings,
    check_file,
    config_path,
    echo,
    escaped,
    load_file,
    rls_table,
    thresholds_table,
)

__all__ = [
    "FILE_KEYS", "SERVER_EXAMPLE", "ConfigError", "RlsSettings", "Settings", "config_path", "load_file",
    "parse_bool", "parse_lookback", "parse_nodes", "parse_servers", "redact_url", "resolve",
]


SERVER_EXAMPLE = "http://gpu-01:8000/metrics"  # vLLM's default port
MAX_URL_CHARS = 2048  # a node's, a server's or Prometheus' URL
MAX_PREFIX_CHARS = 128
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(text: str, source: str) -> bool:
    """1/true/yes/on or 0/false/no/off, any case, spaces around ignored; else ConfigError naming `source`."""
    word = text.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigError(f"invalid {source} {echo(text)}: on ({', '.join(TRUE_WORDS)}) "
                      f"or off ({', '.join(FALSE_WORDS)}), in any case")


def parse_lookback(text: str) -> float:
    """'1h', '30m', '2d', '90s' or a number of seconds -> seconds. ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text) if len(text) <= 64 else None
    if not m:
        raise ValueError(f"invalid lookback {echo(text)}: a duration such as 1h, 30m or 90s")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not 1 <= value <= 30 * 86400:
        raise ValueError(f"invalid lookback {echo(text)}: between 1 s and 30 days")
    return value


def _entries(value: str | list[str]) -> list[str]:
    """The URLs a node list names, as collectors.nodes reads them (a file it cannot read: none here)."""
    if isinstance(value, list):
        return value
    if not value.startswith("@"):
        return value.split(",")
    try:
        lines = Path(value[1:]).read_text().splitlines()
    except (OSError, UnicodeDecodeError, ValueError):
        return []  # collectors.nodes says why
    return [ln.split("#", 1)[0] for ln in lines]


def _url_list(value: str | list[str] | None, what: str, example: str) -> list[str]:
    """A node or server list, each URL short and printable before collectors.nodes reads it (its
    messages quote an entry whole); its message escaped and cut."""
    for raw in _entries(value) if value is not None else []:
        entry = str(raw).strip()
        if len(entry) > MAX_URL_CHARS:
            raise ConfigError(f"invalid {what} URL {echo(shown(entry) or '')}: "
                              f"{len(entry)} characters (at most {MAX_URL_CHARS})")
        if not entry.isprintable():
            raise ConfigError(f"invalid {what} URL {echo(shown(entry) or '')}: a control character: "
                              "printable characters only")
    try:
        return _parse_nodes(value, what, example)
    except NodeListError as e:
        raise ConfigError(escaped(str(e))) from e


def parse_nodes(value: str | list[str] | None) -> list[str]:
    """The node list, with a bad entry reported as a ConfigError (exit 2)."""
    return _url_list(value, "node", "http://gpu-01:9400/metrics")


def parse_servers(value: str | list[str] | None) -> list[str]:
    """The inference servers' list (`--servers`), read like the node list."""
    return _url_list(value, "server", SERVER_EXAMPLE)


def _prometheus(url: str, source: str) -> str:
    """An http(s) URL with a host and a port from 1 to 65535, printable; else ConfigError naming `source`."""
    why = ""
    if len(url) > MAX_URL_CHARS:
        why = f"{len(url)} characters (at most {MAX_URL_CHARS})"
    elif not url.isprintable():
        why = "a control character: printable characters only"
    else:
        try:
            p = urlsplit(url)
            port = p.port
        except ValueError:
            why = "the port is not a number from 1 to 65535"
        else:
            if p.scheme not in ("http", "https"):
                why = "accepted schemes http, https (e.g. http://prometheus:9090)"
            elif not p.hostname:
                why = "no host (e.g. http://prometheus:9090)"
            elif port == 0:
                why = "port 0"
    if why:
        raise ConfigError(f"invalid Prometheus URL {echo(shown(url) or '')} ({source}): {why}")
    return url


def _prefix(prefix: str, source: str) -> str:
    """The Redis key prefix: printable, no braces or spaces (quotas.keys.Keys), at most MAX_PREFIX_CHARS."""
    bad = next((c for c in prefix if not c.isprintable() or c in "{} "), None)
    if not prefix or len(prefix) > MAX_PREFIX_CHARS or bad is not None:
        why = (f"the character {bad!r}: printable characters only, no braces or spaces" if bad is not None
               else f"1 to {MAX_PREFIX_CHARS} characters")
        raise ConfigError(f"invalid key prefix {echo(prefix)} ({source}): {why}")
    return prefix


def _seconds(name: str, raw: Any, source: str) -> float:
    """An interval in seconds, 0.1 to 3600: 0, a negative number, NaN or infinity would scrape on every
    poll or never, without saying so."""
    try:
        value = float(raw) if not isinstance(raw, str) or len(raw) <= 64 else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not 0.1 <= value <= 3600:  # NaN fails this too
        shown_raw = echo(raw) if isinstance(raw, str) else repr(raw)
        raise ConfigError(f"invalid {name} {shown_raw} ({source}): a number of seconds from 0.1 to 3600")
    return value


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


def _pick(flag: Any, flag_name: str, env: Mapping[str, str], names: tuple[str, ...],
          file: Mapping[str, Any], key: str) -> tuple[Any, str]:
    """The value that wins (a flag given, even empty; a variable that is set and not empty; the file's
    key) and where it came from; (None, "") when none gives it."""
    if flag is not None:
        return flag, flag_name
    for name in names:
        if env.get(name):
            return env[name], name
    if key in file:
        return file[key], f"{key} in {FILE_NAME}"
    return None, ""


def _given(value: Any, source: str, what: str) -> Any:
    if value == "":
        raise ConfigError(f"{source} is empty: give {what}")
    return value


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
    file = load_file(config_path(env), required=bool(env.get("SURGEWATCH_CONFIG"))) if file is None else file
    check_file(file)

    redis_url, source = _pick(redis, "--redis", env, ("SURGEWATCH_REDIS_URL", "REDIS_URL"), file, "redis_url")
    if redis_url is not None:
        try:
            validate_redis_url(_given(redis_url, source, "a Redis URL such as redis://localhost:6379/0"))
        except QuotaError as e:
            raise ConfigError(f"{source}: {e}") from None
    # `--nodes ''` (or `--servers ''`) is given (and refused as naming none), not absent
    node_value: str | list[str] | None = (
        nodes if nodes is not None else env.get("SURGEWATCH_NODES") or file.get("nodes"))
    server_value: str | list[str] | None = (
        servers if servers is not None else env.get("SURGEWATCH_SERVERS") or file.get("servers"))
    prom, source = _pick(prometheus, "--prometheus", env, ("SURGEWATCH_PROMETHEUS",), file, "prometheus")
    if prom is not None:
        _prometheus(_given(prom, source, "a Prometheus URL such as http://prometheus:9090"), source)
    prefix, source = _pick(None, "", env, ("SURGEWATCH_PREFIX",), file, "prefix")
    prefix = DEFAULT_PREFIX if prefix is None else _prefix(prefix, source)
    raw, source = _pick(interval, "--interval", env, ("SURGEWATCH_INTERVAL",), file, "interval_s")
    interval_s = 1.0 if raw is None else _seconds("interval", raw, source)
    raw, source = _pick(None, "", env, ("SURGEWATCH_NODE_INTERVAL",), file, "node_interval_s")
    node_interval_s = 5.0 if raw is None else _seconds("node_interval_s", raw, source)
    raw, source = _pick(prometheus_lookback, "--prometheus-lookback", env, ("SURGEWATCH_PROMETHEUS_LOOKBACK",),
                        file, "prometheus_lookback")
    try:
        lookback_s = 3600.0 if raw is None else parse_lookback(str(_given(raw, source, "a duration such as 1h")))
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    cluster, source = _pick(True if redis_cluster else None, "--redis-cluster", env,
                            ("SURGEWATCH_REDIS_CLUSTER",), file, "redis_cluster")
    return Settings(
        redis_url=redis_url,
        prefix=prefix,
        nodes=tuple(parse_nodes(node_value)),
        servers=tuple(parse_servers(server_value)),
        prometheus=prom,
        prometheus_lookback_s=lookback_s,
        interval_s=interval_s,
        node_interval_s=node_interval_s,
        read_only=read_only or wall,
        wall=wall,
        thresholds=thresholds_table(file.get("thresholds", {})),
        redis_cluster=parse_bool(cluster, source) if isinstance(cluster, str) else bool(cluster),
        rls=rls_table(file.get("rls", {})),
    )
