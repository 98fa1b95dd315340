"""Series (name, labels, value) of one node -> its GPUs, with MIG instances and the page's warnings.

The rules, in the order they apply to each series:
- a series with no `gpu` label is skipped (a node-level series); one whose `gpu` is not an index is
  skipped with a warning; a GPU is its UUID (else its `gpu` index), so every series of one physical
  GPU lands on one GpuSample, MIG or not;
- a value that did not parse costs that field of that GPU (n/a) and a warning, never the node;
- NaN is n/a and a warning; DCGM's blank sentinels are n/a; a value outside its unit's plausible range is n/a and a
  warning (`collectors.metrics.RANGE_OF_UNIT`);
- MIG (`GPU_I_ID` labels): memory and activity fields are the instance's own; device fields
  (temperature, power, clocks, errors) are repeated by every instance, sampled at slightly different
  times, so the first is taken, never a sum;
- a second series for the same GPU, instance and field with another value is refused (the first is
  kept) with a warning; the same value twice is the same reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from collectors.metrics import PCT_OF_RATIO, READ, MetricSpec, in_range, is_blank
from collectors.reasons import decode_reasons
from collectors.samples import (
    GpuSample,
    MigInstance,
    NodeSample,
    NodeWarning,
    WarningKind,
    mig_memory_mib,
    slice_weighted,
)
from quotas.safe import safe, safe_opt

RawValue = float | str  # a str is a value that did not parse, kept for the warning
Series = tuple[str, Mapping[str, str], RawValue]
_INT_FIELDS = {"ecc_uncorrected", "pcie_replay", "xid"}


@dataclass(frozen=True, slots=True)
class ParsedNode:
    """What one node's series say: its GPUs (by index) and what had to be ignored."""

    gpus: tuple[GpuSample, ...] = ()
    warnings: tuple[NodeWarning, ...] = ()


@dataclass
class _Values:
    values: dict[str, float] = field(default_factory=dict)
    profile: str = ""


@dataclass
class _Gpu:
    index: int
    labels: Mapping[str, str]
    device: _Values = field(default_factory=_Values)
    instances: dict[int, _Values] = field(default_factory=dict)
    seen: dict[tuple[str, int | None], float] = field(default_factory=dict)  # (field, GI) -> first value


class _Reader:
    def __init__(self) -> None:
        self.gpus: dict[str, _Gpu] = {}
        self.index_owner: dict[int, str] = {}
        self.warnings: dict[tuple[int | None, str, WarningKind], NodeWarning] = {}

    def warn(self, gpu: int | None, fld: str, kind: WarningKind, text: str) -> None:
        # one warning per GPU, field and kind: a page repeats its faults on every scrape
        self.warnings.setdefault((gpu, fld, kind), NodeWarning(gpu, fld, kind, text))

    def add(self, name: str, labels: Mapping[str, str], raw: RawValue) -> None:
        spec = READ.get(name)
        gpu_label = labels.get("gpu")
        if spec is None or gpu_label is None:
            return
        try:
            index = int(gpu_label)
        except ValueError:  # the series cannot be placed on a GPU: named, never dropped in silence
            self.warn(None, "gpu", "unparsable",
                      f"series with gpu=\"{safe(gpu_label, 40)}\" (not a GPU index) ignored: {spec.label or name}")
            return
        key = labels.get("UUID") or f"#{index}"
        g = self.gpus.get(key)
        if g is None:
            owner = self.index_owner.get(index)
            if owner is not None:  # another UUID already holds this index: refuse, never last-win
                self.warn(index, "uuid", "duplicate",
                          f"GPU {index}: a second GPU ({safe(key, 80)}) under its index, ignored")
                return
            g = self.gpus[key] = _Gpu(index, labels)
            self.index_owner[index] = key
        gi = _gi(labels)
        if gi is not None and gi not in g.instances:
            g.instances[gi] = _Values(profile=safe(labels.get("GPU_I_PROFILE", ""), 40))
        v = self._value(g.index, spec, raw)
        if v is None:
            return
        fld = spec.field
        assert fld is not None
        slot = gi if spec.per_instance else None
        seen_key = (fld, gi)
        first = g.seen.get(seen_key)
        if first is not None:
            if first != v:
                self.warn(g.index, fld, "duplicate",
                          f"GPU {g.index}: two {spec.label} series ({first:g} and {v:g} {spec.unit}), kept the first")
            return
        g.seen[seen_key] = v
        target = g.device if slot is None else g.instances[slot]
        target.values.setdefault(fld, v)  # device fields: the first instance's sample

    def _value(self, index: int, spec: MetricSpec, raw: RawValue) -> float | None:
        fld = spec.field or spec.name
        if isinstance(raw, str):
            shown = safe(" ".join(raw.split())[:40], 160)
            self.warn(index, fld, "unparsable", f"GPU {index}: {spec.label} unreadable ('{shown}'), n/a")
            return None
        if math.isnan(raw):  # a NaN is no reading: n/a, and said (a zero would be a claim)
            self.warn(index, fld, "unparsable", f"GPU {index}: {spec.label} is NaN (no reading), n/a")
            return None
        if is_blank(raw):
            return None
        if not in_range(spec, raw):
            self.warn(index, fld, "range", f"GPU {index}: {spec.label} {raw:g} {spec.unit} out of range, ignored")
            return None
        return float(raw)


