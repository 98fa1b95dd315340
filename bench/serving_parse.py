"""Benchmark: parsing a real vLLM /metrics page, ours against prometheus-client's full parse, same run.

The page is the shared capture (../shared/fixtures/vllm-datadog.prom, 21 KB, 260 series). Ours is
collectors.serving_parse.parse_server_page: the kind and every figure surgewatch reads. The peer is
prometheus-client's `text_string_to_metric_families` over the whole page (every family and sample
consumed), which is what reading the page "with prometheus-client" costs. CPU time (time.process_time),
median of --rounds rounds of --reps parses each, after one warm-up parse of each (our label cache warm,
as it is from a server's second scrape on; the first parse is reported too).

    .venv/bin/python bench/serving_parse.py [--reps 200] [--rounds 7]

Exit 1 when a measurement could not be made (the page missing or unreadable, a parse failing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from collectors import serving_parse  # noqa: E402
from collectors.serving_parse import parse_server_page  # noqa: E402

PAGE = ROOT.parent / "shared" / "fixtures" / "vllm-datadog.prom"
TARGET_X = 10.0


def full_parse(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


def per_parse_us(fn: object, text: str, reps: int) -> float:
    t = time.process_time()
    for _ in range(reps):
        fn(text)  # type: ignore[operator]
    return (time.process_time() - t) / reps * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    try:
        text = PAGE.read_text()
        serving_parse._LABELS_CACHE.clear()
        t = time.process_time()
        page = parse_server_page(text)
        first_us = (time.process_time() - t) * 1e6
        samples = full_parse(text)
        if page.kind != "vllm" or not page.models or samples < 100:
            print(f"could not measure: unexpected parse (kind {page.kind}, {samples} samples)", file=sys.stderr)
            return 1
        ours = [per_parse_us(parse_server_page, text, a.reps) for _ in range(a.rounds)]
        peer = [per_parse_us(full_parse, text, a.reps) for _ in range(a.rounds)]
    except Exception as e:  # a benchmark that could not measure says so and fails
        print(f"could not measure: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    o, p = statistics.median(ours), statistics.median(peer)
    if o <= 0:
        print("could not measure: our parse took no measurable CPU", file=sys.stderr)
        return 1
    print(f"page: {PAGE.name}, {len(text)} bytes, {samples} samples, kind {page.kind} {page.variant}")
    print(f"ours (parse_server_page):           {o:8.1f} us CPU per parse (median of {a.rounds} x {a.reps}); "
          f"first parse, label cache cold: {first_us:.0f} us")
    print(f"peer (prometheus-client full parse): {p:8.1f} us CPU per parse")
    ratio = p / o
    print(f"ratio: {ratio:.1f}x less CPU (target >= {TARGET_X:g}x: {'met' if ratio >= TARGET_X else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
