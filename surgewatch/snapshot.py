"""`surgewatch snapshot`: every configured collector once, as JSON for scripts or a readable table.

The JSON shape is a contract (see the issue): top-level `taken_at`, `host`, `errors`, `nodes`, `gpus`,
`tiers` (each with its `state`: active, paused, override, broken, no_quota, and its `master`), `redis` (`{"status",
"error"}`, null without a Redis URL), `unknown_tiers` (names gateways ask for without a quota: `tier`,
`refused_rps`, `refused_1m`, `message`), `serving` (inference servers: surgewatch.serving_json; null without
--servers or --prometheus). A failing source never fails the snapshot: its message lands in `errors` under its name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Sequence
from typing import Any

from collectors.nodes import redact_url
from collectors.runner import classify, describe_error
from collectors.samples import FleetSample, GpuSample, GpusSample, HostSample, NodeSample, Source, TrafficSample
from quotas.errors import ErrorKind, redact
from quotas.model import iso, quota_size, quota_text, sorted_tiers
from surgewatch.plan import sources_for
from surgewatch.serving_json import serving_json, serving_text

GPU_KEYS = (
    "node",
    "index",
    "uuid",
    "name",
    "util_pct",
    "mem_util_pct",
    "mem_used_mib",
    "mem_total_mib",
    "temp_c",
    "temp_slowdown_c",
    "power_w",
    "power_limit_w",
    "sm_clock_mhz",
    "throttle",
    "xid",
    "ecc_uncorrected",
    "status",
    "tensor_active_pct",
    "dram_active_pct",
    "mig",
)
SOURCE_TIMEOUT_S = 8.0
# inference servers' own deadline (surgewatch.serving_json.read_once): what they read comes back before the
# source's limit, with the servers it could not reach named, whatever number of them hangs
SERVING_BUDGET_S = SOURCE_TIMEOUT_S - 1.0


def gpu_json(g: GpuSample) -> dict[str, Any]:
    """One GPU; `mig` is null for a GPU not in MIG mode, else its instances (a MIG GPU's memory
    figures are the sums over its instances; its power and temperature the device's own)."""
    d = {k: getattr(g, k) for k in GPU_KEYS}
    d["throttle"] = list(g.throttle)
    d["mig"] = None if g.mig is None else [
        {"gi_id": m.gi_id, "profile": m.profile, "mem_used_mib": m.mem_used_mib, "mem_total_mib": m.mem_total_mib,
         "util_pct": m.util_pct}
        for m in g.mig
    ]
    return d


def node_json(n: NodeSample) -> dict[str, Any]:
    """One node; a node that answers with no GPU series is `up` with `gpus: 0`, a down one says when
    its GPUs were last seen (`last_seen`, null when never)."""
    return {
        "url": redact_url(n.url),
        "status": n.status,
        "error": n.error,
        "latency_ms": n.latency_ms,
        "gpus": len(n.gpus),
        "warnings": [str(w) for w in n.warnings],
        "last_seen": iso(n.taken_at) if n.status == "down" and n.gpus else None,
    }


def host_json(h: HostSample) -> dict[str, Any]:
    return {
        "hostname": h.hostname,
        "cpu_pct": h.cpu_pct,
        "cpu_per_core_pct": list(h.cpu_per_core_pct),
        "load_1": h.load_1,
        "load_5": h.load_5,
        "load_15": h.load_15,
        "mem_used_mib": round(h.mem_used_mib, 1),
        "mem_total_mib": round(h.mem_total_mib, 1),
        "swap_used_mib": round(h.swap_used_mib, 1),
        "swap_total_mib": round(h.swap_total_mib, 1),
        "net_rx_bps": h.net_rx_bps,
        "net_tx_bps": h.net_tx_bps,
        "disk_read_bps": h.disk_read_bps,
        "disk_write_bps": h.disk_write_bps,
    }


def tiers_json(t: TrafficSample) -> list[dict[str, Any]]:
    """Every tier in the console's order (quotas.model.sorted_tiers: by quota size, smallest first)."""
    by_name = {tt.tier: tt for tt in t.tiers}
    out = []
    for name in sorted_tiers(by_name, lambda n: quota_size(by_name[n].quota)):
        tt = by_name[name]
        q = tt.quota
        out.append(
            {
                "tier": tt.tier,
                "limit": q.limit if q else None,
                "window_s": q.window_s if q else None,
                "tier_cap_rps": q.tier_cap_rps if q else None,
                "paused": q.paused if q else None,
                "mode": q.mode if q else None,
                "version": q.version if q else None,
                "state": tt.state,
                "quota_error": tt.quota_error or None,
                "accepted_rps": round(tt.accepted_rps, 3),
                "rejected_rps": round(tt.rejected_rps, 3),
                "accepted_1m": tt.accepted_1m,
                "rejected_1m": tt.rejected_1m,
                "rejected_by_reason_1m": dict(tt.rejected_by_reason_1m),
                "master": tt.master or None,  # host:port serving the tier (cluster, Sentinel); null: one server
            }
        )
    return out


async def _guarded(name: str, coro: Awaitable[Any], errors: dict[str, str], kinds: dict[str, ErrorKind]) -> Any:
    try:
        async with asyncio.timeout(SOURCE_TIMEOUT_S):
            return await coro
    except TimeoutError:
        errors[name] = f"timed out after {SOURCE_TIMEOUT_S:g} s"
        kinds[name] = ErrorKind.TIMEOUT
    except Exception as e:
        errors[name] = redact(describe_error(e))
        kinds[name] = classify(e).kind
    return None


def unknown_tiers_json(traffic: Any) -> list[dict[str, Any]]:
    """Names gateways ask for that have no quota (a misspelt tier): every request refused as unknown_tier."""
    if not isinstance(traffic, TrafficSample):
        return []
    return [{"tier": u.name, "refused_rps": u.refused_rps, "refused_1m": u.refused_1m, "message": u.message()}
            for u in traffic.unknown_tiers]


def redis_json(traffic: TrafficSample | None, error: str | None, kind: ErrorKind | None) -> dict[str, Any]:
    """`{"status", "error"}`: the server's named state (collectors.redis_health), or why it gave none."""
    if isinstance(traffic, TrafficSample):
        return {"status": traffic.redis.status, "error": traffic.redis.error}
    status = {ErrorKind.TIMEOUT: "unreachable", None: "unreachable"}.get(kind, str(kind))
    return {"status": status, "error": error}


async def _local_gpus(nvml: Any) -> GpusSample:
    from collectors.gpu import GpuCollector

    c = GpuCollector(nvml, xid_events=False)  # one reading: no time to wait for events
    try:
        return await c.poll()
    finally:
        await c.aclose()


async def _host() -> HostSample:
    from collectors.host import HostCollector

    c = HostCollector(io_interval_s=0.2)
    try:
        # CPU % and I/O rates compare two readings: take three, 0.25 s apart
        for _ in range(2):
            await c.poll()
            await asyncio.sleep(0.25)
        return await c.poll()
    finally:
        await c.aclose()


async def _scrape(urls: Sequence[str]) -> FleetSample:
    from collectors.fleet import FleetCollector

    c = FleetCollector(urls, min_interval_s=0, wait_s=None)
    try:
        return await c.poll()
    finally:
        await c.aclose()


async def _prometheus(url: str, lookback_s: float) -> FleetSample:
    from collectors.prometheus import PrometheusFleetCollector

    c = PrometheusFleetCollector(url, lookback_s=lookback_s, timeout_s=SOURCE_TIMEOUT_S / 4)
    try:
        return await c.poll()
    finally:
        await c.aclose()


async def _serving(servers: Sequence[str], prometheus: str | None) -> dict[str, Any] | None:
    """The `serving` key. Written strictly (no NaN or Infinity, which JSON has not): a figure that is not a
    finite number is a bug upstream (collectors.serving_parse screens the pages), named in `errors`, never
    invalid JSON on a script's stdin."""
    from surgewatch.serving_json import read_once

    doc = serving_json(await read_once(servers, prometheus, SOURCE_TIMEOUT_S / 4, SERVING_BUDGET_S))
    json.dumps(doc, allow_nan=False)  # raises ValueError ("Out of range float values are not JSON compliant")
    return doc


async def _traffic(redis_url: str, prefix: str, redis_cluster: bool = False) -> TrafficSample:
    from collectors.traffic import TrafficCollector
    from quotas.connect import open_client
    from quotas.tls_probe import refuse_tls_mismatch

    await refuse_tls_mismatch(redis_url)  # named at once (in errors.traffic), not after a TLS timeout
    # one server, a cluster (detected, or --redis-cluster) or Sentinel: quotas.connect decides
    client = await open_client(
        redis_url, force_cluster=redis_cluster, prefix=prefix, socket_connect_timeout=2, socket_timeout=3
    )
    try:
        return await TrafficCollector(client, prefix=prefix).poll()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 1)


