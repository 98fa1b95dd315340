"""The Service panel and the KPI strip's serving figures, fed by real loopback inference servers."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from surgewatch.settings import Settings
from tests.conftest import FIXTURES
from tests.test_serving_collector import vllm_page
from tui.app import create_app
from tui.testing import MetricsNode, screen_text, wait_until

VLLM = (FIXTURES / "vllm-datadog.prom").read_text()
DCGM = (FIXTURES / "dcgm-exporter-L4.prom").read_text()  # a real exporter's page, but no inference server's


def slow_model() -> Callable[[], str]:
    """A vLLM server whose every new request takes more than 10 s end to end (the +Inf bucket: p99 is the
    highest finite bound, 10 s, over the tests' 8 s SLO) with 40 requests waiting and its KV cache 93 % full."""
    n = itertools.count()

    def page() -> str:
        k = next(n) * 20  # 20 more requests per scrape
        return vllm_page(model="img", stop=k, waiting=40, running=8, kv=0.93,
                         e2e=(0, 0, 0, 0, k), ttft=(0, k, k, k), queue=(0, k))
    return page


def console(servers: list[str], size: tuple[int, int]) -> Any:
    settings = Settings(servers=tuple(servers), node_interval_s=0.25, interval_s=0.25,
                        thresholds={"e2e_p99_slo_s": 8.0})
    return create_app(settings, sources=["serving"], subscribe=False, tick_s=None), size


async def test_the_service_panel_names_each_models_state_at_200x60() -> None:
    """A model over its SLO in red with its queue and KV use, a real vLLM capture, a GPU exporter and a
    server that is down each get a row that says what they are, never a zero."""
    with MetricsNode(slow_model()) as slow, MetricsNode(VLLM) as real, MetricsNode(DCGM) as gpu_node, \
            MetricsNode("") as gone:
        gone.stop()
        app, size = console([slow.url, real.url, gpu_node.url, gone.url], (200, 60))
        async with app.run_test(size=size) as pilot:
            await wait_until(pilot, lambda: "10.0s" in screen_text(app) or "10s img" in screen_text(app),
                             timeout=15, what="the slow model's e2e p99")
            text = screen_text(app)
            assert "Service" in text
            row = next(ln for ln in text.splitlines() if " img " in ln and "1/1" in ln)
            assert "40" in row and "93" in row  # the queue and the KV %
            assert "not an inference server" in text
            assert "facebook/opt-125m" in text  # the real capture's model
            assert "down: " in text
            assert "no requests" in text  # the capture is served unchanged: no request in the window
            assert "e2e p99 10s img" in text or "e2e p99 10.0s img" in text  # the KPI strip's worst model
            assert "down 2/4" in text  # the strip's figures leave out the exporter and the dead server: it says so
            rows = {r.key: r for r in app.state.service_rows()}
            assert rows["img"].breach


@pytest.mark.parametrize("dead", [0, 1])
async def test_the_service_tab_and_the_kpi_strip_at_80x24(dead: int) -> None:
    """At 80x24 the KPI strip carries the worst e2e p99, the queue, and `down 1/2` when one replica of two is
    dead (its figures come from the one that answers); the Service tab holds the panel."""
    with MetricsNode(slow_model()) as slow, MetricsNode("") as gone:
        gone.stop()
        app, size = console([slow.url, gone.url][:1 + dead], (80, 24))
        async with app.run_test(size=size) as pilot:
            shown = ("e2e p99 10", "down 1/2") if dead else ("e2e p99 10",)
            await wait_until(pilot, lambda: all(x in screen_text(app) for x in shown), timeout=15,
                             what="the KPI strip's e2e p99 (and the replica down)")
            text = screen_text(app)
            assert "queue 40" in text
            assert ("down " in text) == bool(dead)
            assert all(len(line) <= 80 for line in text.splitlines())
            app.overview.query_one("#tabs").active = "tab-service"
            await wait_until(pilot, lambda: " img " in screen_text(app), timeout=5, what="the Service tab")


async def test_the_wall_carries_the_worst_e2e_p99_and_cycles_to_the_service_panel() -> None:
    """On a wall the worst model's e2e p99 is a red digit beside the queue, and the cycle reaches Service."""
    from textual.widgets import Digits

    with MetricsNode(slow_model()) as slow:
        settings = Settings(servers=(slow.url,), node_interval_s=0.25, interval_s=0.25, wall=True,
                            thresholds={"e2e_p99_slo_s": 8.0})
        app = create_app(settings, sources=["serving"], subscribe=False, tick_s=None, wall_cycle_s=3600)
        async with app.run_test(size=(200, 60)) as pilot:
            e2e = app.overview.query_one("#wall-e2e", Digits)
            await wait_until(pilot, lambda: e2e.value == "10.0", timeout=15, what="the wall's e2e p99")
            assert e2e.has_class("bad") and app.overview.query_one("#wall-queue", Digits).value == "40"
            assert "tab-service" in [f"tab-{p}" for p in app.overview.panels]
            app.overview.action_panel(3)  # GPUs -> heat -> tiers -> service
            await wait_until(pilot, lambda: " img " in screen_text(app), timeout=5, what="the Service panel")


def test_a_page_that_says_what_cannot_be_is_named_in_the_row_not_dimmed_like_an_unexported_figure() -> None:
    """A queue of -5 and a NaN e2e p99: `range` and `bad` in warning colour, and the row's state says why."""
    from collectors.serving_samples import Missing, ModelServing, ServingFigures
    from surgewatch.service import COLUMNS, MISSING_SHORT, model_row
    from surgewatch.thresholds import DIM, WARN, Thresholds

    assert set(MISSING_SHORT) == set(Missing)  # every reason a figure is absent has its few characters
    figures = ServingFigures(model="img", missing={"waiting": Missing.OUT_OF_RANGE, "e2e_p99_s": Missing.NOT_FINITE,
                                                   "ttft_p99_s": Missing.NOT_EXPORTED})
    row = model_row(ModelServing("img", ("vllm",), 1, 1, figures), Thresholds())
    cells = dict(zip(COLUMNS, row.cells, strict=True))
    assert (cells["queue"].text, cells["queue"].style) == ("range", WARN)
    assert (cells["e2e99"].text, cells["e2e99"].style) == ("bad", WARN)
    assert (cells["ttft99"].text, cells["ttft99"].style) == ("n/e", DIM)
    assert row.state == "page says what cannot be"
