"""dcgm-exporter's metric names: the one mapping between Prometheus series and GpuSample fields.

The fleet collector reads these names (from a node's /metrics or from a Prometheus server), and the
agent writes them, so a node running `surgewatch agent` reads back exactly like one running NVIDIA's
dcgm-exporter. Parsing keeps only the series we use and only the labels we use before
prometheus-client's parser sees the text: a dcgm-exporter page is mostly series and labels we ignore,
and the parser's cost is per line and per label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from collectors.reasons import decode_reasons
from collectors.samples import GpuSample

# metric name -> GpuSample field (a few need arithmetic, see gpu_from_values)
FIELD_OF: dict[str, str] = {
    "DCGM_FI_DEV_GPU_UTIL": "util_pct",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "mem_util_pct",
    "DCGM_FI_DEV_FB_USED": "mem_used_mib",
    "DCGM_FI_DEV_FB_FREE": "_fb_free",
    "DCGM_FI_DEV_FB_RESERVED": "_fb_reserved",
    "DCGM_FI_DEV_FB_TOTAL": "mem_total_mib",
    "DCGM_FI_DEV_GPU_TEMP": "temp_c",
    "DCGM_FI_DEV_SLOWDOWN_TEMP": "temp_slowdown_c",
    "DCGM_FI_DEV_SHUTDOWN_TEMP": "temp_shutdown_c",
    "DCGM_FI_DEV_POWER_USAGE": "power_w",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "power_limit_w",
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": "_enforced_limit",
    "DCGM_FI_DEV_SM_CLOCK": "sm_clock_mhz",
    "DCGM_FI_DEV_MAX_SM_CLOCK": "sm_clock_max_mhz",
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": "_reasons",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "_reasons",
    "DCGM_FI_DEV_FAN_SPEED": "fan_pct",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "ecc_uncorrected",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "_rows_unc",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "_rows_cor",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "pcie_replay",
    "DCGM_FI_DEV_XID_ERRORS": "xid",
}
USED_METRICS: tuple[str, ...] = tuple(FIELD_OF)
KEEP_LABELS = ("gpu", "UUID", "modelName")
_INT_FIELDS = {"ecc_uncorrected", "pcie_replay", "xid"}

# Longest names first so DCGM_FI_DEV_FB_USED never shadows a longer name in the alternation.
_ALT = "|".join(sorted(USED_METRICS, key=len, reverse=True))
_LINE_RE = re.compile(rf"^(?:{_ALT})[{{ ].*$", re.M)
# A label that is not kept, with its comma; a label value may hold escaped quotes.
_DROP_LABEL_RE = re.compile(
    r'(?:(?<=\{)|,)(?!(?:' + "|".join(KEEP_LABELS) + r')=")[A-Za-z_][A-Za-z0-9_]*="(?:[^"\\\n]|\\.)*"'
)
PROMQL_SELECTOR = '{__name__=~"' + "|".join(USED_METRICS) + '"}'
_PREFIX = "DCGM_FI_DEV_"
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


def _value(v: float) -> float | None:
    return None if math.isnan(v) or math.isinf(v) else float(v)


def gpu_from_values(node: str, index: int, labels: Mapping[str, str], values: Mapping[str, float]) -> GpuSample:
    """Build one GpuSample from {field: value} as FIELD_OF names them (NaN already dropped)."""
    f: dict[str, Any] = {k: v for k, v in values.items() if not k.startswith("_")}
    if "mem_total_mib" not in f and "mem_used_mib" in f and "_fb_free" in values:
        f["mem_total_mib"] = f["mem_used_mib"] + values["_fb_free"] + values.get("_fb_reserved", 0.0)
    if "power_limit_w" not in f and "_enforced_limit" in values:
        f["power_limit_w"] = values["_enforced_limit"]
    if "_rows_unc" in values or "_rows_cor" in values:
        f["remapped_rows"] = int(values.get("_rows_unc", 0) + values.get("_rows_cor", 0))
        if "_rows_unc" in values:
            f["remapped_rows_uncorrectable"] = int(values["_rows_unc"])
    for k in _INT_FIELDS & f.keys():
        f[k] = int(f[k])
    if f.get("xid") == 0:  # dcgm-exporter's XID gauge is 0 until an XID happens
        f["xid"] = None
    throttle = decode_reasons(values.get("_reasons"))
    return GpuSample(
        node=node, index=index, uuid=labels.get("UUID") or None, name=labels.get("modelName") or None,
        throttle=throttle, **f,
    )


def gpus_from_series(node: str, series: Iterable[tuple[str, Mapping[str, str], float]]) -> tuple[GpuSample, ...]:
    """(metric name, labels, value) triples -> GPUs sorted by index. Series without `gpu` are skipped."""
    by_gpu: dict[int, tuple[dict[str, str], dict[str, float]]] = {}
    for name, labels, value in series:
        fld = FIELD_OF.get(name)
        gpu = labels.get("gpu")
        if fld is None or gpu is None:
            continue
        try:
            index = int(gpu)
        except ValueError:
            continue
        entry = by_gpu.setdefault(index, ({}, {}))
        if not entry[0]:
            entry[0].update(labels)
        v = _value(value)
        if v is not None:
            entry[1][fld] = v
    return tuple(gpu_from_values(node, i, lab, vals) for i, (lab, vals) in sorted(by_gpu.items()))


def _labels(block: str) -> dict[str, str]:
    """A label block parsed by prometheus-client's parser, cached: a node's label sets never change."""
    got = _LABELS_CACHE.get(block)
    if got is None:
        (fam,) = text_string_to_metric_families(f"x{block} 0\n")
        got = {k: v for k, v in fam.samples[0].labels.items() if k in KEEP_LABELS}
        if len(_LABELS_CACHE) >= _LABELS_CACHE_MAX:
            _LABELS_CACHE.clear()
        _LABELS_CACHE[block] = got
    return got


def _fast_series(text: str) -> list[tuple[str, Mapping[str, str], float]] | None:
    """(name, labels, value) of the used series in plain `name{labels} value [ts]` lines; None if any is odd."""
    out: list[tuple[str, Mapping[str, str], float]] = []
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
                tail = line[e + 2:].split()
            else:
                name = line[:sp] if sp != -1 else line
                if name not in FIELD_OF:
                    continue
                labels, tail = {}, line[sp + 1:].split() if sp != -1 else []
            if not 1 <= len(tail) <= 2:
                return None
            out.append((name, labels, float(tail[0])))
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    return out or None


def parse_page(text: str, node: str) -> tuple[GpuSample, ...]:
    """A dcgm-exporter-style /metrics page -> GPUs. Raises PageError for text that is not Prometheus.

    Fast path: one pass over the lines picks the used series; label blocks go through
    prometheus-client's parser once each (cached), values through float() as the parser does. If any
    line of a used series is not in the plain form, or none is found, the filtered text goes through
    prometheus-client's parser whole (which also tells garbage from a GPU-less page).
    """
    series = _fast_series(text)
    if series is not None:
        return gpus_from_series(node, series)
    return parse_page_strict(text, node)


def parse_page_strict(text: str, node: str) -> tuple[GpuSample, ...]:
    """The slow, strict path: filter, then prometheus-client's parser on every kept line."""
    body = filter_page(text)
    try:
        if not body:
            # No GPU series: fine for a GPU-less agent, but it must still be Prometheus text.
            for _ in text_string_to_metric_families(text):
                pass
            return ()
        series = [
            (s.name, s.labels, s.value)
            for fam in text_string_to_metric_families(body)
            for s in fam.samples
        ]
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise PageError(f"not Prometheus text ({' '.join(str(e).split())[:80]})") from e
    return gpus_from_series(node, series)
