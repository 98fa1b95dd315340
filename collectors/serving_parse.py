"""An inference server's /metrics page -> its kind and, per model, the raw figures surgewatch reads.

The kind is recognised from the families a page carries, never configured:
- vLLM: `vllm:` names. V0 reports KV-cache use as `vllm:gpu_cache_usage_perc`, V1 as
  `vllm:kv_cache_usage_perc`; a page with both (an upgrade, or a capture joined from two eras) is
  `variant` "v0+v1": the V1 name wins and each figure is read from its own family;
- NVIDIA NIM: vLLM's names without the prefix, plus `request_failure_total`;
- SGLang: `sglang:` names; Hugging Face TGI: `tgi_` names; NVIDIA Triton: `nv_inference_` names.
A page with none of them is `kind=None` with NOT_A_SERVER, never zeros; text that is not Prometheus
at all raises collectors.dcgm.PageError.

Only the lines of the families in FAMILIES are looked at (one `str.startswith` on a tuple per line),
label blocks go through prometheus-client's parser once each (cached: a server's label sets repeat
scrape after scrape) and values through collectors.dcgm.value_of, as the GPU pages' fast path does.
Figures stay cumulative here: rates and quantiles need two scrapes (collectors.serving_window).

A value no server can mean (NaN, +-Inf, negative, a KV-cache fraction above 1) makes no figure: its family's
are None with Missing.NOT_FINITE or OUT_OF_RANGE (ModelPage.bad), the page's warnings naming family and value.
A histogram without its +Inf bucket gives no quantile either (NOT_EXPORTED), and a warning says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

from collectors.dcgm import PageError, parse_label_block, value_of
from collectors.serving_samples import Missing, bad_value
from quotas.safe import safe_name

ServerKind = Literal["vllm", "nim", "sglang", "tgi", "triton"]
Role = Literal["waiting", "running", "kv", "kv_v0", "done", "failed", "preempt", "queue_us", "request_us",
               "ttft", "e2e", "queue"]
HIST_ROLES: tuple[Role, ...] = ("ttft", "e2e", "queue")
NOT_A_SERVER = "not an inference server: no known families"
NO_MODEL = "(no model label)"  # TGI's page names no model: its replicas are grouped under this
FAILED_REASONS = frozenset({"abort", "error"})  # vLLM's finished_reason values that are failures
# kinds whose pages count failed requests (a counter that may appear only at the first failure: TGI's)
FAILURE_KINDS = frozenset({"vllm", "nim", "tgi", "triton"})
# no count, duration or gauge a server keeps is above this (uint64's range): sums of such values stay finite
MAX_VALUE = 2.0**64
_REQUESTS = ("requests_per_s", "failures_per_s")  # and Triton's means, per request (model_page)
# the figures (ServingFigures') each role makes: None where the role holds a value no server can mean
ROLE_FIELDS: dict[Role, tuple[str, ...]] = {
    "waiting": ("waiting",), "running": ("running",), "kv": ("kv_cache_pct",), "kv_v0": ("kv_cache_pct",),
    "done": _REQUESTS, "failed": _REQUESTS, "preempt": ("preemptions_per_s",),
    "queue_us": ("queue_mean_s",), "request_us": ("request_mean_s",),
    **{r: (f"{r}_p50_s", f"{r}_p99_s") for r in HIST_ROLES},
}
NO_PROBLEM: Mapping[str, Missing] = MappingProxyType({})
_NO_BAD: dict[Role, float] = {}  # bad_values' answer on a sane page: never written to


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family surgewatch reads: whose it is, what it means, where its labels put the model."""

    kind: ServerKind
    role: Role
    model_label: str | None  # None: the server's page names no model (TGI)
    reason_label: str | None = None  # the label that splits a request counter by outcome


def _vllm_like(kind: ServerKind, prefix: str) -> dict[str, Family]:
    roles: dict[str, tuple[Role, str | None]] = {
        "num_requests_waiting": ("waiting", None), "num_requests_running": ("running", None),
        "kv_cache_usage_perc": ("kv", None), "gpu_cache_usage_perc": ("kv_v0", None),
        "request_success_total": ("done", "finished_reason"), "num_preemptions_total": ("preempt", None),
        "time_to_first_token_seconds": ("ttft", None), "e2e_request_latency_seconds": ("e2e", None),
        "request_queue_time_seconds": ("queue", None),
    }
    if kind == "nim":
        roles["request_failure_total"] = ("failed", None)
    return {prefix + n: Family(kind, r, "model_name", why) for n, (r, why) in roles.items()}


