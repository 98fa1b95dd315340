"""dcgm-exporter's metric names: the one mapping between Prometheus series and GpuSample fields.

The fleet collector reads these names (from a node's /metrics or from a Prometheus server), and the
agent writes them, so a node running `surgewatch agent` reads back exactly like one running NVIDIA's
dcgm-exporter. Parsing keeps only the series we use and only the labels we use before
prometheus-client's parser sees the text: a dcgm-exporter page is mostly series and labels we ignore,
and the parser's cost is per line and per label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from collectors.metrics import READ
from collectors.samples import GpuSample
from collectors.series import ParsedNode, RawValue, Series, read_series

# metric name -> GpuSample field (a few need arithmetic, see collectors.series); the table is collectors.metrics
FIELD_OF: dict[str, str] = {name: spec.field for name, spec in READ.items() if spec.field is not None}
USED_METRICS: tuple[str, ...] = tuple(FIELD_OF)
KEEP_LABELS = ("gpu", "UUID", "modelName", "GPU_I_ID", "GPU_I_PROFILE")

# Longest names first so DCGM_FI_DEV_FB_USED never shadows a longer name in the alternation.
_ALT = "|".join(sorted(USED_METRICS, key=len, reverse=True))
_LINE_RE = re.compile(rf"^(?:{_ALT})[{{ ].*$", re.M)
# A label that is not kept, with its comma; a label value may hold escaped quotes.
_DROP_LABEL_RE = re.compile(
    r'(?:(?<=\{)|,)(?!(?:' + "|".join(KEEP_LABELS) + r')=")[A-Za-z_][A-Za-z0-9_]*="(?:[^"\\\n]|\\.)*"'
)
PROMQL_SELECTOR = '{__name__=~"' + "|".join(USED_METRICS) + '"}'
_PREFIX = "DCGM_FI_"
assert all(n.startswith(_PREFIX) for n in USED_METRICS)  # the fast path's first test relies on it
_LABELS_CACHE: dict[str, dict[str, str]] = {}
_LABELS_CACHE_MAX = 100_000


class PageError(ValueError):
    """A /metrics page we cannot read: the message is short enough for a status column."""


def filter_page(text: str) -> str:
    """Only the lines of series we use, with only the labels we use."""
    lines = _LINE_RE.findall(text)
    if not lines:
        return ""
    return _DROP_LABEL_RE.sub("", "\n".join(lines)).replace("{,", "{") + "\n"


def gpus_from_series(node: str, series: Iterable[Series]) -> tuple[GpuSample, ...]:
    """(metric name, labels, value) triples -> GPUs sorted by index (see collectors.series)."""
    return read_series(node, series).gpus


def value_of(rest: str) -> RawValue:
    """The value of a series line from what follows its name and labels: a float, or the text itself
    when it is not `VALUE [TIMESTAMP]` as Prometheus' text format has it (e.g. dcgm-exporter's
    `ERROR - FAILED TO CONVERT TO STRING`). prometheus-client refuses `_` in numbers; so does this."""
    tail = rest.split()
    if not 1 <= len(tail) <= 2 or "_" in rest:
        return rest
    try:
        v = float(tail[0])
        if len(tail) == 2:
            float(tail[1])
    except ValueError:
        return rest
    return v


def parse_label_block(block: str) -> dict[str, str]:
    """A `{name="value",...}` block through prometheus-client's parser (its escaping rules, in one place).
    Raises ValueError (or the parser's IndexError/TypeError) for a block that is not Prometheus text."""
    (fam,) = text_string_to_metric_families(f"x{block} 0\n")
    return dict(fam.samples[0].labels)


def _labels(block: str) -> dict[str, str]:
    """A label block parsed by prometheus-client's parser, cached: a node's label sets never change."""
    got = _LABELS_CACHE.get(block)
    if got is None:
        got = {k: v for k, v in parse_label_block(block).items() if k in KEEP_LABELS}
        if len(_LABELS_CACHE) >= _LABELS_CACHE_MAX:
            _LABELS_CACHE.clear()
        _LABELS_CACHE[block] = got
    return got


def _fast_series(text: str) -> list[Series] | None:
    """(name, labels, value) of the used series in plain `name{labels} value [ts]` lines; None if any is odd.

    A value that is not a number (see value_of) is kept as its text: it costs that field, not the page."""
    out: list[Series] = []
    try:
        for line in text.split("\n"):
            if not line.startswith(_PREFIX):
                continue
            b, sp = line.find("{"), line.find(" ")
            if b != -1 and (sp == -1 or b < sp):
                name = line[:b]
                if name not in FIELD_OF:
                    continue
                e = line.rfind("}")
                if e < b or line[e + 1: e + 2] != " ":
                    return None
                labels: Mapping[str, str] = _labels(line[b: e + 1])
                rest = line[e + 2:]
            else:
                name = line[:sp] if sp != -1 else line
                if name not in FIELD_OF:
                    continue
                labels, rest = {}, line[sp + 1:] if sp != -1 else ""
            if not rest.strip():
                return None
            out.append((name, labels, value_of(rest)))
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    return out or None


def parse_page(text: str, node: str) -> tuple[GpuSample, ...]:
    """A dcgm-exporter-style /metrics page -> GPUs. Raises PageError for text that is not Prometheus."""
    return parse_report(text, node).gpus


def parse_report(text: str, node: str) -> ParsedNode:
    """A /metrics page -> its GPUs and warnings. Raises PageError for text that is not Prometheus.

    Fast path: one pass over the lines picks the used series; label blocks go through
    prometheus-client's parser once each (cached), values through float() as the parser does. If any
    line of a used series is not in the plain form, or none is found, the filtered text goes through
    prometheus-client's parser line by line (which also tells garbage from a GPU-less page).
    """
    series = _fast_series(text)
    if series is not None:
        return read_series(node, series)
    return read_series(node, _strict_series(text))


def parse_page_strict(text: str, node: str) -> tuple[GpuSample, ...]:
    """The slow, strict path: filter, then prometheus-client's parser on every kept line."""
    return read_series(node, _strict_series(text)).gpus


def _not_prometheus(e: Exception) -> PageError:
    return PageError(f"not Prometheus text ({' '.join(str(e).split())[:80]})")


def _strict_series(text: str) -> list[Series]:
    body = filter_page(text)
    try:
        if not body:
            # No GPU series: fine for a GPU-less agent (or a page of DCGM fields surgewatch does not
            # read, however broken), but the rest must still be Prometheus text.
            rest = "\n".join(ln for ln in text.split("\n") if not ln.startswith(_PREFIX))
            for _ in text_string_to_metric_families(rest):
                pass
            return []
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise _not_prometheus(e) from e
    out: list[Series] = []
    for line in body.split("\n"):
        if not line:
            continue
        try:
            out.extend((s.name, s.labels, s.value) for fam in text_string_to_metric_families(line + "\n")
                       for s in fam.samples)
            continue
        except (ValueError, TypeError, IndexError, KeyError) as e:
            err = e
        # the parser refused the line: a value that is not a number costs its field; anything else the page
        b, e_ = line.find("{"), line.rfind("}")
        try:
            if b == -1 or e_ < b:
                raise err
            raw = value_of(line[e_ + 2:])
            if not isinstance(raw, str):
                raise err
            labels = text_string_to_metric_families(f"x{line[b: e_ + 1]} 0\n")
            out.append((line[:b], next(iter(labels)).samples[0].labels, raw))
        except (ValueError, TypeError, IndexError, KeyError, StopIteration) as e2:
            raise _not_prometheus(e2) from e2
    return out
