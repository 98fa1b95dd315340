"""The Redis URL forms surgewatch accepts, parsed and checked before any connection (no redis import:
`quotas.connect` builds the clients).

- `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS), `unix:///path/to.sock`: one server
  (which may turn out to be a cluster node: `quotas.connect` detects it);
- `redis://a:7000,redis://b:7000` (or `redis://a:7000,b:7000`: a part without a scheme takes the first's
  scheme and credentials): startup nodes of a cluster (database 0 only);
- `redis+sentinel://[user:password@]host:26379[,host2:26379]/MASTER[/DB]` (`rediss+sentinel://`: TLS).

A one-server or cluster URL may carry the query options in `OPTIONS` (`?socket_timeout=2&client_name=ops`),
each value checked here: redis-py would pass any other name to the connection class, which fails at
connect with a TypeError. A URL over MAX_URL_CHARS (a node over MAX_NODE_CHARS), or holding a control
character, is refused before any parsing; a message quotes at most ECHO_CHARS of the URL, passwords hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qsl, urlsplit

from quotas.model import QuotaError, validate_node_url

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
ACCEPTED = (
    "accepted: redis://[user:password@]host[:port][/db], rediss://... (TLS), unix:///path/to.sock, "
    "several redis://host:port separated by commas (cluster startup nodes), "
    "redis+sentinel://[user:password@]host:26379[,host2:26379]/MASTER[/DB]"
)
Kind = Literal["single", "cluster", "sentinel"]
MAX_URL_CHARS = 65_536  # the whole value: a cluster's startup nodes
MAX_NODE_CHARS = 2_048  # one server's URL (a long ACL password fits)
ECHO_CHARS = 200  # what a message quotes of a URL


@dataclass(frozen=True)
class Target:
    """Where a URL points. `nodes`: the node URLs (single: one; cluster: the startup nodes);
    `sentinels`, `service`, `db` for Sentinel; `options` the URL's connection options (user, TLS, ...)."""

    kind: Kind
    nodes: tuple[str, ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    options: dict[str, Any] = field(default_factory=dict, repr=False)  # holds the password: never repr it


def shown(url: str | None) -> str | None:
    """The URL with every password replaced by `***` (any form above), what screens and logs show."""
    if not url:
        return url
    out = []
    for part in url.split(","):
        scheme, sep, rest = part.rpartition("://")
        userinfo, at, hostpart = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            rest = f"{user}:***@{hostpart}" if colon else f"{user}@{hostpart}"
        out.append(f"{scheme}{sep}{rest}")
    return ",".join(out)


def _echo(text: str) -> str:
    """`text` quoted for a message: control characters escaped (repr), cut to ECHO_CHARS with an ellipsis."""
    cut = text[:ECHO_CHARS]
    return repr(cut) + (f"... ({len(text)} characters)" if len(text) > len(cut) else "")


def _bad(url: str, why: str) -> QuotaError:
    return QuotaError(f"invalid Redis URL {_echo(shown(url) or '')}: {why} ({ACCEPTED})")


def _seconds(v: str) -> str | None:
    try:
        x = float(v)
    except ValueError:
        return "a number of seconds"
    return None if 0 < x < math.inf and len(v) <= 32 else "a number of seconds above 0"


def _count(lo: int) -> Callable[[str], str | None]:
    return lambda v: None if v.isascii() and v.isdigit() and len(v) <= 9 and int(v) >= lo else (
        f"a whole number from {lo}")


def _one_of(*words: str, why: str = "") -> Callable[[str], str | None]:
    return lambda v: None if v in words else why or " or ".join(words)


def _text(v: str) -> str | None:
    return None if 0 < len(v) <= 1024 and v.isprintable() else "printable text of at most 1024 characters"


# redis-py's from_url passes every query option to the connection class: these are the ones each client
# surgewatch builds (one server, a cluster's nodes, unix://) accepts, with the values redis-py reads
# (its to_bool reads anything but 0/f/false/n/no as true: only these words are taken). The retries, the
# protocol (RESP3 changes the replies' shapes) and the reply decoding are surgewatch's own: not options.
_BOOL = _one_of("true", "false", "1", "0", "yes", "no", why="true or false (1 or 0, yes or no)")
TCP_SCHEMES = ("redis", "rediss")
OPTIONS: dict[str, tuple[Callable[[str], str | None], tuple[str, ...]]] = {
    "db": (_count(0), ("redis", "rediss", "unix")),
    "socket_timeout": (_seconds, ("redis", "rediss", "unix")),
    "socket_connect_timeout": (_seconds, ("redis", "rediss", "unix")),
    "health_check_interval": (_count(0), ("redis", "rediss", "unix")),
    "max_connections": (_count(1), ("redis", "rediss", "unix")),
    "client_name": (_text, ("redis", "rediss", "unix")),
    "socket_keepalive": (_BOOL, TCP_SCHEMES),
    "ssl_cert_reqs": (_one_of("none", "optional", "required"), ("rediss",)),
    "ssl_check_hostname": (_BOOL, ("rediss",)),
    "ssl_ca_certs": (_text, ("rediss",)),
    "ssl_certfile": (_text, ("rediss",)),
    "ssl_keyfile": (_text, ("rediss",)),
}


def _options(url: str, p: SplitResult) -> dict[str, str]:
    """The query options of one node's URL, each known and its value valid; else QuotaError."""
    out: dict[str, str] = {}
    for name, value in parse_qsl(p.query, keep_blank_values=True):
        known = sorted(k for k, (_, schemes) in OPTIONS.items() if p.scheme in schemes)
        if name not in OPTIONS:
            raise _bad(url, f"unknown option {_echo(name)} (known: {', '.join(known)})")
        check, schemes = OPTIONS[name]
        if p.scheme not in schemes:
            raise _bad(url, f"option {name!r} is for {' or '.join(s + '://' for s in schemes)} only")
        if name in out:
            raise _bad(url, f"option {name!r} given twice")
        why = check(value.lower() if check is _BOOL else value)
        if why:
            raise _bad(url, f"option {name}={_echo(value)}: {why}")
        out[name] = value
    return out


def _check_node(url: str, node: str) -> None:
    """One server's URL (`node`, a part of `url`) as redis-py would connect to it; else QuotaError."""
    if len(node) > MAX_NODE_CHARS:
        raise _bad(url, f"a server's URL of {len(node)} characters (at most {MAX_NODE_CHARS})")
    try:
        p = urlsplit(node)
        port = p.port
    except ValueError:
        raise _bad(url, "the port is not a number from 1 to 65535") from None
    if p.scheme == "unix":
        if not p.path:
            raise _bad(url, "no socket path")
    elif p.scheme not in TCP_SCHEMES:
        raise _bad(url, f"unknown scheme {_echo(p.scheme + '://')}")
    elif not p.hostname:
        raise _bad(url, "no host")
    elif port == 0:
        raise _bad(url, "port 0")
    db = p.path.lstrip("/") if p.scheme != "unix" else ""
    if db and not (db.isascii() and db.isdigit()):
        raise _bad(url, f"the database {_echo(db)} is not a number")
    _options(url, p)
    validate_node_url(node, ACCEPTED)  # the model's rule too (never stricter than the checks above)


def _sentinel(url: str) -> Target:
    scheme, _, rest = url.partition("://")
    userinfo, at, rest = rest.rpartition("@")
    if "?" in rest:
        raise _bad(url, "a Sentinel URL takes no query options")
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise _bad(url, "no master name (redis+sentinel://host:26379/MASTER)")
    if len(parts) > 2:
        raise _bad(url, "the path is /MASTER or /MASTER/DB")
    db = parts[1] if len(parts) == 2 else "0"
    if not (db.isascii() and db.isdigit()):
        raise _bad(url, f"the database {db!r} is not a number")
    sentinels: list[tuple[str, int]] = []
    for h in hosts.split(","):
        try:
            p = urlsplit(f"redis://{h}")
            port = p.port or 26379
        except ValueError:
            raise _bad(url, f"the port of Sentinel {_echo(h)} is not a number from 1 to 65535") from None
        if not p.hostname or port == 0:
            raise _bad(url, f"Sentinel {_echo(h)} has no host or port 0")
        sentinels.append((p.hostname, port))
    options: dict[str, Any] = {"db": int(db)}
    if at:
        user, colon, password = userinfo.partition(":")
        options.update(username=user or None, password=password if colon else None)
    if scheme == "rediss+sentinel":
        options["ssl"] = True
    return Target("sentinel", sentinels=tuple(sentinels), service=parts[0], options=options)


def parse_target(url: str) -> Target:
    """Where `url` points, checked whole (every form in the module's docstring); QuotaError otherwise."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise _bad(url, f"{len(url)} characters (at most {MAX_URL_CHARS})")
    if not url.isprintable():
        bad = next(c for c in url if not c.isprintable())
        raise _bad(url, f"a control character ({bad!r}): printable characters only")
    scheme = url.partition("://")[0]
    if scheme in SENTINEL_SCHEMES:
        return _sentinel(url)
    parts = [p.strip() for p in url.split(",")]
    if any(not p for p in parts):
        raise _bad(url, "an empty startup node in the list")
    first = parts[0]
    head, _, rest = first.partition("://")
    creds = rest.rpartition("@")[0] + "@" if "@" in rest else ""
    nodes = [p if "://" in p else f"{head}://{creds}{p}" for p in parts]
    for n in nodes:
        _check_node(url, n)
    if len(nodes) == 1:
        return Target("single", nodes=(nodes[0],))
    schemes = {n.partition("://")[0] for n in nodes}
    if schemes - {"redis", "rediss"} or len(schemes) > 1:
        raise _bad(url, "cluster startup nodes are all redis:// or all rediss://")
    if any(urlsplit(n).path.strip("/") not in ("", "0") or dict(parse_qsl(urlsplit(n).query)).get("db", "0") != "0"
           for n in nodes):
        raise _bad(url, "a cluster has only database 0")
    return Target("cluster", nodes=tuple(nodes))
