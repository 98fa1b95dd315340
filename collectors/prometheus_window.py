"""Prometheus does the work for a large fleet: aggregation queries instead of every series.

For a fleet of more GPUs than a console can show (`FleetWindow.above_gpus`), a refresh asks Prometheus for
- the GPUs of each target (`count by (instance, job)`: a series per node), so every node is listed;
- the fleet's figures (`avg`/`max`/`sum`/`count`, one series each) and the throttle bitmasks present
  (`count_values`: a few series), which `FleetSummary` carries;
- the worst nodes (`topk`: XID first, then throttled, then the hottest GPU) plus the nodes the operator
  asked for (`focus`), and only those nodes' series in full.
Each GPU counts once however many MIG instances repeat its device fields (`max by (instance, gpu, UUID)`);
values outside a field's plausible range and DCGM's blanks are left out of every figure
(`collectors.metrics`), as the parser leaves them out of a GPU.

The console's rules stay in tui/: what is hot and which throttle reasons count come in as `hot_c`
and `throttled`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from collectors.dcgm import USED_METRICS
from collectors.metrics import METRICS
from collectors.reasons import decode_reasons
from collectors.samples import FleetSummary

AGG_LABEL = "surgewatch_agg"
_BY_GPU = "instance, gpu, UUID"
_SPEC = {m.name: m for m in METRICS}
_REASONS = "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS|DCGM_FI_DEV_CLOCKS_EVENT_REASONS"


@dataclass
class FleetWindow:
    """What the console can show of a large fleet, and its rules for the summary's counts."""

    above_gpus: int = 2048  # a fleet this large or smaller is fetched whole
    nodes: int = 8  # the worst nodes fetched in full each refresh
    hot_c: float = 80.0
    throttled: Callable[[tuple[str, ...]], bool] = lambda names: bool(names)
    focus: str = ""  # the operator's filter text: nodes whose name holds it are fetched in full too
    focus_max_nodes: int = 64


def _regex(names: Iterable[str]) -> str:
    alt = "|".join(re.escape(i) for i in sorted(names))
    return alt.replace("\\", "\\\\").replace('"', '\\"')


def _gpu(metric: str) -> str:
    """One value per physical GPU of a metric, within its plausible range (MIG instances repeat it)."""
    lo, hi = _SPEC[metric].range
    return f"(max by ({_BY_GPU}) ({metric}) >= {lo:g} <= {hi:g})"


def _reasons() -> str:
    return f'(max by ({_BY_GPU}) ({{__name__=~"{_REASONS}"}}) >= 0 <= {2**47 - 1})'


def _xid() -> str:
    return f"({_gpu('DCGM_FI_DEV_XID_ERRORS')} > 0)"  # dcgm-exporter's XID gauge is 0 until an XID happens


def counts_query() -> str:
    """Physical GPUs per target, with its job: every node with GPU series, one series each."""
    sel = '{__name__=~"' + "|".join(USED_METRICS) + '"}'
    return f"count by (instance, job) (group by ({_BY_GPU}, job) ({sel}))"


def where_query(uuids: Iterable[str]) -> str:
    """Where these GPUs are live now: one series per (instance, UUID) among the current GPU series (a down
    node's last-known GPUs may be live at another address that the window does not fetch in full)."""
    sel = '{__name__=~"' + "|".join(USED_METRICS) + f'", UUID=~"{_regex(uuids)}"}}'
    return f"group by (instance, UUID) ({sel})"


def read_where(result: Any) -> dict[str, str]:
    """UUID -> the instance it is live at (the first by name when several), from where_query's answer."""
    out: dict[str, str] = {}
    for item in result if isinstance(result, list) else ():
        m = item.get("metric") if isinstance(item, dict) else None
        if isinstance(m, dict) and "UUID" in m and "instance" in m:
            uuid, inst = str(m["UUID"]), str(m["instance"])
            if uuid not in out or inst < out[uuid]:
                out[uuid] = inst
    return out


def _named(name: str, expr: str) -> str:
    return f'label_replace({expr}, "{AGG_LABEL}", "{name}", "", "")'


def summary_query(hot_c: float) -> str:
    """The fleet's figures as named series (one query: each term keeps its name in AGG_LABEL)."""
    util, temp, power = _gpu("DCGM_FI_DEV_GPU_UTIL"), _gpu("DCGM_FI_DEV_GPU_TEMP"), _gpu("DCGM_FI_DEV_POWER_USAGE")
    terms = {
        "util_n": f"count({util})", "util_mean": f"avg({util})", "util_max": f"max({util})",
        "temp_n": f"count({temp})", "temp_mean": f"avg({temp})", "temp_max": f"max({temp})",
        "power": f"sum({power})", "hot": f"count({temp} >= {hot_c:g})", "xid": f"count({_xid()})",
    }
    return " or ".join(_named(k, v) for k, v in terms.items())


