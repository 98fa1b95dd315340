"""The `serving` key of `snapshot --json` (and of the recorder's documents): inference servers as JSON.

One function per shape, used by `surgewatch snapshot` and by `surgewatch.recording.documents`, so a live
snapshot and a recorded second say the same thing. A figure that is null says why in its `missing` object
(collectors.serving_samples.Missing's words: "no requests", "counter reset (server restarted)", ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collectors.nodes import redact_url
from collectors.serving_samples import ModelServing, ReplicaSample, ServingFigures, ServingSample
from quotas.model import iso

FIGURE_KEYS = (
    "waiting", "running", "kv_cache_pct", "requests_per_s", "failures_per_s", "preemptions_per_s",
    "ttft_p50_s", "ttft_p99_s", "e2e_p50_s", "e2e_p99_s", "queue_p50_s", "queue_p99_s",
    "queue_mean_s", "request_mean_s", "window_s",
)
SNAPSHOT_WINDOW_S = 2.0  # a one-shot snapshot scrapes each server twice this far apart: rates need two reads
NOT_READ = "not scraped by the snapshot's deadline"  # a server queued behind hanging ones until the end


def figures_json(f: ServingFigures) -> dict[str, Any]:
    """A model's figures: every FIGURE_KEYS value (null: see `missing`), failures by reason, and `missing`."""
    d: dict[str, Any] = {k: getattr(f, k) for k in FIGURE_KEYS}
    d["failures_by_reason_per_s"] = dict(f.failures_by_reason_per_s)
    d["missing"] = {k: str(v) for k, v in f.missing.items()}
    return d


def model_json(m: ModelServing) -> dict[str, Any]:
    return {"model": m.model, "kinds": list(m.kinds), "replicas_up": m.replicas_up,
            "replicas_total": m.replicas_total, "queue_per_replica": m.queue_per_replica,
            "kv_cache_max_pct": m.kv_cache_max_pct, **figures_json(m.figures)}


def replica_json(r: ReplicaSample) -> dict[str, Any]:
    """One server: `status` up, down or not_serving; a down one's figures were read at `taken_at`; `warnings`:
    what its page said that was ignored (a value that cannot be, a histogram without +Inf, ...)."""
    return {"url": redact_url(r.url) or r.url, "status": r.status, "error": r.error, "kind": r.kind,
            "variant": r.variant, "latency_ms": r.latency_ms, "taken_at": iso(r.taken_at), "resets": r.resets,
            "models": [f.model for f in r.models], "warnings": list(r.warnings)}


def serving_json(sample: ServingSample | None) -> dict[str, Any] | None:
    """The `serving` key: null when no inference server could be read at all (its error is in `errors`)."""
    if sample is None:
        return None
    s = sample.summary
    return {
        "source": sample.source,
        "models": [model_json(m) for m in sample.models],
        "replicas": [replica_json(r) for r in sample.replicas],
        "summary": None if s is None else {"replicas": s.replicas, "replicas_up": s.replicas_up,
                                           "shown_replicas": s.shown_replicas},
    }


def serving_text(doc: dict[str, Any] | None) -> list[str]:
    """The `serving` key as plain lines for `snapshot` without --json: a model a line, a replica in none too."""
    if not doc:
        return []

    def fig(m: dict[str, Any], key: str, fmt: str) -> str:
        v = m[key]
        return fmt.format(v) if v is not None else m["missing"].get(key, "n/a")

    out = ["", "inference servers:"]
    for m in doc["models"]:
        out.append(f"  {m['model']}: {m['replicas_up']}/{m['replicas_total']} replicas up, "
                   f"waiting {fig(m, 'waiting', '{:.0f}')}, running {fig(m, 'running', '{:.0f}')}, "
                   f"KV {fig(m, 'kv_cache_pct', '{:.0f}%')}, TTFT p99 {fig(m, 'ttft_p99_s', '{:.2f} s')}, "
                   f"e2e p99 {fig(m, 'e2e_p99_s', '{:.2f} s')}, failures {fig(m, 'failures_per_s', '{:.1f}/s')}")
    for r in doc["replicas"]:
        if not r["models"]:
            out.append(f"  {r['url']}: {r['status']}: {r['error'] or 'no model'}")
        out.extend(f"  {r['url']}: {w}" for w in r.get("warnings", ()))  # none in recordings made before them
    if not doc["models"] and not doc["replicas"]:
        out.append("  none found")
    return out


async def read_once(servers: Sequence[str], prometheus: str | None, timeout_s: float,
                    budget_s: float) -> ServingSample:
    """Inference servers for a one-shot snapshot: through Prometheus (its 1-minute rates) when given, else
    each server scraped twice SNAPSHOT_WINDOW_S apart (the rates and quantiles of those seconds).

    The scrape returns within `budget_s` whatever the servers do: hanging ones hold the sweep's slots for
    timeout_s each and the others queue behind them (more than its concurrency of them: rounds of timeout_s),
    so each read has a deadline, and a server that none reached is down with NOT_READ, one read once keeps
    that reading (a hanging one: "timed out"), never the whole source lost."""
    import asyncio

    if prometheus:
        from collectors.serving_prometheus import PrometheusServingCollector

        p = PrometheusServingCollector(prometheus, timeout_s=timeout_s)
        try:
            return await p.poll()
        finally:
            await p.aclose()
    from collectors.serving import ServingCollector

    c = ServingCollector(servers, timeout_s=timeout_s, min_interval_s=0, wait_s=None)
    start = asyncio.get_running_loop().time()
    try:
        # the first read may take half of what the window's wait leaves; the second (after it) the rest
        await c.poll(deadline=start + max(0.0, budget_s - SNAPSHOT_WINDOW_S) / 2)
        await asyncio.sleep(SNAPSHOT_WINDOW_S)
        await c.poll(deadline=start + budget_s)
        return await c.give_up(NOT_READ)
    finally:
        await c.aclose()


__all__ = ["FIGURE_KEYS", "NOT_READ", "SNAPSHOT_WINDOW_S", "figures_json", "read_once", "serving_json", "serving_text"]
