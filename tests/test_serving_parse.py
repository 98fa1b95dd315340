"""Inference servers' /metrics pages (real captures) -> kind and per-model figures; Prometheus' quantile rule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from collectors import serving_parse
from collectors.dcgm import PageError
from collectors.serving_parse import FAMILIES, NO_MODEL, NOT_A_SERVER, ModelPage, parse_server_page
from collectors.serving_window import bucket_quantile
from tests.conftest import FIXTURES

HERE = Path(__file__).parent / "fixtures"
VLLM = (FIXTURES / "vllm-datadog.prom").read_text()
TGI = (FIXTURES / "tgi-datadog.prom").read_text()
TRITON = (HERE / "triton-datadog.prom").read_text()
SGLANG = (HERE / "sglang-datadog.prom").read_text()
NIM = (HERE / "nim-datadog.prom").read_text()


def test_vllm_page_mixing_v0_and_v1_families_is_read_family_by_family() -> None:
    """The shared vLLM capture is vLLM, "v0+v1" with a warning; each figure keeps its own family's count."""
    page = parse_server_page(VLLM)
    assert page.kind == "vllm" and page.variant == "v0+v1" and page.problem is None
    assert any("V0 and V1" in w for w in page.warnings)
    (m,) = page.models
    assert m.model == "facebook/opt-125m"
    assert (m.waiting, m.running, m.kv_frac, m.preemptions) == (0.0, 0.0, 0.0, 0.0)
    assert m.done == {"length": 1.0} and m.failed is None and m.counts_failures
    # the eras disagree: one request in TTFT and e2e, six in the queue-time histogram (not reconciled)
    assert m.ttft is not None and m.ttft.count == 1 and m.ttft.bounds[-1] == math.inf and len(m.ttft.bounds) == 17
    assert m.e2e is not None and m.e2e.count == 1 and m.e2e.cumulative[0] == 1
    assert m.queue is not None and m.queue.bounds == (0.3, math.inf) and m.queue.cumulative == (6.0, 6.0)


def test_tgi_page_has_no_model_label_and_counts_failures_by_error() -> None:
    """TGI's page (no model label) is grouped under NO_MODEL; failures keep their `err`; it has no TTFT."""
    page = parse_server_page(TGI)
    assert page.kind == "tgi" and page.variant == ""
    (m,) = page.models
    assert m.model == NO_MODEL and (m.waiting, m.running, m.kv_frac) == (0.0, 0.0, None)
    assert m.done == {"": 109.0} and m.failed == {"validation": 2.0}
    assert m.ttft is None and m.e2e is not None and m.e2e.count == 109 and len(m.e2e.bounds) == 36
    assert m.queue is not None and m.queue.cumulative[0] == 9


def test_triton_page_gives_its_cumulative_microseconds_per_model() -> None:
    """Triton: eight models by the `model` label, pending requests, success/failure and the microsecond counters."""
    page = parse_server_page(TRITON)
    assert page.kind == "triton"
    by = {m.model: m for m in page.models}
    assert len(by) == 8
    d = by["densenet_onnx"]
    assert (d.waiting, d.done, d.failed, d.queue_us, d.request_us) == (0.0, {"": 3.0}, {"": 0.0}, 145.0, 1327965.0)
    assert d.ttft is None and d.e2e is None and d.running is None


def test_sglang_and_nim_pages_are_recognised_by_their_names() -> None:
    """SGLang by `sglang:`, NIM by vLLM's names without the prefix (and its request_failure_total)."""
    s = parse_server_page(SGLANG)
    assert s.kind == "sglang"
    (sm,) = s.models
    assert sm.kv_frac == 0.25 and sm.done == {"": 1.0} and sm.ttft is not None and sm.ttft.bounds == (0.1, math.inf)
    n = parse_server_page(NIM)
    assert n.kind == "nim"
    (nm,) = n.models
    assert nm.model == "meta/llama-3.1-8b-instruct" and nm.running == 1.0
    assert nm.kv_frac == pytest.approx(0.0002848191398461977)
    assert nm.done == {"": 5.0} and nm.failed == {"": 0.0} and nm.queue is None
    assert nm.ttft is not None and nm.ttft.cumulative[3:5] == (2.0, 4.0)


