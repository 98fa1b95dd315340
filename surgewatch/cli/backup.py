"""`surgewatch quota export` and `quota import FILE`: the CLI of quotas.backup.

Wired into `quota` by surgewatch.cli.quota (which owns connecting, the deadline and the exit codes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from quotas.actor import default_actor
from quotas.backup import MAX_IMPORT_TIERS, Saved, parse_backup, restore
from quotas.model import QuotaError, validate_actor, validate_reason
from quotas.safe import safe
from surgewatch.cli.quota import (  # surgewatch.cli.quota imports this module only in register()
    EXIT_BAD_INPUT,
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_OK,
    _err,
    _store,
    bound,
    describe,
)


async def _export(client: Any, args: argparse.Namespace, settings: Any) -> int:
    store = _store(client, settings)
    quotas = await store.list()
    for tier, msg in store.broken.items():
        _err(f"warning: not exported, tier {safe(tier, 60)}: {msg}")  # a name from Redis
    for tier in store.missing:
        _err(f"warning: not exported, tier {tier}: it has no quota")
    print(json.dumps([q.to_json() for q in quotas], indent=2))
    return EXIT_ERROR if store.broken or store.missing else EXIT_OK


def _read_backup(path: str, max_tiers: int) -> list[Saved]:
    """The file (or `-`: standard input), parsed and validated whole before any connection."""
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except (OSError, UnicodeDecodeError) as e:
        raise QuotaError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return parse_backup(text, source=path if path != "-" else "standard input", max_tiers=max_tiers)


async def _import(client: Any, args: argparse.Namespace, settings: Any) -> int:
    store = _store(client, settings)
    outcomes = await restore(
        store, args.saved, actor=args.actor, reason=args.reason_text or f"imported from {args.file}",
        only_missing=args.only_missing,
    )
    for o in outcomes:
        shown = describe(o.quota) if o.quota is not None else ""
        print(f"tier {o.tier}: {o.action}{': ' + shown if shown else ''}{' (' + o.detail + ')' if o.detail else ''}")
    return EXIT_CONFLICT if any(o.action == "conflict" for o in outcomes) else EXIT_OK


def _import_command(args: argparse.Namespace, settings: Any, run: Callable[..., int]) -> int:
    """Validate everything (file, actor, reason) before connecting: bad input writes nothing."""
    try:
        args.saved = _read_backup(args.file, bound("SURGEWATCH_MAX_IMPORT_TIERS", MAX_IMPORT_TIERS, args.max_tiers))
        args.actor = validate_actor(args.as_name if args.as_name is not None else default_actor())
        args.reason_text = validate_reason(args.reason)
    except QuotaError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    return run(_import, args, settings)



def register_backup(qsub: Any, handler: Callable[..., Any], run: Callable[..., int]) -> None:
    """Add `export` and `import` to the `quota` subcommands."""
    p_exp = qsub.add_parser("export", help="every tier's quota as JSON (the quota list --json objects): a backup")
    p_exp.add_argument("--json", action="store_true", help="JSON (the only format; accepted for scripts)")
    p_exp.set_defaults(func=handler(_export))

    p_imp = qsub.add_parser("import", help="write the quotas of a backup (quota export output) through the store")
    p_imp.add_argument("file", metavar="FILE", help="the backup, or - for standard input")
    p_imp.add_argument("--only-missing", action="store_true", help="write only tiers that have no quota now")
    p_imp.add_argument("--reason", default="", metavar="TEXT", help="why (default: 'imported from FILE')")
    p_imp.add_argument("--as", dest="as_name", metavar="NAME", help="actor for the audit (default: login user)")
    p_imp.add_argument("--max-tiers", type=int, metavar="N",
                       help=f"refuse a file of more than N tiers (default {MAX_IMPORT_TIERS:,}, or "
                            "SURGEWATCH_MAX_IMPORT_TIERS); tiers in all are bounded by SURGEWATCH_MAX_TIERS (10,000)")
    imp = handler(_import, writes=True)
    p_imp.set_defaults(func=lambda a, s: imp(a, s) if s.read_only else _import_command(a, s, run))
