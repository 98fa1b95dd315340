"""`surgewatch init` and `surgewatch quota {list,set,pause,resume,history}`.

Exit codes (a contract): 0 done; 1 other server error (permission denied, broken stored quota);
2 bad input (the message says what is wrong and what is accepted; nothing is written);
3 version conflict; 4 server unreachable (answered within 10 s). Messages go to stderr, without passwords.
Handlers take `(args, settings)`: any `RedisSettings` (the console's `surgewatch.settings.Settings` is one;
this layer imports neither the collectors nor the UI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.exceptions import ResponseError

from quotas.actor import default_actor
from quotas.errors import BadData, BrokenQuota, Conflict, UnknownTier, Unreachable, redact
from quotas.model import (
    TIER_RE,
    Mode,
    Quota,
    QuotaError,
    QuotaSpec,
    iso,
    parse_duration,
    parse_spec,
    parse_tier_cap,
    quota_size,
    quota_text,
    sorted_tiers,
    validate_actor,
    validate_reason,
    validate_tier,
)
from quotas.outcomes import EXIT_BAD_INPUT, EXIT_CONFLICT, EXIT_ERROR, EXIT_OK, outcome
from quotas.safe import safe
from quotas.tls_probe import refuse_tls_mismatch


class RedisSettings(Protocol):
    """What the quota commands need of the resolved settings."""

    @property
    def redis_url(self) -> str | None: ...

    @property
    def prefix(self) -> str: ...

    @property
    def read_only(self) -> bool: ...

    # and optionally `redis_cluster: bool` (--redis-cluster: skip the detection, use the cluster client)


DEADLINE_S = 9.0  # the whole command, so "unreachable" is always answered within 10 s
CAS_RETRIES = 5


def _err(msg: str) -> None:
    print(f"surgewatch: {redact(msg)}", file=sys.stderr)


async def _client(settings: RedisSettings, *, force_cluster: bool = False) -> Any:
    """The client the URL calls for (one server, a cluster detected or forced, Sentinel): quotas.connect."""
    from quotas.connect import open_client, retry_once

    url = settings.redis_url
    if not url:
        raise QuotaError("no Redis URL: pass --redis URL, or set SURGEWATCH_REDIS_URL or REDIS_URL")
    try:
        # retry_once on a cluster too (not redis-py's backoff): a command runs under one deadline
        return await open_client(
            url, force_cluster=force_cluster or bool(getattr(settings, "redis_cluster", False)),
            prefix=settings.prefix, socket_connect_timeout=3, socket_timeout=4, retry=retry_once(),
        )
    except ValueError as e:
        raise QuotaError(f"invalid Redis URL {redact(url)!r}: {e}") from None


def _run(
    fn: Callable[[Any, argparse.Namespace, RedisSettings], Awaitable[int]],
    args: argparse.Namespace,
    settings: RedisSettings,
) -> int:
    """Connect, run one command under the overall deadline, map every failure to its exit code."""

    async def attempt(force_cluster: bool) -> int:
        client = None
        try:
            async with asyncio.timeout(DEADLINE_S):
                await refuse_tls_mismatch(settings.redis_url or "")  # exit 2 at once, not a TLS timeout
                client = await _client(settings, force_cluster=force_cluster)
                return await fn(client, args, settings)
        except TimeoutError:
            raise Unreachable(f"Redis did not answer within {DEADLINE_S:g} s") from None
        finally:
            try:
                if client is not None:
                    await asyncio.wait_for(client.aclose(), 1)
            except Exception:  # closing a dead connection: nothing left to do
                pass

    async def main() -> int:
        from quotas.connect import is_redirect

        try:
            return await attempt(False)
        except ResponseError as e:
            # a cluster node the detection missed: a MOVED is never executed, and every command is
            # idempotent or compare-and-set, so it runs again whole on the cluster client
            if not is_redirect(e):
                raise
            return await attempt(True)

    try:
        return asyncio.run(main())
    except (QuotaError, Conflict, Unreachable, BrokenQuota, BadData, ResponseError) as e:
        # the one mapping (quotas.outcomes): the same words as the console's editor and guard panel, and the
        # README's exit codes; anything else is a bug and surfaces as one
        o = outcome(e)
        _err(o.message)
        return o.exit_code


def bound(env_name: str, default: int, given: int | None = None) -> int:
    """A bound on tiers: the flag, else the environment variable, else the default; QuotaError (exit 2) when
    it is not a whole number from 1."""
    raw: Any = given if given is not None else os.environ.get(env_name) or default
    try:
        n = int(raw)
    except (TypeError, ValueError):
        raise QuotaError(f"invalid {env_name} {raw!r}: a whole number of tiers from 1") from None
    if n < 1:
        where = "--max-tiers" if given is not None else env_name  # name what was typed, not what was not
        raise QuotaError(f"invalid bound {n} ({where}): a whole number of tiers from 1")
    return n


def _store(client: Any, settings: RedisSettings) -> Any:
    from quotas.store import MAX_TIERS, QuotaStore

    try:
        # --read-only: a reader, whose reads never write (not even a due override's expiry)
        return QuotaStore(client, prefix=settings.prefix, max_tiers=bound("SURGEWATCH_MAX_TIERS", MAX_TIERS),
                          read_only=bool(settings.read_only))
    except ValueError as e:
        raise QuotaError(str(e)) from None


def describe(q: Quota) -> str:
    """One human line for a quota: `free 3/1d cap none enforce v7`."""
    cap = "none" if q.tier_cap_rps is None else f"{q.tier_cap_rps}/s"
    extra = " PAUSED" if q.paused else ""
    if q.expires_at is not None:
        extra += f" until {iso(q.expires_at)}"
    return f"{q.tier} {q.spec} cap {cap} {q.mode}{extra} v{q.version}"


# ---- init -------------------------------------------------------------------------------------------


async def _init(client: Any, args: argparse.Namespace, settings: RedisSettings) -> int:
    from quotas.library import library_version
    from quotas.store import SEED_TIERS

    store = _store(client, settings)
    created = await store.init()
    before, now = store.library_before, library_version()
    if before is None:
        print(f"loaded functions library surgewatch v{now}")
    elif before != now:
        print(f"upgraded functions library surgewatch v{before} -> v{now}")
    else:
        print(f"functions library surgewatch v{now} was loaded already: replaced by the shipped copy")
    for tier, (limit, window_s) in SEED_TIERS.items():
        if tier in created:
            print(f"tier {tier}: {quota_text(limit, window_s)} created")
            continue
        try:
            stored = await store.get(tier)
        except BrokenQuota as e:
            print(f"tier {tier}: exists, left as is; BROKEN: {e}")
            continue
        shown = describe(stored) if stored is not None else tier
        print(f"tier {shown} (exists, left as is)")
    return EXIT_OK


# ---- quota list / history ----------------------------------------------------------------------------


async def _list(client: Any, args: argparse.Namespace, settings: RedisSettings) -> int:
    store = _store(client, settings)
    quotas = await store.list()
    for tier, msg in store.broken.items():
        _err(f"tier {safe(tier, 60)} is BROKEN (listed as broken, exit 1): {msg}")  # a name from Redis
    for tier in store.missing:
        _err(
            f"tier {tier} has NO QUOTA: every gateway request for it is refused as unknown_tier; fix: "
            f"surgewatch quota set {tier} LIMIT/WINDOW --create, or surgewatch quota import FILE"
        )
    code = EXIT_ERROR if store.missing or store.broken else EXIT_OK
    if not quotas and not store.missing and not store.broken:
        _err(
            "Redis holds no tier at all (restarted empty, or flushed?): every gateway request is refused as "
            "unknown_tier; restore: surgewatch quota import FILE (a quota export), or surgewatch init"
        )
        code = EXIT_ERROR
    by_tier = {q.tier: q for q in quotas}
    order = {t: i for i, t in enumerate(sorted_tiers([*by_tier, *store.missing, *store.broken],
                                                     lambda t: quota_size(by_tier.get(t))))}
    if args.json:
        listed = [{**q.to_json(), "state": quota_state(q)} for q in quotas]
        listed += [{"tier": t, "state": "no_quota"} for t in store.missing]
        listed += [{"tier": t, "state": "broken", "quota_error": msg} for t, msg in store.broken.items()]
        print(json.dumps(sorted(listed, key=lambda d: order[d["tier"]]), indent=2))
        return code
    rows = [("TIER", "STATE", "QUOTA", "CAP/S", "MODE", "PAUSED", "EXPIRES", "VERSION", "UPDATED BY", "UPDATED AT")]
    rows += [(t, "no quota", "-", "-", "-", "-", "-", "-", "-", "-") for t in store.missing]
    rows += [(t if TIER_RE.fullmatch(t) else repr(t[:40]), "BROKEN", "-", "-", "-", "-", "-", "-", "-", "-")
             for t in store.broken]
    for q in quotas:
        rows.append(
            (
                q.tier,
                quota_state(q),
                q.spec,
                "none" if q.tier_cap_rps is None else str(q.tier_cap_rps),
                q.mode,
                "yes" if q.paused else "no",
                iso(q.expires_at) or "-",
                str(q.version),
                q.updated_by,
                iso(q.updated_at) or "-",
            )
        )
    header, body = rows[0], sorted(rows[1:], key=lambda r: order.get(r[0], len(order)))  # the console's order
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in (header, *body):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return code


def quota_state(q: Quota) -> str:
    """A stored quota's state, as `snapshot --json` names it (the rule is `Quota.state`)."""
    return q.state