@pytest.mark.parametrize("text", [VLLM, TGI, TRITON, SGLANG, NIM], ids=["vllm", "tgi", "triton", "sglang", "nim"])
def test_fast_parse_agrees_with_prometheus_clients_full_parse(text: str) -> None:
    """Every figure read equals what prometheus-client's full parse of the same page gives."""
    page = parse_server_page(text)
    assert page.kind is not None
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    by = {m.model: m for m in page.models}
    checked = 0
    for name, fam in FAMILIES.items():
        if fam.kind != page.kind:
            continue
        # prometheus-client names counters without `_total` and keeps the full name in each sample
        samples = [s for f in fams.values() for s in f.samples if s.name in (name, f"{name}_count")]
        for s in samples:
            model = s.labels.get(fam.model_label, "") if fam.model_label else ""
            m = by[model or NO_MODEL]
            if fam.role in ("waiting", "running", "preempt", "queue_us", "request_us"):
                attr = {"preempt": "preemptions"}.get(fam.role, fam.role)
                assert getattr(m, attr) == s.value
            elif fam.role in ("ttft", "e2e", "queue"):
                h = getattr(m, fam.role)
                assert h is not None and h.count == s.value
            elif fam.role in ("done", "failed"):
                got: dict[str, float] | None = getattr(m, fam.role)
                reason = s.labels.get(fam.reason_label, "") if fam.reason_label else ""
                assert got is not None and got[reason] == s.value
            checked += 1
    assert checked >= 3


def test_page_of_other_metrics_is_not_an_inference_server_never_zeros() -> None:
    """A page without any known family is a named state with no models; text that is not Prometheus raises."""
    page = parse_server_page("# TYPE process_open_fds gauge\nprocess_open_fds 49.0\n")
    assert page.kind is None and page.models == () and page.problem == NOT_A_SERVER
    with pytest.raises(PageError, match="not Prometheus text"):
        parse_server_page("<html><body>502 Bad Gateway\x1b[2J</body></html>")


def test_unreadable_value_costs_its_series_not_the_page() -> None:
    """A known series whose value is not a number is ignored with a warning; the other figures stay."""
    text = VLLM.replace('vllm:num_requests_running{model_name="facebook/opt-125m"} 0.0',
                        'vllm:num_requests_running{model_name="facebook/opt-125m"} n/a')
    page = parse_server_page(text)
    (m,) = page.models
    assert isinstance(m, ModelPage) and m.running is None and m.waiting == 0.0
    assert any(w.startswith("vllm:num_requests_running: unreadable") for w in page.warnings)


def test_two_engines_of_one_model_add_up_and_the_fullest_kv_cache_counts() -> None:
    """vLLM's data-parallel engines: queues and counters are added, KV-cache use is the fullest engine's."""
    text = "\n".join([
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3',
        'vllm:num_requests_waiting{engine="1",model_name="m"} 4',
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5',
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.9',
        'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 10',
        'vllm:request_success_total{engine="1",finished_reason="stop",model_name="m"} 5',
    ])
    (m,) = parse_server_page(text).models
    assert m.waiting == 7 and m.kv_frac == 0.9 and m.done == {"stop": 15}


def test_bucket_quantile_follows_prometheus_rule_worked_by_hand() -> None:
    """Linear within the bucket; the highest finite bound in +Inf; None for an empty histogram."""
    bounds = (1.0, 2.5, 5.0, 10.0, math.inf)
    cum = (50.0, 80.0, 98.0, 100.0, 100.0)
    assert bucket_quantile(0.5, bounds, cum) == 1.0  # rank 50 ends the first bucket: 0 + 1 x 50/50
    assert bucket_quantile(0.99, bounds, cum) == 7.5  # rank 99: 1 of 2 in (5, 10]: 5 + 5 x 1/2
    assert bucket_quantile(0.9, bounds, cum) == pytest.approx(2.5 + 2.5 * 10 / 18)  # rank 90: 10 of 18 in (2.5, 5]
    assert bucket_quantile(0.5, (0.3, math.inf), (0.0, 4.0)) == 0.3  # every request above the last bound
    assert bucket_quantile(0.99, bounds, (0.0,) * 5) is None


def test_bucket_quantile_mends_a_bucket_lower_than_the_one_before_as_prometheus_does() -> None:
    """A bucket below its predecessor (a scrape torn between series) reads as the predecessor's count."""
    bounds = (1.0, 2.5, 5.0, 10.0, math.inf)
    torn = (50.0, 40.0, 98.0, 100.0, 100.0)  # mended: 50, 50, 98, 100, 100
    assert bucket_quantile(0.5, bounds, torn) == 1.0
    assert bucket_quantile(0.6, bounds, torn) == pytest.approx(2.5 + 2.5 * 10 / 48)  # rank 60: 10 of 48 in (2.5, 5]
    assert bucket_quantile(0.5, bounds, (0.0, 0.0, 7.0, 3.0, 3.0)) == pytest.approx(2.5 + 2.5 * 3.5 / 7)  # total 7


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("", *serving_parse._STARTS, "vllm:", "# HELP vllm:num_requests", "nu")),
                          st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=30)), max_size=40))
def test_the_line_finder_keeps_exactly_the_lines_that_start_with_a_read_family(lines: list[tuple[str, str]]) -> None:
    """The regex that finds the lines to read keeps exactly those a startswith on the families' beginnings keeps."""
    text = "\n".join(a + b for a, b in lines)
    assert serving_parse._LINES.findall("\n" + text) == [ln for ln in text.split("\n")
                                                          if ln.startswith(serving_parse._STARTS)]