FAMILIES: dict[str, Family] = {
    **_vllm_like("vllm", "vllm:"),
    **_vllm_like("nim", ""),
    "sglang:num_queue_reqs": Family("sglang", "waiting", "model_name"),
    "sglang:num_running_reqs": Family("sglang", "running", "model_name"),
    "sglang:token_usage": Family("sglang", "kv", "model_name"),
    "sglang:num_requests_total": Family("sglang", "done", "model_name"),
    "sglang:time_to_first_token_seconds": Family("sglang", "ttft", "model_name"),
    "sglang:e2e_request_latency_seconds": Family("sglang", "e2e", "model_name"),
    "sglang:queue_time_seconds": Family("sglang", "queue", "model_name"),
    "tgi_queue_size": Family("tgi", "waiting", None),
    "tgi_batch_current_size": Family("tgi", "running", None),
    "tgi_request_success": Family("tgi", "done", None),
    "tgi_request_failure": Family("tgi", "failed", None, "err"),
    "tgi_request_duration": Family("tgi", "e2e", None),
    "tgi_request_queue_duration": Family("tgi", "queue", None),
    "nv_inference_pending_request_count": Family("triton", "waiting", "model"),
    "nv_inference_request_success": Family("triton", "done", "model"),
    "nv_inference_request_failure": Family("triton", "failed", "model", "reason"),
    "nv_inference_queue_duration_us": Family("triton", "queue_us", "model"),
    "nv_inference_request_duration_us": Family("triton", "request_us", "model"),
}
NAME_OF: dict[tuple[ServerKind, Role], str] = {(f.kind, f.role): n for n, f in FAMILIES.items()}  # for warnings
# series name -> (family name, histogram part: "" for a plain series, "bucket", "count" or "sum")
_SERIES: dict[str, tuple[str, str]] = {}
for _name, _fam in FAMILIES.items():
    if _fam.role in HIST_ROLES:
        for _part in ("bucket", "count", "sum"):
            _SERIES[f"{_name}_{_part}"] = (_name, _part)
    else:
        _SERIES[_name] = (_name, "")
# the first test of a line (C-speed): the names' first two words, which few unread series share
_STARTS = tuple(sorted({"_".join(n.split("_")[:2]) for n in _SERIES}))

_Trie = dict[str, "_Trie"]  # a character -> what may follow it ("" -> {}: a word ends there)


def _trie_pattern(words: tuple[str, ...]) -> str:
    """A regex matching any of `words`, as a trie (shared beginnings once): the engine tries each branch's
    first character once instead of every word in turn (half the time of a flat alternation here)."""
    trie: _Trie = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}  # a word ends here

    def emit(node: _Trie) -> str:
        alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body
    return emit(trie)


# the lines that start so: the regex engine jumps from newline to newline (a literal first character) and
# looks only there, so the page's other lines (most of it) never become Python strings
_LINES = re.compile("\n(" + _trie_pattern(_STARTS) + "[^\n]*)")
_LABELS_CACHE: dict[str, dict[str, str]] = {}
_LABELS_CACHE_MAX = 50_000


@dataclass(frozen=True, slots=True)
class Histogram:
    """A cumulative histogram as a page shows it: ascending upper bounds (the last +Inf) and counts."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    count: float
    sum: float


@dataclass(frozen=True, slots=True)
class ModelPage:
    """One model's cumulative figures on one page; None where the server does not export the family.
    Series of one model that differ in other labels (vLLM's `engine`, SGLang's `tp_rank`) are added up,
    but KV-cache use, where the fullest engine counts."""

    model: str
    waiting: float | None = None
    running: float | None = None
    kv_frac: float | None = None  # 0..1
    done: Mapping[str, float] | None = None  # finished requests by outcome ("" when unlabelled)
    failed: Mapping[str, float] | None = None  # failed requests by reason
    preemptions: float | None = None
    ttft: Histogram | None = None
    e2e: Histogram | None = None
    queue: Histogram | None = None
    queue_us: float | None = None  # Triton's cumulative microseconds
    request_us: float | None = None
    counts_failures: bool = False  # the kind counts failures: none on the page is 0, not "not exported"
    # figure -> why a value on the page cannot make it (see the module's docstring); shared while empty
    bad: Mapping[str, Missing] = field(default_factory=lambda: NO_PROBLEM)


@dataclass(frozen=True, slots=True)
class ServerPage:
    """What one page says: the server's kind (None: NOT_A_SERVER), its models, what had to be ignored."""

    kind: ServerKind | None
    models: tuple[ModelPage, ...] = ()
    variant: str = ""  # vLLM: "v0", "v1" or "v0+v1" (see the module's docstring)
    warnings: tuple[str, ...] = ()

    @property
    def problem(self) -> str | None:
        return NOT_A_SERVER if self.kind is None else None