async def _history(client: Any, args: argparse.Namespace, settings: RedisSettings) -> int:
    store = _store(client, settings)
    entries = await store.history(args.tier, count=args.count)
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
        return EXIT_OK
    for e in entries:
        old = describe(e.old) if e.old else f"(broken: {e.old_broken['broken']})" if e.old_broken else "(new tier)"
        new = describe(e.new) if e.new else "(none)"
        why = f"  reason: {e.reason}" if e.reason else ""
        print(f"{iso(e.at)}  {e.tier}  v{e.version}  {e.actor}  {e.kind}: {old} -> {new}{why}")
    return EXIT_OK


# ---- quota set / pause / resume ---------------------------------------------------------------------


def _common(args: argparse.Namespace) -> tuple[str, str, str]:
    """Validate tier, actor, reason before any I/O: bad input never reaches the server."""
    tier = validate_tier(args.tier)
    actor = validate_actor(args.as_name if args.as_name is not None else default_actor())
    reason = validate_reason(args.reason)
    if args.expect_version is not None and args.expect_version < 0:
        raise QuotaError(f"invalid --expect-version {args.expect_version}: a whole number from 0")
    return tier, actor, reason


async def _set(client: Any, args: argparse.Namespace, settings: RedisSettings) -> int:
    tier, actor, reason = _common(args)
    limit, window_s = parse_spec(args.spec)
    cap_given = args.tier_cap is not None
    if cap_given and not args.tier_cap.strip():  # an unset shell variable would silently lift the tier's cap
        raise QuotaError("invalid tier cap '': give requests per second, or 'none' to clear the cap")
    cap = parse_tier_cap(args.tier_cap) if cap_given else None
    for_s = parse_duration(args.for_, what="duration") if args.for_ is not None else None
    mode: Mode | None = "shadow" if args.shadow else "enforce" if args.enforce else None
    store = _store(client, settings)
    for attempt in range(CAS_RETRIES):
        try:
            current = await store.get(tier)
        except BrokenQuota:
            current = None  # a full set repairs it
        if current is None and not args.create and not await _broken_exists(store, tier):
            raise UnknownTier(f"unknown tier {tier!r}: pass --create to create it (see `surgewatch quota list`)")
        spec = QuotaSpec(
            limit,
            window_s,
            cap if cap_given or current is None else current.tier_cap_rps,
            current.paused if current else False,
            mode or (current.mode if current else "enforce"),
        )
        if (current is not None and current.settings() == spec and for_s is None and current.expires_at is None
                and args.expect_version in (None, current.version)):
            print(f"unchanged {describe(current)}: already so, nothing written")  # no new version, no audit
            return EXIT_OK
        expect = args.expect_version
        if expect is None and current is not None:
            expect = current.version  # keep the kept fields exactly as read: CAS, retried below
        try:
            q = await store.set(
                tier, spec, actor=actor, reason=reason, expect_version=expect, create=args.create, for_s=for_s
            )
        except Conflict:
            if args.expect_version is not None or attempt == CAS_RETRIES - 1:
                raise
            continue
        print(f"set {describe(q)} by {q.updated_by}")
        return EXIT_OK
    return EXIT_CONFLICT  # pragma: no cover - the loop returns or raises


