"""Credentials in the URLs an operator gives (nodes, inference servers, Prometheus) are never shown: a token
in a URL's user field included. Real HTTP servers on loopback."""

from __future__ import annotations

import json

from collectors.nodes import redact_url
from sim.valkey import free_port
from surgewatch.snapshot import render_text, take_snapshot
from tests.test_serving_collector import vllm_page
from tui.testing import MetricsNode

SECRET = "secretPW1"


def test_a_bare_token_in_the_user_field_is_hidden_like_a_password() -> None:
    """`http://TOKEN@host/` shows as `http://***@host/`; a user with a password keeps the user, as before."""
    assert redact_url(f"http://{SECRET}@gpu-07:9400/metrics") == "http://***@gpu-07:9400/metrics"
    assert redact_url(f"https://{SECRET}@[::1]:8443/metrics?x=1") == "https://***@[::1]:8443/metrics?x=1"
    assert redact_url(f"http://ops:{SECRET}@gpu-07/metrics") == "http://ops:***@gpu-07/metrics"
    assert redact_url("http://gpu-07:9400/metrics") == "http://gpu-07:9400/metrics"


async def test_a_token_in_a_server_node_or_prometheus_url_is_in_no_snapshot() -> None:
    """The same tokened URL as an inference server and a node, then as Prometheus: in neither JSON nor text."""
    with MetricsNode(vllm_page(waiting=2)) as node:
        tokened = f"http://{SECRET}@127.0.0.1:{node.port}/metrics"
        scraped = await take_snapshot(redis_url=None, prefix="surgewatch:", nodes=[tokened], prometheus=None,
                                      local=False, servers=[tokened])
    shown = f"http://***@127.0.0.1:{node.port}/metrics"
    assert [r["url"] for r in scraped["serving"]["replicas"]] == [shown] and scraped["serving"]["models"]
    assert [n["url"] for n in scraped["nodes"]] == [shown]
    prom = await take_snapshot(redis_url=None, prefix="surgewatch:", nodes=[], local=False,
                               prometheus=f"http://{SECRET}@127.0.0.1:{free_port()}", servers=[tokened])
    assert "prometheus" in prom["errors"]
    for doc in (scraped, prom):
        assert SECRET not in json.dumps(doc) and SECRET not in render_text(doc)