@dataclass
class Accumulator:
    """One model's series as they are read (a page's lines, or Prometheus' answers), before ModelPage."""

    values: dict[Role, float] = field(default_factory=dict)
    done: dict[str, float] | None = None
    failed: dict[str, float] | None = None
    buckets: dict[Role, dict[float, float]] = field(default_factory=dict)
    hist_count: dict[Role, float] = field(default_factory=dict)
    hist_sum: dict[Role, float] = field(default_factory=dict)
    bad: dict[Role, float] | None = None  # role -> the first value no server can mean (add_value)


def _labels(block: str) -> dict[str, str]:
    got = _LABELS_CACHE.get(block)
    if got is None:
        got = parse_label_block(block)
        if len(_LABELS_CACHE) >= _LABELS_CACHE_MAX:
            _LABELS_CACHE.clear()
        _LABELS_CACHE[block] = got
    return got


def series_slot(fam: Family, part: str, labels: Mapping[str, str]) -> float | str:
    """Where a series adds up within its family: its bucket's upper bound (`le`), its reason, or "".
    Raises KeyError/ValueError for a bucket without a readable `le` (NaN, -Inf and beyond MAX_VALUE too:
    no quantile may come of them)."""
    if part == "bucket":
        le = float(labels["le"])
        if not (-MAX_VALUE <= le <= MAX_VALUE or le == math.inf):
            raise ValueError(f"le {le:g} is not a bucket bound")
        return le
    if fam.role in ("done", "failed") and fam.reason_label:
        return labels.get(fam.reason_label, "")
    return ""


def add_series(acc: Accumulator, fam: Family, part: str, labels: Mapping[str, str], v: float) -> None:
    """One series into its model's accumulator: gauges and counters added up (KV use: the highest),
    counters by their reason label, buckets by their `le`. `part`: "", "bucket", "count" or "sum".
    A bucket without a readable `le` marks its histogram bad (its quantiles None), as an impossible value does."""
    try:
        slot = series_slot(fam, part, labels)
    except (KeyError, ValueError):
        slot, v = "", math.nan
    if 0.0 <= v <= MAX_VALUE:
        add_value(acc, fam, part, slot, v)
    else:
        mark_bad(acc, fam, part, v)


def mark_bad(acc: Accumulator, fam: Family, part: str, v: float) -> None:
    """A value no count or gauge can have (NaN, +-Inf, negative, above MAX_VALUE), not added: its role is
    marked bad and the family's figures are None (model_page). A histogram's `_sum` is read by no figure."""
    if part != "sum":
        if acc.bad is None:
            acc.bad = {}
        acc.bad.setdefault(fam.role, v)


def add_value(acc: Accumulator, fam: Family, part: str, slot: float | str, v: float) -> None:
    """add_series with the series' slot (series_slot) already known, and its value in 0..MAX_VALUE (else mark_bad)."""
    role = fam.role
    if part == "bucket":
        le = slot if isinstance(slot, float) else float(slot)
        b = acc.buckets.setdefault(role, {})
        b[le] = b.get(le, 0.0) + v
    elif part == "count":
        acc.hist_count[role] = acc.hist_count.get(role, 0.0) + v
    elif part == "sum":
        acc.hist_sum[role] = acc.hist_sum.get(role, 0.0) + v
    elif role in ("done", "failed"):
        by = acc.done if role == "done" else acc.failed
        if by is None:
            by = {}
            if role == "done":
                acc.done = by
            else:
                acc.failed = by
        by[str(slot)] = by.get(str(slot), 0.0) + v
    elif role in ("kv", "kv_v0"):
        acc.values[role] = max(acc.values.get(role, v), v)
    else:
        acc.values[role] = acc.values.get(role, 0.0) + v


