"""Two real processes racing 200 compare-and-set updates each on one tier: nothing lost, nothing extra."""

from __future__ import annotations

import json
import subprocess
import sys

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
    entries = await redis_client.xrange(Keys().audit("free"))
    mine = [e for e in entries if e[1][b"actor"].startswith(b"proc")]
    assert len(mine) == successes
    assert sorted(int(f[b"version"]) for _, f in mine) == list(range(base.version + 1, final.version + 1))
    print("conflicts seen:", [r["conflicts"] for r in results])