def _gi(labels: Mapping[str, str]) -> int | None:
    raw = labels.get("GPU_I_ID")
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _mem(values: Mapping[str, float]) -> tuple[float | None, float | None]:
    used = values.get("mem_used_mib")
    total = values.get("mem_total_mib")
    if total is None and used is not None and "_fb_free" in values:
        total = used + values["_fb_free"] + values.get("_fb_reserved", 0.0)
    return used, total


def _pct(values: Mapping[str, float], ratio_field: str) -> float | None:
    v = values.get(ratio_field)
    return None if v is None else v * 100.0


def _instance_util(values: Mapping[str, float]) -> float | None:
    return values["util_pct"] if "util_pct" in values else _pct(values, "_gr_active")


def _build(node: str, g: _Gpu) -> GpuSample:
    dev = g.device.values
    f: dict[str, Any] = {k: v for k, v in dev.items() if not k.startswith("_")}
    used, total = _mem(dev)
    f["mem_used_mib"], f["mem_total_mib"] = used, total
    if "util_pct" not in dev and "_gr_active" in dev:
        f["util_pct"] = dev["_gr_active"] * 100.0
    for ratio, pct in PCT_OF_RATIO.items():
        if pct != "util_pct":
            f[pct] = _pct(dev, ratio)
    mig: tuple[MigInstance, ...] | None = None
    if g.instances:
        mig = tuple(
            MigInstance(gi, inst.profile, *_mem(inst.values), util_pct=_instance_util(inst.values))
            for gi, inst in sorted(g.instances.items())
        )
        # the GPU's memory is the sum over its instances (where every instance reports it)
        used, total = mig_memory_mib(mig)
        if used is not None:
            f["mem_used_mib"] = used
        if total is not None:
            f["mem_total_mib"] = total
        weights = [m.slices for m in mig]
        if f.get("util_pct") is None:
            f["util_pct"] = slice_weighted([(m.util_pct, w) for m, w in zip(mig, weights, strict=True)])
        for ratio, pct in PCT_OF_RATIO.items():
            if pct != "util_pct" and f.get(pct) is None:
                vals = [_pct(inst.values, ratio) for _, inst in sorted(g.instances.items())]
                f[pct] = slice_weighted(list(zip(vals, weights, strict=True)))
    if "power_limit_w" not in f and "_enforced_limit" in dev:
        f["power_limit_w"] = dev["_enforced_limit"]
    if "_rows_unc" in dev or "_rows_cor" in dev:
        f["remapped_rows"] = int(dev.get("_rows_unc", 0) + dev.get("_rows_cor", 0))
        if "_rows_unc" in dev:
            f["remapped_rows_uncorrectable"] = int(dev["_rows_unc"])
    for k in _INT_FIELDS & f.keys():
        f[k] = int(f[k])
    if f.get("xid") == 0:  # dcgm-exporter's XID gauge is 0 until an XID happens
        f["xid"] = None
    labels = g.labels
    # exporter labels are outside text: made visible here, where they become a sample every view shows
    return GpuSample(
        node=node, index=g.index, uuid=safe_opt(labels.get("UUID") or None),
        name=safe_opt(labels.get("modelName") or None),
        throttle=decode_reasons(dev.get("_reasons")), mig=mig, **f,
    )


def read_series(node: str, series: Iterable[Series]) -> ParsedNode:
    """(metric name, labels, value) triples -> GPUs sorted by index, and the warnings."""
    r = _Reader()
    for name, labels, raw in series:
        r.add(name, labels, raw)
    gpus = sorted(r.gpus.values(), key=lambda g: g.index)
    return ParsedNode(tuple(_build(node, g) for g in gpus), tuple(r.warnings.values()))


