"""Node lists and URL redaction: shared by the CLI, the snapshot and the console (no UI imports here)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from quotas.errors import redact


class NodeListError(ValueError):
    """A bad `--nodes` value: the message says which entry and what is accepted."""


def redact_url(url: str | None) -> str | None:
    """Hide the credentials in a URL: what screens and logs show. `user:password@` shows as `user:***@`; userinfo
    without a password (`http://TOKEN@host/`, how a bearer token often rides in a URL) shows as `***@`."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    user = parts.username or ""
    cred = f"{user}:***@" if parts.password is not None else ("***@" if user else "")
    return urlunsplit((parts.scheme, cred + host, parts.path, parts.query, parts.fragment))


def parse_nodes(value: str | Sequence[str] | None, what: str = "node",
                example: str = "http://gpu-01:9400/metrics") -> list[str]:
    """`--nodes` (and `--servers`, `what="server"`) take comma-separated URLs or `@FILE` with one URL a
    line ('#' starts a comment).

    A URL without a path gets `/metrics`, as dcgm-exporter (and every inference server) serves it there.
    Duplicates are dropped. A value that names no node (`''`, a file of comments) is refused: an empty watch
    must never look like a calm one.
    """
    if value is None:
        return []
    given = ""  # a flag, a variable or a file the operator named: it must name a node
    if isinstance(value, str):
        given = f"{what} list {value[1:]}" if value.startswith("@") else ("--nodes" if what == "node" else "--servers")
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as e:
                why = getattr(e, "strerror", None) or str(e)
                raise NodeListError(f"cannot read {what} list {path}: {why}") from e
            items = [ln.split("#", 1)[0] for ln in lines]
        else:
            items = value.split(",")
    else:
        items = list(value)
    urls: list[str] = []
    for raw in items:
        u = str(raw).strip()
        if not u:
            continue
        try:
            p = urlsplit(u)
            p.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise NodeListError(
                f"invalid {what} URL {redact(u)!r}: the port is not a number from 1 to 65535, e.g. {example}"
            ) from None
        if p.scheme not in ("http", "https") or not p.hostname:
            raise NodeListError(
                f"invalid {what} URL {redact_url(u)!r}: an http:// or https:// URL is expected, e.g. {example}"
            )
        if p.path in ("", "/"):
            u = urlunsplit((p.scheme, p.netloc, "/metrics", p.query, p.fragment))
        if u not in urls:
            urls.append(u)
    if given and not urls:
        raise NodeListError(
            f"{given} names no {what} (empty, or only comments): give one or more URLs, e.g. {example}"
        )
    return urls
