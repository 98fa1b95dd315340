"""The Redis URL forms surgewatch accepts, parsed and checked before any connection (no redis import:
`quotas.connect` builds the clients).

- `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS), `unix:///path/to.sock`: one server
  (which may turn out to be a cluster node: `quotas.connect` detects it);
- `redis://a:7000,redis://b:7000` (or `redis://a:7000,b:7000`: a part without a scheme takes the first's
  scheme and credentials): startup nodes of a cluster (database 0 only);
- `redis+sentinel://[user:password@]host:26379[,host2:26379]/MASTER[/DB]` (`rediss+sentinel://`: TLS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from quotas.model import QuotaError, validate_node_url

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
ACCEPTED = (
    "accepted: redis://[user:password@]host[:port][/db], rediss://... (TLS), unix:///path/to.sock, "
    "several redis://host:port separated by commas (cluster startup nodes), "
    "redis+sentinel://[user:password@]host:26379[,host2:26379]/MASTER[/DB]"
)
Kind = Literal["single", "cluster", "sentinel"]


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


def _bad(url: str, why: str) -> QuotaError:
    return QuotaError(f"invalid Redis URL {shown(url)!r}: {why} ({ACCEPTED})")


def _sentinel(url: str) -> Target:
    scheme, _, rest = url.partition("://")
    userinfo, at, rest = rest.rpartition("@")
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
            raise _bad(url, f"the port of Sentinel {h!r} is not a number from 1 to 65535") from None
        if not p.hostname or port == 0:
            raise _bad(url, f"Sentinel {h!r} has no host or port 0")
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
        validate_node_url(n, ACCEPTED)
    if len(nodes) == 1:
        return Target("single", nodes=(nodes[0],))
    schemes = {n.partition("://")[0] for n in nodes}
    if schemes - {"redis", "rediss"} or len(schemes) > 1:
        raise _bad(url, "cluster startup nodes are all redis:// or all rediss://")
    if any(urlsplit(n).path.strip("/") not in ("", "0") for n in nodes):
        raise _bad(url, "a cluster has only database 0")
    return Target("cluster", nodes=tuple(nodes))