def _histogram(acc: Accumulator, role: Role, bad: Mapping[Role, float]) -> Histogram | None:
    b = acc.buckets.get(role)
    if not b or math.inf not in b or role in bad:
        return None
    bounds = tuple(sorted(b))
    return Histogram(bounds, tuple(b[x] for x in bounds), acc.hist_count.get(role, b[math.inf]),
                     acc.hist_sum.get(role, math.nan))


def bad_values(acc: Accumulator) -> dict[Role, float]:
    """The roles whose values no server can mean -> the first such value: NaN, +-Inf or negative (add_value),
    or a KV-cache fraction above 1 (a server exporting a percent: 85 would read as 8,500 %). Empty as a rule."""
    v = acc.values
    if not acc.bad and v.get("kv", 0.0) <= 1.0 and v.get("kv_v0", 0.0) <= 1.0:
        return _NO_BAD  # the rule: nothing to copy
    bad = {**{r: v[r] for r in ("kv", "kv_v0") if v.get(r, 0.0) > 1.0}, **(acc.bad or {})}  # 1.0: a full cache
    if "kv_v0" in bad and ("kv" in acc.values or "kv" in bad):
        del bad["kv_v0"]  # a V0+V1 page: KV use is read from the V1 family (see the module's docstring)
    return bad


def model_page(kind: ServerKind, name: str, acc: Accumulator) -> ModelPage:
    """The ModelPage of an accumulator (a histogram without its +Inf bucket is left out; so is every
    role of bad_values, its figures named in `bad`)."""
    bad = bad_values(acc)
    v = acc.values
    fields: Mapping[str, Missing] = NO_PROBLEM
    if bad:
        v = {r: x for r, x in v.items() if r not in bad}
        named: dict[str, Missing] = {}
        for r, x in bad.items():  # requests spoil Triton's means too (per request), where the page has them
            means = [f for us, f in (("queue_us", "queue_mean_s"), ("request_us", "request_mean_s")) if us in v]
            for f in (*ROLE_FIELDS[r], *(means if r in ("done", "failed") else ())):
                named.setdefault(f, bad_value(x))
        fields = named
    return ModelPage(
        model=safe_name(name), waiting=v.get("waiting"), running=v.get("running"),
        kv_frac=v["kv"] if "kv" in v else (None if "kv" in bad else v.get("kv_v0")),
        done=None if "done" in bad else acc.done, failed=None if "failed" in bad else acc.failed,
        preemptions=v.get("preempt"), ttft=_histogram(acc, "ttft", bad), e2e=_histogram(acc, "e2e", bad),
        queue=_histogram(acc, "queue", bad), queue_us=v.get("queue_us"), request_us=v.get("request_us"),
        counts_failures=kind in FAILURE_KINDS, bad=fields,
    )


def _problems(kind: ServerKind, accs: Mapping[str, Accumulator]) -> dict[str, str]:
    """Family name -> a warning, for the values no server can mean and the histograms without +Inf."""
    out: dict[str, str] = {}
    for acc in accs.values():
        for role, x in bad_values(acc).items():
            what = ("not a finite number" if bad_value(x) == Missing.NOT_FINITE else "out of range (never negative)"
                    if x < 0 else "out of range (a fraction of the cache, 0 to 1)" if role in ("kv", "kv_v0")
                    else f"out of range (above {MAX_VALUE:g})")
            out.setdefault(NAME_OF[kind, role], f"{NAME_OF[kind, role]}: {x:g} is {what}: ignored")
        for role, b in acc.buckets.items():
            if math.inf not in b:
                out.setdefault(NAME_OF[kind, role], f"{NAME_OF[kind, role]}: histogram without a +Inf bucket ignored")
    return out


_Head = tuple[str, Family, str, "float | str", str]  # family name, family, histogram part, slot, model
_HEADS: dict[str, _Head | None] = {}  # a line up to its value -> what it is (None: a series not read)
_HEADS_MAX = 100_000


