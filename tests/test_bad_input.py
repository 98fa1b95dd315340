"""Bad input is refused with exit 2 and a clear message, and nothing is written; `--read-only` writes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from sim.valkey import ValkeyProcess
from tests.conftest import ROOT


def sw(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `surgewatch` command line from this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "surgewatch.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def keys_and_audit(url: str) -> tuple[list[bytes], int]:
    """Every key on the server, and how many audit entries all tiers hold."""
    r = redis.Redis.from_url(url)
    keys: list[bytes] = sorted(r.keys("*"))  # type: ignore[arg-type]  # decode_responses off: bytes
    audits = sum(int(r.xlen(k)) for k in keys if r.type(k) == b"stream")
    return keys, audits


@pytest.fixture
def seeded(valkey: ValkeyProcess) -> str:
    """A server that `surgewatch init` seeded."""
    out = sw("--redis", valkey.url, "init")
    assert out.returncode == 0, out.stderr
    return valkey.url


@pytest.mark.parametrize(
    "argv",
    [
        ("quota", "set", "gw", "5/1h", "--create", "--as", "op"),
        ("quota", "set", "free", "3/1d", "--as", "op"),
        ("quota", "pause", "free", "--as", "op"),
        ("quota", "resume", "free", "--as", "op"),
        ("init",),
    ],
)
def test_read_only_refuses_every_writing_command(seeded: str, argv: tuple[str, ...]) -> None:
    """With the global --read-only a writing command exits 2 saying why, and Redis is exactly as before."""
    before = keys_and_audit(seeded)
    out = sw("--redis", seeded, "--read-only", *argv)
    assert out.returncode == 2
    assert "--read-only" in out.stderr and "nothing was done" in out.stderr
    assert keys_and_audit(seeded) == before


def test_read_only_still_reads(seeded: str) -> None:
    """--read-only refuses writes only: `quota list` still answers."""
    out = sw("--redis", seeded, "--read-only", "quota", "list")
    assert out.returncode == 0 and "free" in out.stdout


@pytest.mark.parametrize("spec", ["3/1d\n", "3/1d ", " 3/1d", "3 /1d", "3/1d\t"])
def test_quota_spec_with_whitespace_is_refused(seeded: str, spec: str) -> None:
    """A spec with a trailing newline or any whitespace (a script's stray echo) is refused: exit 2, no write."""
    before = keys_and_audit(seeded)
    out = sw("--redis", seeded, "quota", "set", "free", spec, "--as", "op")
    assert out.returncode == 2 and "invalid" in out.stderr
    assert keys_and_audit(seeded) == before


def test_overlong_actor_is_refused_without_echoing_it(seeded: str) -> None:
    """An --as over 64 characters: exit 2, nothing written, and the message quotes only a short prefix."""
    before = keys_and_audit(seeded)
    out = sw("--redis", seeded, "quota", "set", "free", "3/1d", "--as", "x" * 10_000)
    assert out.returncode == 2 and "1 to 64" in out.stderr
    assert len(out.stderr) < 300
    assert keys_and_audit(seeded) == before
    assert sw("--redis", seeded, "quota", "set", "free", "3/1d", "--as", "x" * 64).returncode == 0


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://127.0.0.1:{port}/abc", "database 'abc' is not a number"),
        ("redis://:hunter2@127.0.0.1:{port}/abc", "database 'abc' is not a number"),
        ("redis://127.0.0.1:99999/0", "port is not a number"),
        ("http://127.0.0.1:{port}/0", "unknown scheme"),
    ],
)
def test_bad_redis_url_is_refused_naming_the_problem(valkey: ValkeyProcess, url: str, words: str) -> None:
    """A Redis URL whose database or port is not a number exits 2 naming it (never silently db 0)."""
    out = sw("--redis", url.format(port=valkey.port), "quota", "set", "free", "3/1d", "--create", "--as", "op")
    assert out.returncode == 2 and words in out.stderr
    assert "hunter2" not in out.stderr
    assert keys_and_audit(valkey.url) == ([], 0)


def test_node_url_with_a_bad_port_names_the_url() -> None:
    """A --nodes URL with an invalid port exits 2 with the URL (password hidden) in the message."""
    out = sw("--nodes", "http://ops:s3cret@gpu-07:99999/metrics", "snapshot", "--json", "--no-local")
    assert out.returncode == 2
    assert "gpu-07:99999" in out.stderr and "port" in out.stderr and "s3cret" not in out.stderr


def test_rediss_against_a_plain_text_server_names_tls_at_once(valkey: ValkeyProcess) -> None:
    """rediss:// to a server speaking plain text: exit 2 naming TLS, before any timeout could run out."""
    import time

    started = time.monotonic()
    out = sw("--redis", f"rediss://127.0.0.1:{valkey.port}/0", "quota", "list")
    assert out.returncode == 2 and "TLS" in out.stderr and "redis://" in out.stderr
    assert time.monotonic() - started < 60  # a hang guard, not a timing claim: the message is what counts
    doc = sw("--redis", f"rediss://127.0.0.1:{valkey.port}/0", "snapshot", "--json", "--no-local")
    assert "TLS" in doc.stdout
