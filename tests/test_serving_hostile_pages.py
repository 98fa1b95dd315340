"""Inference servers whose pages say what cannot be: NaN, +-Inf, negative counts, a KV percent, a histogram
without +Inf, and a model served by Triton beside vLLM. Real HTTP servers on loopback, as the collector reads."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import surgewatch.snapshot
from collectors.serving_parse import parse_server_page
from collectors.serving_samples import Missing, ModelServing, ServingSample
from surgewatch.snapshot import render_text, take_snapshot
from tests.test_serving_collector import Clock, collector, vllm_page
from tui.testing import MetricsNode


def said(page: str, series: str, value: str) -> str:
    """`page` (of one model) with the value of `series` (a name, or a name and its first labels) set to `value`
    as a server writes it (NaN, +Inf, -Inf, 85, ...)."""
    out = []
    for line in page.splitlines():
        if line.startswith((series + "{", series + ",")):
            line = line.rsplit(" ", 1)[0] + " " + value
        out.append(line)
    return "\n".join(out) + "\n"


async def served_once(page: str) -> ServingSample:
    """`page` served on loopback, scraped once by the serving collector."""
    with MetricsNode(page) as node:
        c = collector([node.url], Clock())
        try:
            return await c.poll()
        finally:
            await c.aclose()


def model(s: ServingSample, name: str = "img") -> ModelServing:
    (m,) = [m for m in s.models if m.model == name]
    return m


async def test_nan_and_infinite_gauges_are_no_figure_with_their_reason_and_a_warning() -> None:
    """A NaN queue, an infinite running count and a KV use of -Inf: None, "not a finite number", each family warned."""
    page = said(said(said(vllm_page(waiting=1, running=2, kv=0.5), "vllm:num_requests_waiting", "NaN"),
                     "vllm:num_requests_running", "+Inf"), "vllm:kv_cache_usage_perc", "-Inf")
    s = await served_once(page)
    r = s.replicas[0]
    (f,) = r.models
    assert (f.waiting, f.running, f.kv_cache_pct) == (None, None, None)
    assert {f.missing[k] for k in ("waiting", "running", "kv_cache_pct")} == {Missing.NOT_FINITE}
    for family in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
        assert any(w.startswith(family + ":") and "not a finite number" in w for w in r.warnings), r.warnings
    m = model(s)
    assert m.figures.waiting is None and m.figures.missing["waiting"] == Missing.NOT_FINITE
    assert m.queue_per_replica is None and m.kv_cache_max_pct is None


async def test_an_infinite_counter_spoils_the_windows_it_is_in_and_counts_no_reset() -> None:
    """A request counter at +Inf: no rate while it is an end of the window, never a false restart after it."""
    clock = Clock()
    with MetricsNode(vllm_page(stop=100)) as node:
        c = collector([node.url], clock)
        try:
            await c.poll()
            clock.t += 10
            node.page = said(vllm_page(stop=100), 'vllm:request_success_total{finished_reason="stop"', "+Inf")
            during = (await c.poll()).replicas[0]
            clock.t += 10
            node.page = vllm_page(stop=120)  # the window runs from the first page: 20 requests in 20 s
            after = (await c.poll()).replicas[0]
        finally:
            await c.aclose()
    (f,) = during.models
    assert f.requests_per_s is None and f.missing["requests_per_s"] == Missing.NOT_FINITE
    assert f.failures_per_s is None and f.failures_by_reason_per_s == {}
    assert f.missing["queue_mean_s"] == Missing.NOT_EXPORTED  # vLLM has no such mean for requests to spoil
    assert any(w.startswith("vllm:request_success_total:") for w in during.warnings)
    (g,) = after.models
    assert after.resets == 0 and g.requests_per_s == pytest.approx(1.0) and "requests_per_s" not in g.missing


async def test_a_counter_infinite_at_the_windows_start_gives_no_rate_not_its_whole_count() -> None:
    """Counted from an infinite first page, a rate would be the counter's whole value at once: it is None."""
    clock = Clock()
    with MetricsNode(said(vllm_page(stop=0), 'vllm:request_success_total{finished_reason="stop"', "+Inf")) as node:
        c = collector([node.url], clock)
        try:
            await c.poll()
            clock.t += 10
            node.page = vllm_page(stop=5000)
            (f,) = (await c.poll()).replicas[0].models
        finally:
            await c.aclose()
    assert f.requests_per_s is None and f.missing["requests_per_s"] == Missing.NOT_FINITE