def _read_line(line: str) -> tuple[_Head | None, float | str, bool]:
    """(what the series is or None, its value or the text that is not one, whether the line is plain)."""
    b, sp = line.find("{"), line.find(" ")
    has_labels = b != -1 and (sp == -1 or b < sp)
    name = line[:b] if has_labels else (line[:sp] if sp != -1 else line)
    hit = _SERIES.get(name)
    if hit is None:
        return None, 0.0, True
    fam_name, part = hit
    fam = FAMILIES[fam_name]
    if has_labels:
        e = line.rfind("}")
        if e < b:
            raise ValueError(f"{fam_name}: unclosed label block")
        labels: Mapping[str, str] = _labels(line[b: e + 1])
        rest = line[e + 1:].strip()
    else:
        labels, rest = {}, line[sp:].strip() if sp != -1 else ""
    model = (labels.get(fam.model_label, "") if fam.model_label else "") or NO_MODEL
    raw = value_of(rest) if rest else "(no value)"
    return (fam_name, fam, part, series_slot(fam, part, labels), model), raw, " " not in rest


def parse_server_page(text: str) -> ServerPage:
    """A /metrics page -> ServerPage (see the module's docstring). Raises PageError for non-Prometheus text.

    A line's name and labels are read once (then found by the text before its value): a server's series
    are the same scrape after scrape, only their values change."""
    accs: dict[ServerKind, dict[str, Accumulator]] = {}
    seen: dict[ServerKind, set[str]] = {}
    warnings: dict[str, str] = {}
    heads = _HEADS
    for line in _LINES.findall("\n" + text):
        head, _, val = line.rpartition(" ")
        info = heads.get(head, line)
        if info is None:
            continue
        raw: float | str
        try:
            if isinstance(info, str) or "_" in val:
                info, raw, plain = _read_line(line)
                if plain and head:
                    if len(heads) >= _HEADS_MAX:
                        heads.clear()
                    heads[head] = info
                if info is None:
                    continue
            else:
                raw = float(val)
        except (ValueError, KeyError, IndexError, TypeError) as err:
            name = line.split("{", 1)[0].split(" ", 1)[0]
            warnings.setdefault(name, f"{name}: unreadable series ignored ({' '.join(str(err).split())[:60]})")
            continue
        fam_name, fam, part, slot, model = info
        if isinstance(raw, str):
            warnings.setdefault(fam_name, f"{fam_name}: unreadable series ignored "
                                          f"(value {' '.join(raw.split())[:30]!r})")
            continue
        by_model = accs.get(fam.kind)
        if by_model is None:
            by_model = accs[fam.kind] = {}
            seen[fam.kind] = set()
        acc = by_model.get(model)
        if acc is None:
            acc = by_model[model] = Accumulator()
        if 0.0 <= raw <= 1.8446744073709552e19:  # MAX_VALUE as a literal (a constant load, on every line)
            add_value(acc, fam, part, slot, raw)
        else:
            mark_bad(acc, fam, part, raw)
        seen[fam.kind].add(fam_name)
    if not accs:
        _check_prometheus(text)
        return ServerPage(kind=None, warnings=tuple(warnings.values()))
    # a page of two kinds (NIM's unprefixed names beside vLLM's) is read as the kind with more families
    kind = max(accs, key=lambda k: (len(seen.get(k, ())), k == "vllm"))
    if len(accs) > 1:
        others = ", ".join(sorted(k for k in accs if k != kind))
        warnings["kind"] = f"families of {others} beside {kind}: read as {kind}"
    variant = ""
    if kind == "vllm":
        fams = seen[kind]
        v0, v1 = "vllm:gpu_cache_usage_perc" in fams, "vllm:kv_cache_usage_perc" in fams
        variant = "v0+v1" if v0 and v1 else ("v0" if v0 else "v1")
        if v0 and v1:
            warnings["variant"] = ("page mixes vLLM V0 and V1 families: KV cache from vllm:kv_cache_usage_perc, "
                                   "every figure from its own family")
    for fam_name, problem in _problems(kind, accs[kind]).items():
        warnings.setdefault(fam_name, problem)
    models = tuple(model_page(kind, m, a) for m, a in sorted(accs[kind].items()))
    return ServerPage(kind, models, variant, tuple(warnings.values()))


def _check_prometheus(text: str) -> None:
    """No known family: tell a page of other metrics from text that is not Prometheus (the slow parser,
    on this rare path only)."""
    try:
        for _ in text_string_to_metric_families(text):
            pass
    except (ValueError, TypeError, IndexError, KeyError) as e:
        shown = "".join(c for c in " ".join(str(e).split()) if c.isprintable())[:80]  # never raw to a terminal
        raise PageError(f"not Prometheus text ({shown})") from e
