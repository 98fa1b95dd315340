"""`surgewatch record FILE` and the headless parts of `surgewatch replay FILE` (`--json`, `--at`, `--info`).

Exit codes: 0 done; 2 bad input (a file that is not a readable recording, a damaged one: nothing printed; a
bad --at/--from/--to/--every/--keep), with a message saying what is wrong, or a write-ahead log that did not
replay whole (the intact part printed, then the missing seconds named); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Iterable
from types import FrameType
from typing import Any

from surgewatch.recording.format import RecordingError
from surgewatch.settings import Settings

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def register(sub: argparse._SubParsersAction) -> None:
    """Add `record` to the `surgewatch` parser (`replay` is surgewatch/cli/replay.py's: it opens the console)."""
    r = sub.add_parser(
        "record",
        help="record every configured source and the quota changes into FILE, headless (a black box)",
        description="Run every configured collector (local GPUs and host, nodes or Prometheus, Redis traffic) "
        "and the quota change feed without a screen, and record what a console would render into FILE "
        "(SQLite). Replay it with `surgewatch replay FILE`.",
    )
    r.add_argument("file", metavar="FILE", help="the recording (created, or appended to)")
    r.add_argument("--keep", metavar="DURATION", help="drop data older than this, e.g. 24h (default: keep all)")
    r.add_argument("--json", action="store_true",
                   help="also print, once a second, the snapshot --json document of what was recorded")
    r.add_argument("--no-local", action="store_true", help="skip the local NVML and host collectors")
    r.set_defaults(func=record_command)


def _err(msg: str) -> None:
    print(f"surgewatch: {msg}", file=sys.stderr)


def parse_keep_s(text: str | None) -> float | None:
    if text is None:
        return None
    from surgewatch.recording.documents import parse_duration_s

    keep = parse_duration_s(text)
    if keep < 60:
        raise RecordingError(f"invalid --keep {text!r}: at least 1m")
    return float(keep)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally blocks: the last batch is written


def record_command(args: argparse.Namespace, settings: Settings) -> int:
    from surgewatch.recording.daemon import record
    from surgewatch.recording.writer import Recorder

    try:
        keep_s = parse_keep_s(args.keep)
        recorder = Recorder(args.file, keep_s=keep_s)
    except RecordingError as e:
        _err(str(e))
        return EXIT_BAD_INPUT

    def emit(doc: dict[str, object]) -> None:
        print(json.dumps(doc), flush=True)

    previous = signal.signal(signal.SIGTERM, _sigterm)
    print(f"surgewatch: recording into {args.file} (ctrl+c to stop)", file=sys.stderr, flush=True)
    try:
        asyncio.run(record(settings, recorder, local=not args.no_local, on_second=emit if args.json else None))
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        recorder.close()
    return EXIT_OK


def _damaged(damage: str | None) -> int:
    """What was printed is the intact part, exact; a log that did not replay whole is named, and exit 2 tells
    a script that the recording is not whole."""
    if damage is None:
        return EXIT_OK
    sys.stdout.flush()
    _err(damage)
    return EXIT_BAD_INPUT


def replay_headless(args: argparse.Namespace) -> int:
    """`replay FILE --info`, `--json [--from T] [--to T] [--every S]`, `--at T`."""
    from surgewatch.recording.documents import document, documents, info, info_text, parse_every_s, parse_time
    from surgewatch.recording.reader import Recording

    try:
        rec = Recording(args.file)
    except RecordingError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    try:
        if args.info:
            d = info(rec)
            sys.stdout.write(json.dumps(d) + "\n" if args.json else info_text(d))
            return _damaged(rec.damage)
        if args.at is not None:
            if args.start is not None or args.stop is not None or args.every is not None:
                raise RecordingError("--at prints one document: it takes no --from, --to or --every")
            at = parse_time(args.at, rec.start, rec.end, what="--at")
            docs: Iterable[dict[str, Any]] = [document(at, rec.state_at(at).readings)]
        else:
            start = rec.start if args.start is None else parse_time(args.start, rec.start, rec.end, what="--from")
            end = rec.end if args.stop is None else parse_time(args.stop, rec.start, rec.end, what="--to")
            if end < start:
                raise RecordingError(f"--to {args.stop!r} is before --from {args.start!r}")
            every = 1.0 if args.every is None else parse_every_s(args.every)
            docs = documents(rec, start, end, every)
        for doc in docs:
            sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
        return _damaged(rec.damage)
    except RecordingError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    finally:
        rec.close()