async def test_negative_gauges_and_a_kv_fraction_above_one_are_out_of_range_not_figures() -> None:
    """waiting -5 and running -3 are no queue; a KV of 85 (a percent) or 1.5 is none; 1.0 is a full cache."""
    neg = vllm_page(model="neg", waiting=-5, running=-3, kv=0.5)
    with MetricsNode(neg) as a, MetricsNode(vllm_page(model="pct", kv=85)) as b, \
            MetricsNode(vllm_page(model="over", kv=1.5)) as c_, MetricsNode(vllm_page(model="full", kv=1.0)) as d:
        c = collector([a.url, b.url, c_.url, d.url], Clock())
        try:
            s = await c.poll()
        finally:
            await c.aclose()
    m = model(s, "neg")
    assert m.figures.waiting is None and m.figures.missing["waiting"] == Missing.OUT_OF_RANGE
    assert m.figures.running is None and m.queue_per_replica is None and m.figures.kv_cache_pct == 50
    assert "vllm:num_requests_waiting: -5 is out of range (never negative): ignored" in s.replicas[0].warnings
    for replica, name, shown in ((s.replicas[1], "pct", "85"), (s.replicas[2], "over", "1.5")):
        m = model(s, name)
        assert m.figures.kv_cache_pct is None and m.kv_cache_max_pct is None
        assert m.figures.missing["kv_cache_pct"] == Missing.OUT_OF_RANGE and m.figures.waiting == 0
        assert f"vllm:kv_cache_usage_perc: {shown} is out of range (a fraction of the cache, 0 to 1): ignored" \
            in replica.warnings
    full = model(s, "full")
    assert full.figures.kv_cache_pct == 100 and full.kv_cache_max_pct == 100 and not s.replicas[3].warnings


async def test_one_replicas_impossible_queue_makes_the_models_queue_unknown_not_smaller() -> None:
    """Two replicas of a model, one queue NaN: the model's queue is None with the reason, never the other's 3."""
    with MetricsNode(vllm_page(waiting=3)) as ok, \
            MetricsNode(said(vllm_page(waiting=1), "vllm:num_requests_waiting", "NaN")) as bad:
        c = collector([ok.url, bad.url], Clock())
        try:
            s = await c.poll()
        finally:
            await c.aclose()
    m = model(s)
    assert m.replicas_up == 2 and m.figures.waiting is None and m.queue_per_replica is None
    assert m.figures.missing["waiting"] == Missing.NOT_FINITE
    assert s.replicas[0].models[0].waiting == 3  # the sane replica's own figure stays


def triton_page(ok: int, queue_us: int, request_us: int) -> str:
    lab = 'model="img",version="1"'
    return (f"nv_inference_pending_request_count{{{lab}}} 0\nnv_inference_request_success{{{lab}}} {ok}\n"
            f"nv_inference_request_failure{{{lab}}} 0\nnv_inference_queue_duration_us{{{lab}}} {queue_us}\n"
            f"nv_inference_request_duration_us{{{lab}}} {request_us}\n")


async def test_triton_means_are_divided_by_the_requests_of_the_triton_replicas_only() -> None:
    """Triton and vLLM serve one model: Triton's 10 requests queued 1 s each, vLLM's 90 do not make it 0.1 s."""
    clock = Clock()
    with MetricsNode(triton_page(0, 0, 0)) as trit, MetricsNode(vllm_page(stop=0)) as vm:
        c = collector([trit.url, vm.url], clock)
        try:
            await c.poll()
            clock.t += 10
            trit.page = triton_page(10, 10_000_000, 20_000_000)  # 10 requests: 10 s queued, 20 s in all
            vm.page = vllm_page(stop=90)
            s = await c.poll()
        finally:
            await c.aclose()
    f = model(s).figures
    assert model(s).kinds == ("triton", "vllm") and f.requests_per_s == pytest.approx(10.0)
    assert f.queue_mean_s == pytest.approx(1.0) and f.request_mean_s == pytest.approx(2.0)