def masks_query() -> str:
    """How many GPUs have each throttle bitmask (a handful of distinct values in any fleet)."""
    return f'count_values("mask", {_reasons()})'


def _throttled_sel(masks: Iterable[int]) -> list[str]:
    return [f"({_reasons()} == {m})" for m in sorted(masks)]


def unhealthy_query(hot_c: float, throttled_masks: Iterable[int]) -> str:
    """GPUs that are hot, throttled or have an XID, each counted once (`or` is a union by labels)."""
    terms = [f"({_gpu('DCGM_FI_DEV_GPU_TEMP')} >= {hot_c:g})", _xid(), *_throttled_sel(throttled_masks)]
    return f"count(group by ({_BY_GPU}) ({' or '.join(terms)}))"


def worst_query(k: int, throttled_masks: Iterable[int]) -> str:
    """The k worst nodes: with an XID, then throttled, then by their hottest GPU."""
    terms = [f"(max by (instance) ({_xid()}) * 0 + 2000)"]
    terms += [f"(max by (instance) ({t}) * 0 + 1000)" for t in _throttled_sel(throttled_masks)]
    terms.append(f"max by (instance) ({_gpu('DCGM_FI_DEV_GPU_TEMP')})")
    return f"topk({k}, {' or '.join(terms)})"


def series_query(instances: Iterable[str]) -> str:
    """Every used series of these nodes (the ones shown)."""
    return '{__name__=~"' + "|".join(USED_METRICS) + f'", instance=~"{_regex(instances)}"}}'


def _value(item: Any) -> float | None:
    try:
        return float(item["value"][1])
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def read_counts(result: Any) -> tuple[dict[str, int], dict[str, str]]:
    """(physical GPUs by instance, job by instance) from counts_query's answer."""
    gpus: dict[str, int] = {}
    jobs: dict[str, str] = {}
    for item in result if isinstance(result, list) else ():
        v = _value(item)
        m = item.get("metric") if isinstance(item, dict) else None
        if v is None or not isinstance(m, dict) or "instance" not in m:
            continue
        gpus[str(m["instance"])] = int(v)
        jobs[str(m["instance"])] = str(m.get("job", ""))
    return gpus, jobs


def read_masks(result: Any) -> dict[int, int]:
    """GPUs by throttle bitmask, from masks_query's answer."""
    out: dict[int, int] = {}
    for item in result if isinstance(result, list) else ():
        v = _value(item)
        try:
            mask = int(float(item["metric"]["mask"]))
        except (KeyError, TypeError, ValueError):
            continue
        if v is not None:
            out[mask] = out.get(mask, 0) + int(v)
    return out


def read_instances(result: Any) -> list[str]:
    out = []
    for item in result if isinstance(result, list) else ():
        try:
            out.append(str(item["metric"]["instance"]))
        except (KeyError, TypeError):
            continue
    return out


def read_summary(result: Any, gpus: int, masks: dict[int, int], throttled: set[int], unhealthy: Any,
                 shown_nodes: int) -> FleetSummary:
    """The FleetSummary from summary_query's answer, the mask counts and unhealthy_query's answer."""
    named: dict[str, float] = {}
    for item in result if isinstance(result, list) else ():
        v = _value(item)
        m = item.get("metric") if isinstance(item, dict) else None
        if v is not None and isinstance(m, dict) and AGG_LABEL in m:
            named[str(m[AGG_LABEL])] = v
    bad = next((v for v in (_value(i) for i in (unhealthy if isinstance(unhealthy, list) else ())) if v is not None),
               0.0)
    return FleetSummary(
        gpus=gpus, healthy=max(0, gpus - int(bad)), hot=int(named.get("hot", 0)),
        throttled=sum(n for m, n in masks.items() if m in throttled), xid=int(named.get("xid", 0)),
        util_n=int(named.get("util_n", 0)), util_mean_pct=named.get("util_mean"), util_max_pct=named.get("util_max"),
        temp_n=int(named.get("temp_n", 0)), temp_mean_c=named.get("temp_mean"), temp_max_c=named.get("temp_max"),
        power_w=named.get("power"), shown_nodes=shown_nodes,
    )


def throttled_masks(masks: dict[int, int], throttled: Callable[[tuple[str, ...]], bool]) -> set[int]:
    return {m for m in masks if throttled(decode_reasons(m))}
