"""Backup and restore of quotas from the command line: export, lose everything, import, as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import redis.asyncio as aioredis

from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from tests.conftest import ROOT


def sw(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real `surgewatch` command line from this interpreter."""
    return subprocess.run([sys.executable, "-m", "surgewatch.cli", "--redis", url, *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


async def test_export_flush_import_brings_every_quota_back_audited(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """export, FLUSHALL, import: every quota back as it was (an override with the time it has left), one audit
    entry per tier with the reason; a second import changes nothing."""
    await store.set("free", QuotaSpec(3, 86400, tier_cap_rps=50), actor="alice", reason="surge")
    await store.set("plus", QuotaSpec(100, 86400, mode="shadow"), actor="alice", for_s=3600)
    out = sw(valkey.url, "quota", "export")
    assert out.returncode == 0, out.stderr
    backup = tmp_path / "quotas.json"
    backup.write_text(out.stdout)
    saved = {d["tier"]: d for d in json.loads(out.stdout)}
    await redis_client.flushall()
    assert sw(valkey.url, "quota", "list").returncode == 1  # nothing at all: said, not an empty calm table
    done = sw(valkey.url, "quota", "import", str(backup), "--as", "bob", "--reason", "after the restart")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": written") == 5
    quotas = {q.tier: q for q in await store.list()}
    assert (quotas["free"].spec, quotas["free"].tier_cap_rps) == ("3/1d", 50)
    plus = quotas["plus"]
    assert plus.mode == "shadow" and plus.expires_at is not None
    saved_until = datetime.fromisoformat(saved["plus"]["expires_at"].replace("Z", "+00:00")).timestamp()
    assert abs(plus.expires_at - saved_until) <= 2  # the time it had left, not a fresh hour nor permanent
    for tier in quotas:
        (entry,) = await store.history(tier, count=5)
        assert (entry.actor, entry.reason) == ("bob", "after the restart")
    again = sw(valkey.url, "quota", "import", str(backup), "--as", "bob")
    assert again.returncode == 0 and again.stdout.count(": unchanged") == 5
    for tier in quotas:
        assert len(await store.history(tier, count=5)) == 1, tier  # nothing written the second time


async def test_only_missing_restores_just_the_lost_tier(valkey: ValkeyProcess, store: QuotaStore,
                                                        redis_client: aioredis.Redis) -> None:
    """--only-missing writes the tier that lost its quota and leaves a tier changed since the backup alone."""
    backup = sw(valkey.url, "quota", "export").stdout
    await store.set("free", QuotaSpec(1, 86400), actor="carol", reason="newer than the backup")
    await redis_client.delete("surgewatch:{pro}:quota")
    out = sw(valkey.url, "quota", "import", "-", "--only-missing", "--as", "bob", stdin=backup)
    assert out.returncode == 0, out.stderr
    assert "tier pro: written" in out.stdout and "tier free: skipped (exists)" in out.stdout
    assert (await store.get("free")).limit == 1  # type: ignore[union-attr]  # exists: asserted just before
    pro = await store.get("pro")
    assert pro is not None and pro.spec == "600/1h" and pro.version >= 2  # versions go on after a deletion


async def test_malformed_backup_writes_nothing(valkey: ValkeyProcess, store: QuotaStore,
                                               redis_client: aioredis.Redis, tmp_path: Path) -> None:
    """Not JSON, a field missing, a wrong type, a bad value or a key twice: exit 2 naming it, nothing written."""
    good = json.loads(sw(valkey.url, "quota", "export").stdout)
    await redis_client.flushall()
    cases = {
        "not json": "{oops",
        "missing limit": json.dumps([{k: v for k, v in good[0].items() if k != "limit"}]),
        "wrong type": json.dumps([{**good[0], "limit": "3"}]),
        "bad value": json.dumps([{**good[1], "window_s": 0}, good[0]]),
        "twice": json.dumps([good[0], good[0]]),
        # json keeps the last of a repeated key: the write would go to the other tier
        "a key twice": json.dumps([good[0]])[:-2] + ', "tier": "plus"}]',
    }
    for why, text in cases.items():
        path = tmp_path / "bad.json"
        path.write_text(text)
        out = sw(valkey.url, "quota", "import", str(path), "--as", "bob")
        assert out.returncode == 2, (why, out.stderr)
        assert str(path) in out.stderr or "entry" in out.stderr, (why, out.stderr)
        assert await redis_client.keys("*") == [], why