def test_a_histogram_without_its_inf_bucket_is_warned_and_read_as_none() -> None:
    """Buckets without +Inf give no quantile: the histogram is left out, and the page's warnings say which one."""
    page = "\n".join(ln for ln in vllm_page(e2e=(1, 2, 3, 4, 4)).splitlines()
                     if 'e2e_request_latency_seconds_bucket{le="+Inf"' not in ln)
    got = parse_server_page(page)
    assert got.models[0].e2e is None and got.models[0].ttft is not None
    assert "vllm:e2e_request_latency_seconds: histogram without a +Inf bucket ignored" in got.warnings


def test_a_bucket_bound_that_is_nan_is_refused_never_a_quantile() -> None:
    """`le="NaN"` cannot bound a bucket: the series is ignored with a warning, the others read."""
    page = vllm_page(e2e=(1, 2, 3, 4, 4)).replace('le="5.0"', 'le="NaN"')
    got = parse_server_page(page)
    assert got.models[0].e2e is not None and math.nan not in got.models[0].e2e.bounds
    assert all(b == b for b in got.models[0].e2e.bounds)
    assert any("le nan is not a bucket bound" in w for w in got.warnings)


async def test_snapshot_json_stays_strict_json_and_carries_the_pages_warnings() -> None:
    """`snapshot --json` of a page of NaN, +Inf, a KV percent and a histogram without +Inf: valid JSON, each
    figure null with its reason, each family named in the replica's warnings (and in the text view)."""
    page = vllm_page(waiting=1, stop=10, kv=85, e2e=(1, 2, 3, 4, 4))
    page = said(said(page, "vllm:num_requests_running", "+Inf"), "vllm:num_requests_waiting", "NaN")
    page = "\n".join(ln for ln in page.splitlines() if 'latency_seconds_bucket{le="+Inf"' not in ln) + "\n"
    with MetricsNode(page) as node:
        doc = await take_snapshot(redis_url=None, prefix="surgewatch:", nodes=[], prometheus=None, local=False,
                                  servers=[node.url])
    text = json.dumps(doc, allow_nan=False)  # raises on NaN or Infinity
    assert "Infinity" not in text and "NaN" not in text and "serving" not in doc["errors"]
    (m,) = doc["serving"]["models"]
    assert m["waiting"] is None and m["missing"]["waiting"] == "not a finite number"
    assert m["running"] is None and m["kv_cache_pct"] is None and m["missing"]["kv_cache_pct"] == "out of range"
    warnings = doc["serving"]["replicas"][0]["warnings"]
    for family in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                   "vllm:e2e_request_latency_seconds"):
        assert any(w.startswith(family + ":") for w in warnings), warnings
    assert "histogram without a +Inf bucket" in render_text(doc)


async def test_a_serving_figure_that_leaks_as_infinity_is_named_in_errors_never_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Were a non-finite figure to slip through, the snapshot names it under errors.serving, not invalid JSON."""
    def leaky(sample: Any) -> dict[str, Any]:
        return {"models": [{"waiting": math.inf}], "replicas": []}
    monkeypatch.setattr(surgewatch.snapshot, "serving_json", leaky)
    with MetricsNode(vllm_page()) as node:
        doc = await take_snapshot(redis_url=None, prefix="surgewatch:", nodes=[], prometheus=None, local=False,
                                  servers=[node.url])
    json.dumps(doc, allow_nan=False)
    assert doc["serving"] is None and "not JSON compliant" in doc["errors"]["serving"]


async def test_two_model_names_that_differ_past_the_cut_stay_two_models() -> None:
    """Two 300-character model names that differ only at their end: two rows, each its own queue, never one
    row with one model's figures (the 200-character cut made them one name)."""
    long_a, long_b = "org/" + "x" * 300 + "-A", "org/" + "x" * 300 + "-B"
    page = vllm_page(model=long_a, waiting=3) + vllm_page(model=long_b, waiting=100)
    s = await served_once(page)
    assert len(s.models) == 2 and all(len(m.model) <= 200 for m in s.models)
    assert sorted(m.figures.waiting or -1.0 for m in s.models) == [3, 100]