def _host(url: str) -> str:
    if "://" not in url:
        return url  # a Prometheus instance label is already host:port
    return urlsplit(url).netloc.rsplit("@", 1)[-1] or url


def _live(n: NodeSample, g: GpuSample) -> bool:
    return n.status == "up" and g.status != "stale"


def dedupe_uuids(nodes: tuple[NodeSample, ...]) -> tuple[NodeSample, ...]:
    """A GPU UUID on two nodes is counted once. Where one copy is live and another is a down node's
    last-known copy, the GPU moved (a pod with a new IP, an exporter re-pointed): it is live where it is
    live, and the old address drops it and says where it went (its error reads `moved to ADDR` once all its
    GPUs did). Two live copies (one exporter scraped under two names) are counted on the first node in order,
    and both nodes carry a warning naming the other. Unchanged nodes are returned as they are."""
    copies: dict[str, list[tuple[int, GpuSample]]] = {}  # uuid -> [(node position, GPU)], one per node
    for pos, n in enumerate(nodes):
        for g in n.gpus:
            if g.uuid is not None:
                held = copies.setdefault(g.uuid, [])
                if not held or held[-1][0] != pos:
                    held.append((pos, g))
    extra: dict[int, list[NodeWarning]] = {}
    drop: dict[int, set[str]] = {}
    moved_to: dict[int, set[str]] = {}  # old node position -> the addresses its GPUs went to
    for uuid, held in copies.items():
        if len(held) < 2:
            continue
        live = [(p, g) for p, g in held if _live(nodes[p], g)]
        at, owner = (live or held)[0]
        there = _host(nodes[at].url)
        for pos, g in held:
            if pos == at:
                continue
            drop.setdefault(pos, set()).add(uuid)
            if live and not _live(nodes[pos], g):
                extra.setdefault(pos, []).append(_moved_warning(g, uuid, there))
                moved_to.setdefault(pos, set()).add(there)
                continue
            here = _host(nodes[pos].url)
            extra.setdefault(pos, []).append(NodeWarning(
                g.index, "uuid", "uuid", f"GPU {g.index} ({uuid}) is also on {there}: counted once, there"))
            extra.setdefault(at, []).append(NodeWarning(
                owner.index, "uuid", "uuid", f"GPU {owner.index} ({uuid}) is also reported by {here}"))
    if not extra:
        return nodes
    out = []
    for pos, n in enumerate(nodes):
        if pos not in extra:
            out.append(n)
            continue
        out.append(_without(n, drop.get(pos, set()), extra[pos], moved_to.get(pos, set())))
    return tuple(out)


def _moved_warning(g: GpuSample, uuid: str, there: str) -> NodeWarning:
    return NodeWarning(g.index, "uuid", "uuid", f"GPU {g.index} ({uuid}) moved to {there}: live there")


def _without(n: NodeSample, gone: set[str], warnings: list[NodeWarning], moved_to: set[str]) -> NodeSample:
    """`n` without the GPUs `gone`, with `warnings`; its error names where they went once every GPU did."""
    gpus = tuple(g for g in n.gpus if g.uuid not in gone)
    error = n.error
    if moved_to and not gpus:
        error = f"moved to {', '.join(sorted(moved_to))}" + (f" ({n.error})" if n.error else "")
    return replace(n, gpus=gpus, error=error, warnings=n.warnings + tuple(warnings))


def mark_moved(nodes: tuple[NodeSample, ...], live_at: Mapping[str, str]) -> tuple[NodeSample, ...]:
    """Down nodes' last-known GPUs whose UUID is live at another address (`live_at`: UUID -> address, from a
    source that sees GPUs the sample does not hold, e.g. Prometheus' current series) moved there: dropped
    and named, as dedupe_uuids does for copies the sample holds."""
    out = []
    for n in nodes:
        moved = {g.uuid: _host(live_at[g.uuid]) for g in n.gpus
                 if n.status == "down" and g.uuid is not None and g.uuid in live_at and live_at[g.uuid] != n.url}
        if not moved:
            out.append(n)
            continue
        warnings = [_moved_warning(g, g.uuid, moved[g.uuid]) for g in n.gpus if g.uuid in moved]
        out.append(_without(n, set(moved), warnings, set(moved.values())))
    return tuple(out)