async def _broken_exists(store: Any, tier: str) -> bool:
    return bool(await store._b(lambda: store.client.exists(store.keys.quota(tier))))


async def _pause_resume(client: Any, args: argparse.Namespace, settings: RedisSettings) -> int:
    tier, actor, reason = _common(args)
    store = _store(client, settings)
    op = store.pause if args.quota_command == "pause" else store.resume
    q = await op(tier, actor=actor, reason=reason, expect_version=args.expect_version)
    print(f"{args.quota_command}d {describe(q)} by {q.updated_by}")
    return EXIT_OK


# ---- wiring -----------------------------------------------------------------------------------------


def _handler(
    fn: Callable[[Any, argparse.Namespace, RedisSettings], Awaitable[int]], *, writes: bool = False
) -> Callable[[argparse.Namespace, RedisSettings], int]:
    """The command's entry point; one that `writes` is refused under `--read-only` before connecting."""

    def handle(args: argparse.Namespace, settings: RedisSettings) -> int:
        if writes and settings.read_only:
            what = "init" if fn is _init else f"quota {args.quota_command}"  # set, pause, resume, import
            _err(f"`{what}` writes to Redis and --read-only was given: nothing was done (drop --read-only to write)")
            return EXIT_BAD_INPUT
        return _run(fn, args, settings)

    return handle


