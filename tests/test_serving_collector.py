"""The serving collector against real HTTP servers on loopback whose histograms advance between scrapes."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from collectors.serving import ServingCollector
from collectors.serving_parse import NOT_A_SERVER
from collectors.serving_samples import Missing, ServingSample
from surgewatch.cli import main
from surgewatch.settings import ConfigError, resolve
from surgewatch.thresholds import Thresholds
from tests.conftest import FIXTURES
from tui.testing import MetricsNode

VLLM = (FIXTURES / "vllm-datadog.prom").read_text()
E2E = (1.0, 2.5, 5.0, 10.0, math.inf)
TTFT = (0.1, 0.25, 0.5, math.inf)
QUEUE = (0.3, math.inf)


def _hist(name: str, model: str, bounds: tuple[float, ...], cum: tuple[float, ...]) -> list[str]:
    lines = [f"# TYPE {name} histogram"]
    for b, c in zip(bounds, cum, strict=True):
        le = "+Inf" if b == math.inf else repr(b)
        lines.append(f'{name}_bucket{{le="{le}",model_name="{model}"}} {c}')
    lines += [f'{name}_count{{model_name="{model}"}} {cum[-1]}', f'{name}_sum{{model_name="{model}"}} 0']
    return lines


def vllm_page(*, model: str = "img", stop: float = 0, abort: float = 0, preempt: float = 0, waiting: float = 0,
              running: float = 0, kv: float = 0.0, e2e: tuple[float, ...] = (0,) * 5,
              ttft: tuple[float, ...] = (0,) * 4, queue: tuple[float, ...] = (0, 0)) -> str:
    """A vLLM V1 page with the families surgewatch reads (cumulative values as given)."""
    m = f'model_name="{model}"'
    lines = [
        f"vllm:num_requests_waiting{{{m}}} {waiting}", f"vllm:num_requests_running{{{m}}} {running}",
        f"vllm:kv_cache_usage_perc{{{m}}} {kv}", f"vllm:num_preemptions_total{{{m}}} {preempt}",
        f'vllm:request_success_total{{finished_reason="stop",{m}}} {stop}',
        f'vllm:request_success_total{{finished_reason="abort",{m}}} {abort}',
        *_hist("vllm:e2e_request_latency_seconds", model, E2E, e2e),
        *_hist("vllm:time_to_first_token_seconds", model, TTFT, ttft),
        *_hist("vllm:request_queue_time_seconds", model, QUEUE, queue),
    ]
    return "\n".join(lines) + "\n"


class Clock:
    """The collector's clock, moved by the test (rates are per second of this clock)."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def collector(urls: list[str], clock: Clock, **kw: float) -> ServingCollector:
    return ServingCollector(urls, min_interval_s=0, wait_s=None, timeout_s=kw.pop("timeout_s", 3.0), clock=clock)


def by_model(s: ServingSample) -> Mapping[str, object]:
    return {m.model: m for m in s.models}


