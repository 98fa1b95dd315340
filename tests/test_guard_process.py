"""`surgewatch guard` as a process on the demo's world (real nodes' /metrics, real Redis): killed mid-surge,
its overrides expire and the tiers fall back by themselves; bad policies exit 2 before anything is read."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from quotas.codec import EXPIRED_BY
from quotas.store import QuotaStore
from tests.conftest import ROOT

SURGEWATCH = [sys.executable, "-m", "surgewatch.cli"]
SHORT_POLICY = """
[guard]
mode = "auto"
override_s = 4
cooldown_s = 60
[guard.signals]
util_pct = { target = 90, release = 80, sustain_s = 2 }
"""


async def until(predicate: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_a_guard_killed_mid_surge_leaves_overrides_that_expire_by_themselves(tmp_path: Path) -> None:
    """The guard caps free under its own name for 4 s; after SIGKILL nobody renews it and free is 20/1d again."""
    world = subprocess.Popen([*SURGEWATCH, "demo", "--headless", "--duration", "120", "--seed", "3"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    guard = None
    try:
        assert world.stderr is not None
        # "... join with: surgewatch --redis URL --nodes @FILE --servers @FILE": the guard joins the same way
        argv = shlex.split(world.stderr.readline().split("join with: ")[1])
        url = argv[argv.index("--redis") + 1]
        policy = tmp_path / "policy.toml"
        policy.write_text(SHORT_POLICY)
        guard = subprocess.Popen([*SURGEWATCH, *argv[1:], "guard", "--policy", str(policy)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        client = aioredis.Redis.from_url(url, socket_timeout=5)
        store = QuotaStore(client)
        try:
            async def shed() -> object:
                q = await store.get("free")
                return q is not None and q.updated_by.startswith("guard@") and q

            q = await until(shed, 60, "the guard's override")
            assert q.tier_cap_rps is not None and q.expires_at is not None  # the built-in lever for free: a cap
            guard.send_signal(signal.SIGKILL)
            guard.wait(10)

            async def fell_back() -> object:
                q = await store.get("free")
                return q is not None and q.updated_by == EXPIRED_BY and q

            back = await until(fell_back, 30, "the override's expiry")
            assert (back.limit, back.window_s, back.tier_cap_rps, back.expires_at) == (20, 86400, None, None)
            kinds = [(e.actor.split("@")[0], e.kind) for e in reversed(await store.history("free", count=10))]
            assert ("guard", "set") in kinds and kinds[-1] == ("surgewatch (override expired)", "expired")
        finally:
            await client.aclose()
    finally:
        for p in (guard, world):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize(("policy", "message"), [
    ("[guard]\ncooldown = 3\n", "guard: unknown setting 'cooldown'"),
    ("[guard.tiers]\nfree = { floor = \"none\" }\nplus = { floor = \"1/1d\" }\n", "guard.tiers.free.floor"),
    ("cooldown_s = 3\n", "no [guard] table"),
    ("[guard\n", "not TOML"),
    (b"\xff\xfe[\x00g\x00", "not TOML (not UTF-8 text)"),
    ('[guard]\norder = ["free"]\n[guard.tiers]\nfree = { floor = "1/1d" }\n"\\u001b[2Jzz" = { floor = "1/1d" }\n',
     "guard.tiers.\\x1b[2Jzz: not in guard.order"),
])
def test_a_bad_policy_exits_2_naming_the_setting(tmp_path: Path, policy: str | bytes, message: str) -> None:
    """Exit 2 and a message naming the setting; nothing is started."""
    f = tmp_path / "p.toml"
    f.write_bytes(policy if isinstance(policy, bytes) else policy.encode())
    out = subprocess.run([*SURGEWATCH, "--redis", "redis://127.0.0.1:1/0", "guard", "--policy", str(f)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr and out.stdout == ""


@pytest.mark.parametrize(("env", "policy", "message"), [
    ({"SURGEWATCH_NODE_INTERVAL": "30"}, "", "[guard] max_gpu_age_s = 15 s is less than a reading's age between two "
     "scrapes, 33 s (node_interval_s 30 + scrape timeout 2 + interval_s 1): it would read the GPUs stale"),
    ({}, "[guard]\nmax_serving_age_s = 6\n", "[guard] max_serving_age_s = 6 s is less than a reading's age between "
     "two scrapes, 8 s (node_interval_s 5 + scrape timeout 2 + interval_s 1): it would read the servers saturated"),
])
def test_a_staleness_bound_shorter_than_the_gap_between_scrapes_is_refused(
        tmp_path: Path, env: dict[str, str], policy: str, message: str) -> None:
    """dcgm-exporter's own 30 s as node_interval_s would freeze the default guard, a short serving bound shed."""
    f = tmp_path / "p.toml"
    f.write_text(policy or "[guard]\n")
    out = subprocess.run([*SURGEWATCH, "--redis", "redis://127.0.0.1:1/0", "--nodes", "http://127.0.0.1:1/metrics",
                          "--servers", "http://127.0.0.1:2/metrics", "guard", "--policy", str(f)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert out.returncode == 2 and message in out.stderr and out.stdout == "", out.stderr


@pytest.mark.parametrize("read_only", [False, True])
def test_a_read_only_guard_writes_nothing_not_even_its_status(store: QuotaStore, read_only: bool) -> None:
    """`surgewatch --read-only guard` watches as a dry run and writes no key; without it, its status key appears
    by its first look."""
    import redis

    kw = store.client.connection_pool.connection_kwargs
    redis_url = f"redis://{kw['host']}:{kw['port']}/0"
    flags = ["--read-only"] if read_only else []
    proc = subprocess.Popen([*SURGEWATCH, "--redis", redis_url, *flags, "guard", "--dry-run"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        started = proc.stdout.readline()
        assert "starts (dry run" in started and ("nothing written" in started) == read_only, started
        looked = proc.stdout.readline()  # its first look's state (frozen here: no GPU is watched), then published
        assert " guard: " in looked, looked
        with redis.Redis.from_url(redis_url) as r:
            deadline = time.monotonic() + 10  # a hang guard: the status is written right after the look is said
            while not read_only and not r.exists("surgewatch:guard:status") and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0 if not read_only else 2)  # two more looks: still nothing
            assert bool(r.exists("surgewatch:guard:status")) is not read_only
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_a_guard_waiting_for_redis_says_so_once_not_every_attempt() -> None:
    """Started with Redis down, the guard retries every 2 s: one "not reachable yet" line over three attempts."""
    from sim.valkey import free_port

    proc = subprocess.Popen([*SURGEWATCH, "--redis", f"redis://127.0.0.1:{free_port()}/0", "guard", "--dry-run"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(5)  # three attempts' time: what is asserted is what it said meanwhile, not how fast
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert out.count("Redis not reachable yet") == 1, out
