"""Two real processes racing 200 compare-and-set updates each on one tier: nothing lost, nothing extra."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import cast

import redis.asyncio as aioredis

from quotas.keys import Keys
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from tests.conftest import ROOT

UPDATES = 200

WORKER = r"""
import asyncio, json, sys
import redis.asyncio as aioredis
from quotas.errors import Conflict
from quotas.model import QuotaSpec
from quotas.store import QuotaStore

async def main(url, name, n):
    client = aioredis.Redis.from_url(url, socket_timeout=10)
    store = QuotaStore(client)
    await client.incr("barrier")
    while int(await client.get("barrier")) < 2:  # start together so the two really race
        await asyncio.sleep(0.005)
    ok = conflicts = 0
    while ok < n:
        q = await store.get("free")
        try:
            await store.set("free", QuotaSpec(q.limit + 1, q.window_s), actor=name, expect_version=q.version)
            ok += 1
        except Conflict:
            conflicts += 1
    await client.aclose()
    print(json.dumps({"ok": ok, "conflicts": conflicts}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_cas_no_update_lost(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """Final version = 1 + successes, limit grew by exactly the successes, one audit entry per success."""
    store = QuotaStore(redis_client)
    await store.init()
    await store.set("free", QuotaSpec(0, 86400), actor="t")
    base = await store.get("free")
    assert base is not None
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, valkey.url, f"proc{i}", str(UPDATES)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    successes = sum(r["ok"] for r in results)
    assert successes == 2 * UPDATES
    final = await store.get("free")
    assert final is not None
    assert final.version == base.version + successes
    assert final.limit == successes  # every success saw the previous one's value: no lost update
    # decode_responses is off (bytes), and XRANGE answers a list, never nil
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis_client.xrange(Keys().audit("free")))
    mine = [e for e in entries if e[1][b"actor"].startswith(b"proc")]
    assert len(mine) == successes
    assert sorted(int(f[b"version"]) for _, f in mine) == list(range(base.version + 1, final.version + 1))


# The real CLI entry point (surgewatch.cli.main) in its own process, imported first, then run when told to: every
# process reads the quota before any writes, so all but one lose the compare-and-set and must retry.
CLI = r"""
import sys
from surgewatch.cli import main
print("ready", flush=True)
sys.stdin.readline()
sys.exit(main(sys.argv[1:]))
"""


async def fcalls_waiting(client: aioredis.Redis) -> int:
    """Clients whose FCALL the server holds (CLIENT PAUSE WRITE postpones it, reads still run)."""
    return sum(c.get("cmd") == "fcall" for c in await client.client_list())


async def test_concurrent_cli_sets_retry_their_compare_and_set(valkey: ValkeyProcess,
                                                                redis_client: aioredis.Redis) -> None:
    """Three `quota set` processes without --expect-version that all read version v before any writes: one
    wins, the others lose the compare-and-set, re-read and retry, so all exit 0, each change is one version,
    and a field one of them set (the cap) is kept by the others' re-read rather than overwritten."""
    import asyncio

    store = QuotaStore(redis_client)
    await store.init()
    base = await store.get("pro")
    assert base is not None and base.tier_cap_rps is None
    argvs = [["--redis", valkey.url, "quota", "set", "pro", "50/1h", "--tier-cap", "7", "--as", "capper"]] + [
        ["--redis", valkey.url, "quota", "set", "pro", f"{60 + i}/1h", "--as", f"p{i}"] for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", CLI, *argv], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        await redis_client.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
        try:
            for n, p in enumerate(procs, 1):  # the capper's write is held first: it is the one that wins
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
                deadline = asyncio.get_running_loop().time() + 30  # a hang guard, not a measurement
                while await fcalls_waiting(redis_client) < n:
                    assert p.poll() is None and asyncio.get_running_loop().time() < deadline, p.communicate()
                    await asyncio.sleep(0.01)
        finally:
            await redis_client.execute_command("CLIENT", "UNPAUSE")
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    final = await store.get("pro")
    assert final is not None and final.version == base.version + 3
    entries = await store.history("pro", count=3)
    assert sorted(e.actor for e in entries) == ["capper", "p0", "p1"]
    assert sorted(e.version for e in entries) == [base.version + 1, base.version + 2, base.version + 3]
    for e in entries:
        assert e.old is not None and e.new is not None and e.old.version == e.version - 1
        # each write was computed from the version it replaced: the cap, once set, is kept by the others
        if e.actor != "capper":
            assert e.new.tier_cap_rps == e.old.tier_cap_rps, (e.actor, e.old, e.new)
    assert final.tier_cap_rps == 7
