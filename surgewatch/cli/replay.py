"""`surgewatch replay FILE`: the console on a recording; `--json`, `--at` and `--info` print instead
(surgewatch/cli/record.py, without loading Textual)."""

from __future__ import annotations

import argparse
import sys

from surgewatch.settings import Settings

EXIT_BAD_INPUT = 2
TIME_OPTIONS = frozenset({"--at", "--from", "--to", "--start-at"})  # each takes a time: `-30s` is one


def joined_times(argv: list[str]) -> list[str]:
    """`--at -30s` as `--at=-30s`: argparse reads a value starting with '-' (not a plain number) as an option
    and refuses the documented "30 s before the end" with "expected one argument"."""
    out: list[str] = []
    for tok in argv:
        if out and out[-1] in TIME_OPTIONS and len(tok) > 1 and tok[0] == "-" and tok[1].isdigit():
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    """Add `replay` to the `surgewatch` parser."""
    p = sub.add_parser(
        "replay",
        help="open the console on a recording (read-only), or print it as snapshot --json documents",
        description="Replay a recording made by `surgewatch --record FILE`, `surgewatch record FILE` or "
        "`surgewatch demo --record FILE` in the same console, read-only: space play/pause, arrows one "
        "second, shift+arrows one minute, g go to a time, 1/2/3 speed 1x/10x/60x. "
        "Times: 14:32:05 (UTC), 2026-11-25T14:32:05Z, +10m (from the start), -30s (before the end).",
    )
    p.add_argument("file", metavar="FILE", help="the recording")
    p.add_argument("--json", action="store_true", help="print one snapshot --json document per recorded second")
    p.add_argument("--from", dest="start", metavar="T", help="with --json: from this time (default: the start)")
    p.add_argument("--to", dest="stop", metavar="T", help="with --json: up to this time (default: the end)")
    p.add_argument("--every", metavar="S", help="with --json: one document every S seconds (default 1)")
    p.add_argument("--at", metavar="T", help="print exactly one document, the state at T")
    p.add_argument("--info", action="store_true",
                   help="summarize: time span, sources, nodes, GPUs, tiers, quota changes, size")
    p.add_argument("--speed", type=int, default=1, choices=(1, 10, 60), help="console: starting speed (default 1)")
    p.add_argument("--start-at", metavar="T", help="console: open at this time (default: the start)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.json or args.at is not None or args.info:
        from surgewatch.cli.record import replay_headless

        return replay_headless(args)
    if args.start is not None or args.stop is not None or args.every is not None:
        print("surgewatch: --from, --to and --every go with --json", file=sys.stderr)
        return EXIT_BAD_INPUT
    from surgewatch.frontends import front_ends
    from surgewatch.recording.documents import parse_time
    from surgewatch.recording.format import RecordingError
    from surgewatch.recording.reader import Recording

    try:
        rec = Recording(args.file)
        start = None if args.start_at is None else parse_time(args.start_at, rec.start, rec.end, what="--start-at")
        damaged = " · DAMAGED: seconds after the write-ahead log's damage are missing" if rec.damage else ""
        app = front_ends().replay_app(settings, rec, start_at=start, speed=args.speed,
                                      subtitle=f"replay of {args.file} · read-only{damaged}")
    except (RecordingError, ValueError) as e:
        print(f"surgewatch: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        code = int(app.run() or 0)
    finally:
        rec.close()
    if rec.damage:
        print(f"surgewatch: {rec.damage}", file=sys.stderr)
    return code