async def test_quantiles_and_rates_over_the_window_worked_out_by_hand() -> None:
    """Two scrapes 60 s apart: p50/p99 of e2e, TTFT and queue time from the buckets' differences, rates per second."""
    clock = Clock()
    with MetricsNode(vllm_page(stop=100, preempt=3, e2e=(10, 10, 10, 10, 10), ttft=(5, 5, 5, 5))) as node:
        c = collector([node.url], clock)
        try:
            first = (await c.poll()).replicas[0].models[0]
            assert first.e2e_p99_s is None and first.missing["e2e_p99_s"] == Missing.WARMING_UP
            clock.t += 60
            # in the minute: e2e 50 in (0,1], 30 in (1,2.5], 18 in (2.5,5], 2 in (5,10]; TTFT 20 / 40 / 40;
            # queue: 4 requests, all above 0.3 s; 100 stopped, 6 aborted, 6 preemptions
            node.page = vllm_page(stop=200, abort=6, preempt=9, waiting=12, running=8, kv=0.83,
                                  e2e=(60, 90, 108, 110, 110), ttft=(25, 65, 105, 105), queue=(0, 4))
            s = await c.poll()
        finally:
            await c.aclose()
    r = s.replicas[0]
    assert r.status == "up" and r.kind == "vllm" and r.variant == "v1"
    (f,) = r.models
    assert f.window_s == 60
    assert f.e2e_p50_s == pytest.approx(1.0)  # rank 50 closes (0, 1]
    assert f.e2e_p99_s == pytest.approx(7.5)  # rank 99: the 1st of 2 in (5, 10] -> 5 + 5 x 1/2
    assert f.ttft_p50_s == pytest.approx(0.1 + 0.15 * 30 / 40)  # rank 50: 30th of 40 in (0.1, 0.25]
    assert f.ttft_p99_s == pytest.approx(0.25 + 0.25 * 39 / 40)  # rank 99: 39th of 40 in (0.25, 0.5]
    assert f.queue_p50_s == 0.3 and f.queue_p99_s == 0.3  # in +Inf: the highest finite bound, as Prometheus says
    assert f.requests_per_s == pytest.approx(106 / 60) and f.failures_per_s == pytest.approx(0.1)
    assert f.failures_by_reason_per_s == {"abort": pytest.approx(0.1)}
    assert f.preemptions_per_s == pytest.approx(0.1)
    assert (f.waiting, f.running, f.kv_cache_pct) == (12, 8, pytest.approx(83.0))
    (m,) = s.models
    assert m.replicas_up == m.replicas_total == 1 and m.queue_per_replica == 12
    assert m.figures.e2e_p99_s == f.e2e_p99_s


async def test_a_histogram_without_requests_in_the_window_is_no_requests_not_zero() -> None:
    """Counters that did not move: quantiles None with NO_REQUESTS, the request rate a real 0."""
    clock = Clock()
    page = vllm_page(stop=50, e2e=(50, 50, 50, 50, 50), ttft=(50, 50, 50, 50), queue=(50, 50))
    with MetricsNode(page) as node:
        c = collector([node.url], clock)
        try:
            await c.poll()
            clock.t += 30
            (f,) = (await c.poll()).replicas[0].models
        finally:
            await c.aclose()
    assert f.e2e_p99_s is None and f.missing["e2e_p99_s"] == Missing.NO_REQUESTS
    assert f.ttft_p50_s is None and f.missing["ttft_p50_s"] == Missing.NO_REQUESTS
    assert f.requests_per_s == 0.0 and f.failures_per_s == 0.0 and "requests_per_s" not in f.missing


async def test_counter_going_down_is_a_named_reset_never_a_negative_rate() -> None:
    """A restarted server: the scrape after the drop says RESET, the next one's rates start from the restart."""
    clock = Clock()
    with MetricsNode(vllm_page(stop=1000, e2e=(900, 1000, 1000, 1000, 1000))) as node:
        c = collector([node.url], clock)
        try:
            await c.poll()
            clock.t += 10
            node.page = vllm_page(stop=1010, e2e=(905, 1010, 1010, 1010, 1010))
            await c.poll()
            clock.t += 10
            node.page = vllm_page(stop=4, e2e=(4, 4, 4, 4, 4))  # restarted: 4 requests since
            after = (await c.poll()).replicas[0]
            clock.t += 20
            node.page = vllm_page(stop=24, e2e=(4, 24, 24, 24, 24))  # 20 more, all in (1, 2.5]
            later = (await c.poll()).replicas[0]
        finally:
            await c.aclose()
    (f,) = after.models
    assert after.resets == 1 and after.last_reset_at == clock.t - 20
    assert f.requests_per_s is None and f.missing["requests_per_s"] == Missing.RESET
    assert f.e2e_p99_s is None and f.missing["e2e_p99_s"] == Missing.RESET
    (g,) = later.models
    assert later.resets == 1 and g.requests_per_s == pytest.approx(1.0) and g.window_s == 20
    assert g.e2e_p50_s == pytest.approx(1.0 + 1.5 * 10 / 20)  # rank 10 of 20 in (1, 2.5]


async def test_garbage_and_foreign_pages_are_named_states_never_zeros() -> None:
    """Garbage is down with "not Prometheus text"; a page of other metrics is not_serving, with no model."""
    clock = Clock()
    with MetricsNode("<html>\x1b[31mboom</html>") as junk, MetricsNode("process_open_fds 49.0\n") as other:
        c = collector([junk.url, other.url], clock)
        try:
            s = await c.poll()
        finally:
            await c.aclose()
    bad, foreign = s.replicas
    shown = bad.error or ""
    assert bad.status == "down" and shown.startswith("not Prometheus text") and "\x1b" not in shown
    assert foreign.status == "not_serving" and foreign.error == NOT_A_SERVER and foreign.models == ()
    assert s.models == () and len(s.unassigned) == 2