async def take_snapshot(
    *,
    redis_url: str | None,
    prefix: str,
    nodes: Sequence[str],
    prometheus: str | None,
    local: bool,
    nvml: Any = None,
    prometheus_lookback_s: float = 3600.0,
    redis_cluster: bool = False,
    servers: Sequence[str] = (),
) -> dict[str, Any]:
    """Run every configured collector once, concurrently; the issue's JSON document."""
    import time

    errors: dict[str, str] = {}
    kinds: dict[str, ErrorKind] = {}
    jobs: dict[str, Awaitable[Any]] = {}
    # the console's plan of sources (surgewatch.plan), each taken once; the fleet's errors are named by how it
    # was read ("prometheus" or "fleet")
    for source in sources_for(local=local, nodes=nodes, prometheus=prometheus, servers=servers,
                              redis=bool(redis_url)):
        if source == Source.GPUS:
            jobs["gpu"] = _local_gpus(nvml)
        elif source == Source.HOST:
            jobs["host"] = _host()
        elif source == Source.FLEET and prometheus:
            jobs["prometheus"] = _prometheus(prometheus, prometheus_lookback_s)
        elif source == Source.FLEET:
            jobs["fleet"] = _scrape(nodes)
        elif source == Source.TRAFFIC and redis_url:
            jobs["traffic"] = _traffic(redis_url, prefix, redis_cluster)
        elif source == Source.SERVING:
            jobs["serving"] = _serving(servers, prometheus)
    started = time.time()
    gathered = await asyncio.gather(*(_guarded(k, v, errors, kinds) for k, v in jobs.items()))
    results = dict(zip(jobs, gathered, strict=True))

    gpus: list[dict[str, Any]] = []
    local_gpus = results.get("gpu")
    if isinstance(local_gpus, GpusSample):
        if local_gpus.status != "ok":
            errors["gpu"] = local_gpus.message or local_gpus.status
        gpus.extend(gpu_json(g) for g in local_gpus.gpus)
    node_list: list[dict[str, Any]] = []
    for key in ("fleet", "prometheus"):
        fleet = results.get(key)
        if isinstance(fleet, FleetSample):
            for n in fleet.nodes:
                node_list.append(node_json(n))
                gpus.extend(gpu_json(g) for g in n.gpus)
    host = results.get("host")
    traffic = results.get("traffic")
    return {
        "taken_at": iso(started),
        "host": host_json(host) if isinstance(host, HostSample) else None,
        "errors": errors,
        "nodes": node_list,
        "gpus": gpus,
        "tiers": tiers_json(traffic) if isinstance(traffic, TrafficSample) else [],
        "redis": redis_json(traffic, errors.get("traffic"), kinds.get("traffic")) if redis_url else None,
        # names gateways ask for that have no quota (a misspelt tier): every request refused as unknown_tier
        "unknown_tiers": unknown_tiers_json(traffic),
        "serving": results.get("serving"),
    }