def _actor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("tier", metavar="TIER")
    p.add_argument("--reason", default="", metavar="TEXT", help="why (kept in the audit history)")
    p.add_argument(
        "--as", dest="as_name", metavar="NAME", help="actor for the audit (default: login user and SSH client)"
    )
    p.add_argument("--expect-version", type=int, metavar="N", help="compare-and-set: fail (exit 3) unless at version N")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `init` and `quota ...` to the `surgewatch` parser."""
    p_init = sub.add_parser(
        "init", help="load the functions library and seed the default tiers where absent",
        description="Load (or replace with the shipped copy) the limiter's functions library in Redis and create "
        "the seed tiers that do not exist yet. Tiers that exist are left as they are: safe to run again.",
    )
    p_init.set_defaults(func=_handler(_init, writes=True))

    p_quota = sub.add_parser("quota", help="list, change, pause and audit per-tier quotas")
    qsub = p_quota.add_subparsers(dest="quota_command", metavar="ACTION", required=True)

    p_list = qsub.add_parser("list", help="every tier's quota")
    p_list.add_argument("--json", action="store_true", help="JSON list (keys: tier, limit, window_s, ...)")
    p_list.set_defaults(func=_handler(_list))

    p_set = qsub.add_parser("set", help="change a tier's quota, e.g. `quota set free 3/1d --reason surge`")
    _actor_options(p_set)
    p_set.add_argument("spec", metavar="LIMIT/WINDOW", help="e.g. 3/1d, 50/3h, 600/1m, 10/30s")
    # `-1/1d` must reach our validator (which says what is accepted), not look like an unknown option
    p_set._negative_number_matcher = re.compile(r"^-\d")
    p_set.add_argument("--tier-cap", metavar="RPS", help="tier-wide requests per second, or 'none' (default: keep)")
    mode = p_set.add_mutually_exclusive_group()
    mode.add_argument("--shadow", action="store_true", help="admit all, count what would be refused")
    mode.add_argument("--enforce", action="store_true", help="refuse over-quota requests (default: keep the mode)")
    p_set.add_argument("--for", dest="for_", metavar="DURATION", help="temporary: fall back after e.g. 2h (1s..31d)")
    p_set.add_argument("--create", action="store_true", help="allow creating a tier that does not exist")
    p_set.set_defaults(func=_handler(_set, writes=True))

    from surgewatch.cli.backup import register_backup

    register_backup(qsub, _handler, _run)

    for name, what in (("pause", "refuse everyone in the tier"), ("resume", "undo pause")):
        p = qsub.add_parser(name, help=what)
        _actor_options(p)
        p.set_defaults(func=_handler(_pause_resume, writes=True))

    p_hist = qsub.add_parser("history", help="audit history, newest first")
    p_hist.add_argument("tier", metavar="TIER", nargs="?")
    p_hist.add_argument("--count", type=int, default=20, metavar="N", help="entries to show (default 20)")
    p_hist.add_argument(
        "--json", action="store_true", help="JSON list (keys: tier, actor, at, version, old, new, reason)"
    )
    p_hist.set_defaults(func=_handler(_history))