async def test_replica_down_keeps_its_last_figures_and_comes_back() -> None:
    """One of two replicas stops: 1/2 up, its last figures kept with their time; restarted on its port, 2/2."""
    clock = Clock()
    a = MetricsNode(vllm_page(waiting=3)).start()
    b = MetricsNode(vllm_page(waiting=5)).start()
    c = collector([a.url, b.url], clock, timeout_s=2.0)
    try:
        s = await c.poll()
        assert by_model(s)["img"].replicas_up == 2  # type: ignore[attr-defined]
        taken = s.replicas[1].taken_at
        b.stop()
        clock.t += 5
        s = await c.poll()
        down = s.replicas[1]
        assert down.status == "down" and down.error and down.taken_at == taken and down.checked_at == clock.t
        assert down.models[0].waiting == 5  # last-known
        m = s.models[0]
        assert (m.replicas_up, m.replicas_total, m.figures.waiting) == (1, 2, 3)
        b.start()
        clock.t += 5
        s = await c.poll()
        assert s.replicas[1].status == "up" and s.models[0].replicas_up == 2 and s.models[0].figures.waiting == 8
    finally:
        await c.aclose()
        a.stop()
        b.stop()


async def test_model_quantiles_weigh_replicas_by_their_traffic() -> None:
    """Two replicas of one model: buckets added bound by bound, as sum by (le, model_name) does."""
    clock = Clock()
    with MetricsNode(vllm_page()) as fast, MetricsNode(vllm_page()) as slow:
        c = collector([fast.url, slow.url], clock)
        try:
            await c.poll()
            clock.t += 60
            fast.page = vllm_page(stop=90, e2e=(90, 90, 90, 90, 90), waiting=1)  # 90 requests under 1 s
            slow.page = vllm_page(stop=10, e2e=(0, 0, 0, 10, 10), waiting=9)  # 10 requests in (5, 10]
            s = await c.poll()
        finally:
            await c.aclose()
    (m,) = s.models
    assert m.replicas_up == 2 and m.figures.waiting == 10 and m.queue_per_replica == 5
    assert m.figures.requests_per_s == pytest.approx(100 / 60)
    assert m.figures.e2e_p50_s == pytest.approx(50 / 90)  # rank 50 of the 90 in (0, 1]
    assert m.figures.e2e_p99_s == pytest.approx(5 + 5 * 9 / 10)  # rank 99: 9th of the 10 in (5, 10]
    assert [r.models[0].e2e_p99_s for r in s.replicas] == [pytest.approx(0.99), pytest.approx(9.95)]


async def test_triton_gives_means_from_its_microsecond_counters_said_as_means() -> None:
    """Triton: mean queue and request time over the window; quantiles are MEAN_ONLY, not zeros."""
    def page(ok: int, fail: int, queue_us: int, request_us: int) -> str:
        lab = 'model="resnet",version="1"'
        return (f"nv_inference_pending_request_count{{{lab}}} 7\nnv_inference_request_success{{{lab}}} {ok}\n"
                f'nv_inference_request_failure{{{lab},reason="REJECTED"}} {fail}\n'
                f"nv_inference_queue_duration_us{{{lab}}} {queue_us}\n"
                f"nv_inference_request_duration_us{{{lab}}} {request_us}\n")
    clock = Clock()
    with MetricsNode(page(10, 0, 1_000, 50_000)) as node:
        c = collector([node.url], clock)
        try:
            await c.poll()
            clock.t += 10
            node.page = page(48, 2, 1_000 + 40 * 20_000, 50_000 + 40 * 300_000)  # 40 requests: 20 ms queued, 0.3 s
            s = await c.poll()
        finally:
            await c.aclose()
    (f,) = s.replicas[0].models
    assert s.replicas[0].kind == "triton" and f.waiting == 7 and f.running is None
    assert f.queue_mean_s == pytest.approx(0.02) and f.request_mean_s == pytest.approx(0.3)
    assert f.requests_per_s == pytest.approx(4.0) and f.failures_by_reason_per_s == {"REJECTED": pytest.approx(0.2)}
    assert f.e2e_p99_s is None and f.missing["e2e_p99_s"] == Missing.MEAN_ONLY
    assert s.models[0].figures.missing["e2e_p99_s"] == Missing.MEAN_ONLY


