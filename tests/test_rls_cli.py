"""`surgewatch rls` as an operator starts and stops it: the [rls] table, ports, signals, and the README."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from tests.conftest import ROOT
from tests.envoy_fixtures import SITE_CONFIG, RlsProcess


def rls(url: str, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"SURGEWATCH_CONFIG": str(config)} if config else {}
    return subprocess.run([sys.executable, "-m", "surgewatch.cli", "--redis", url, "rls", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_a_misspelt_rls_key_is_refused_naming_it(tmp_path: Path, valkey: ValkeyProcess) -> None:
    """`tier_kee` in [rls]: exit 2 and the message names the key and the keys there are; nothing listens."""
    config = tmp_path / "surgewatch.toml"
    config.write_text('[rls]\ntier_kee = "plan"\n')
    out = rls(valkey.url, "--port", "0", config=config)
    assert out.returncode == 2 and out.stdout == ""
    assert "'tier_kee'" in out.stderr and "tier_key" in out.stderr


def test_a_bad_fail_open_tier_is_refused(tmp_path: Path, valkey: ValkeyProcess) -> None:
    """A fail_open list naming an impossible tier is bad input, exit 2, before anything starts."""
    config = tmp_path / "surgewatch.toml"
    config.write_text('[rls]\nfail_open = ["Free Tier"]\n')
    out = rls(valkey.url, config=config)
    assert out.returncode == 2 and "[rls]" in out.stderr


def test_redis_unreachable_at_start_exits_4(valkey: ValkeyProcess) -> None:
    """No Redis at the URL: exit 4 with the address and no listener."""
    valkey.stop()
    out = rls(valkey.url, "--port", "0", "--metrics-port", "0")
    assert out.returncode == 4 and f"{valkey.port}" in out.stderr


def test_a_port_in_use_exits_1(store: QuotaStore, valkey: ValkeyProcess) -> None:
    """The gRPC port held by another listener (this test's own socket): exit 1 naming it, never sharing it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = rls(valkey.url, "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0")
    assert out.returncode == 1 and f"127.0.0.1:{port}" in out.stderr


def test_sigterm_stops_it_cleanly(store: QuotaStore, valkey: ValkeyProcess) -> None:
    """SIGTERM, as a supervisor stops it: exit 0."""
    process = RlsProcess(valkey.url).start()
    assert process.terminate() == 0


def test_the_readme_quotes_the_tested_envoy_config_verbatim() -> None:
    """The README's Envoy configuration is docs/envoy-rls.yaml, byte for byte: what the tests run."""
    assert "```yaml\n" + SITE_CONFIG.read_text() + "```" in (ROOT / "README.md").read_text()


def test_the_rls_table_is_read_from_the_config_file() -> None:
    """[rls] keys land in Settings.rls; fail_open takes a list of tiers or true."""
    from surgewatch.settings import RlsSettings, resolve

    table = {"tier_key": "plan", "user_key": "account", "default_tier": "free", "fail_open": ["free", "pro"]}
    assert resolve(env={}, file={"rls": table}).rls == RlsSettings("plan", "account", "free", "anonymous",
                                                                   ("free", "pro"))
    assert resolve(env={}, file={"rls": {"fail_open": True}}).rls.fail_open is True
    assert resolve(env={}, file={}).rls == RlsSettings()
    batching = resolve(env={}, file={"rls": {"batch_window_ms": 0.5, "batch_limit": 16}}).rls
    assert (batching.batch_window_ms, batching.batch_limit) == (0.5, 16)


@pytest.mark.parametrize("line", ['batch_window_ms = "fast"', "batch_window_ms = 500", "batch_limit = 0",
                                  "batch_limit = 1.5"])
def test_a_bad_batch_setting_is_refused(tmp_path: Path, valkey: ValkeyProcess, line: str) -> None:
    """A batch window that is not 0-100 ms, or a batch limit that is not a whole number >= 1: exit 2, naming it."""
    config = tmp_path / "surgewatch.toml"
    config.write_text(f"[rls]\n{line}\n")
    out = rls(valkey.url, "--port", "0", config=config)
    assert out.returncode == 2 and out.stdout == "" and line.split()[0] in out.stderr


async def test_the_descriptor_keys_come_from_the_rls_table(store: QuotaStore, valkey: ValkeyProcess) -> None:
    """With tier_key = "plan" and user_key = "account", those entries decide; a `tier` entry means nothing."""
    import grpc
    from envoy.extensions.common.ratelimit.v3.ratelimit_pb2 import RateLimitDescriptor
    from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

    def ask(**entries: str) -> rls_pb2.RateLimitRequest:
        d = RateLimitDescriptor(entries=[RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries.items()])
        return rls_pb2.RateLimitRequest(domain="surgewatch", descriptors=[d])

    with RlsProcess(valkey.url, '[rls]\ntier_key = "plan"\nuser_key = "account"\n') as process:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{process.port}") as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            mapped = await stub.ShouldRateLimit(ask(plan="free", account="ann"), timeout=5)
            unmapped = await stub.ShouldRateLimit(ask(tier="free", user="ann"), timeout=5)
    assert mapped.overall_code == rls_pb2.RateLimitResponse.OK
    assert {h.key: h.value for h in mapped.response_headers_to_add}["x-surgewatch-reason"] == "ok"
    assert {h.key: h.value for h in unmapped.response_headers_to_add}["x-surgewatch-reason"] == "unknown_tier"