def _f(v: Any, fmt: str = "{:.0f}", na: str = "n/a") -> str:
    return na if v is None else fmt.format(v)


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()  # noqa: E731
    return [line(header), *(line(r) for r in rows)]


def render_text(doc: dict[str, Any]) -> str:
    """The snapshot as plain tables for a terminal (no colours: thresholds belong to the console)."""
    out = [f"surgewatch snapshot at {doc['taken_at']}"]
    h = doc["host"]
    if h:
        out.append(
            f"host {h['hostname']}: cpu {h['cpu_pct']:.0f}%  load {h['load_1']:.2f} {h['load_5']:.2f} "
            f"{h['load_15']:.2f}  mem {h['mem_used_mib']:.0f}/{h['mem_total_mib']:.0f} MiB  "
            f"swap {h['swap_used_mib']:.0f}/{h['swap_total_mib']:.0f} MiB"
        )
    if doc["gpus"]:
        out += [
            "",
            *_table(
                [
                    [
                        g["node"],
                        str(g["index"]),
                        g["name"] or "n/a",
                        _f(g["util_pct"], "{:.0f}%"),
                        f"{_f(g['mem_used_mib'])}/{_f(g['mem_total_mib'])}",
                        _f(g["temp_c"], "{:.0f}C"),
                        f"{_f(g['power_w'])}/{_f(g['power_limit_w'])}W",
                        _f(g["sm_clock_mhz"]),
                        ",".join(g["throttle"]) or "-",
                        _f(g["xid"], "{}", "-"),
                        g["status"],
                    ]
                    for g in doc["gpus"]
                ],
                ["NODE", "GPU", "NAME", "UTIL", "MEM MiB", "TEMP", "POWER", "SM MHz", "THROTTLE", "XID", "STATUS"],
            ),
        ]
    if doc["nodes"]:
        out += [
            "",
            *_table(
                [
                    [n["url"], n["status"], _f(n["latency_ms"], "{:.0f} ms", "-"), str(n["gpus"]),
                     n["last_seen"] or "-", n["error"] or ("up, no GPU series" if not n["gpus"] else "")]
                    for n in doc["nodes"]
                ],
                ["NODE", "STATUS", "LATENCY", "GPUS", "LAST SEEN", "ERROR"],
            ),
        ]
        warned = [(n["url"], w) for n in doc["nodes"] for w in n["warnings"]]
        if warned:
            out += ["", "warnings:", *(f"  {url}: {w}" for url, w in warned)]
    if doc["tiers"]:
        rows = []
        for t in doc["tiers"]:
            quota = "n/a" if t["limit"] is None else quota_text(t["limit"], t["window_s"])
            flags = t["state"].upper().replace("_", " ") if t["state"] in ("no_quota", "broken") else t["state"]
            flags += " shadow" if t["mode"] == "shadow" else ""
            reasons = " ".join(f"{k}={v}" for k, v in t["rejected_by_reason_1m"].items() if v)
            rows.append(
                [
                    t["tier"],
                    quota,
                    flags or "-",
                    f"{t['accepted_rps']:.1f}",
                    f"{t['rejected_rps']:.1f}",
                    str(t["accepted_1m"]),
                    str(t["rejected_1m"]),
                    reasons or "-",
                ]
            )
        out += [
            "",
            *_table(rows, ["TIER", "QUOTA", "STATE", "ACC/S", "REJ/S", "ACC 1M", "REJ 1M", "REJECTED BY REASON (1M)"]),
        ]
    if doc.get("unknown_tiers"):
        out += ["", "UNKNOWN TIERS (requests refused as unknown_tier):",
                *(f"  {u['message']}" for u in doc["unknown_tiers"])]
    out += serving_text(doc.get("serving"))
    redis = doc.get("redis")
    if redis and redis["status"] != "ok":
        out += ["", f"REDIS {redis['status'].upper()}: {redis['error'] or ''}"]
    if doc["errors"]:
        out += ["", "errors:", *(f"  {k}: {v}" for k, v in doc["errors"].items())]
    return "\n".join(out) + "\n"