async def test_a_server_slower_than_its_timeout_is_down_and_the_others_are_read() -> None:
    """A server that does not answer in time is down ("timed out"); the sweep still reads the other one."""
    def slow_page() -> str:
        time.sleep(1.0)
        return vllm_page()
    clock = Clock()
    with MetricsNode(slow_page) as slow, MetricsNode(vllm_page(waiting=2)) as ok:
        c = ServingCollector([slow.url, ok.url], min_interval_s=0, wait_s=None, timeout_s=0.3, clock=clock)
        try:
            async with asyncio.timeout(20):
                s = await c.poll()
        finally:
            await c.aclose()
    assert s.replicas[0].status == "down" and s.replicas[0].error == "timed out after 0.3 s"
    assert s.replicas[1].status == "up" and s.models[0].figures.waiting == 2


def test_servers_come_from_the_flag_then_the_environment_then_the_file(tmp_path: Path) -> None:
    """--servers wins over SURGEWATCH_SERVERS, which wins over `servers = [...]`; a bare host gets /metrics."""
    cfg = tmp_path / "surgewatch" / "surgewatch.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('servers = ["http://vllm-file:8000"]\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert resolve(env=env).servers == ("http://vllm-file:8000/metrics",)
    env_set = {**env, "SURGEWATCH_SERVERS": "http://vllm-env:8000/metrics,http://tgi-env:80"}
    assert resolve(env=env_set).servers == ("http://vllm-env:8000/metrics", "http://tgi-env:80/metrics")
    listed = tmp_path / "servers.txt"
    listed.write_text("# replicas\nhttp://vllm-a:8000  # a\n")
    assert resolve(servers=f"@{listed}", env=env_set).servers == ("http://vllm-a:8000/metrics",)
    with pytest.raises(ConfigError, match="invalid server URL"):
        resolve(servers="ftp://vllm:8000", env=env)


def test_bad_servers_on_the_command_line_exit_2_naming_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """`surgewatch --servers ...` and `snapshot --servers ...` refuse a bad entry with exit 2, no password shown."""
    assert main(["--servers", "ftp://u:topsecret@vllm:8000", "snapshot", "--no-local"]) == 2
    err = capsys.readouterr().err
    assert "invalid server URL" in err and "topsecret" not in err
    assert main(["snapshot", "--no-local", "--servers", "@/nonexistent/servers.txt"]) == 2
    assert "cannot read server list" in capsys.readouterr().err


def test_serving_thresholds_have_defaults_and_misspelt_names_are_refused() -> None:
    """[thresholds] takes the four SLO names (defaults: 2 s, 10 s, 5 waiting, 80 %); a typo is refused."""
    t = Thresholds.from_mapping({"e2e_p99_slo_s": 4})
    assert (t.ttft_p99_slo_s, t.e2e_p99_slo_s, t.queue_per_replica_warn, t.kv_cache_warn_pct) == (2.0, 4.0, 5.0, 80.0)
    with pytest.raises(ValueError, match="e2e_p99_slo"):
        Thresholds.from_mapping({"e2e_p99_slo": 4})


async def test_polls_between_scrapes_reuse_the_model_view_and_a_scrape_renews_it() -> None:
    """A poll with no replica scraped since gives the same per-model view; the next scrape's figures show."""
    clock = Clock()
    with MetricsNode(vllm_page(waiting=3)) as node:
        c = ServingCollector([node.url], min_interval_s=5.0, wait_s=None, timeout_s=3.0, clock=clock)
        try:
            first = await c.poll()
            node.page = vllm_page(waiting=9)
            clock.t += 1  # within the replica's 5 s: not scraped again
            between = await c.poll()
            clock.t += 5
            after = await c.poll()
        finally:
            await c.aclose()
    assert node.hits == 2 and between.models is first.models and between.taken_at > first.taken_at
    assert (first.models[0].figures.waiting, after.models[0].figures.waiting) == (3, 9)
