"""The seams around what we borrow: the private internals we rely on exist, and without them the public
path still works (DataTable's own updates; the limiter through `client.fcall`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from quotas import held
from quotas.limiter import Limiter
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from tests.conftest import ROOT
from tui.testing import frozen_session, load_frozen, settle
from tui.widgets import live_table
from tui.widgets.gpu_table import GpuTable
from tui.widgets.live_table import LiveTable


def test_textual_has_every_datatable_internal_live_table_uses() -> None:
    """Every DataTable internal LiveTable relies on exists in the installed Textual (else: named here)."""
    missing = live_table.missing_internals()
    assert missing == [], (
        f"Textual's DataTable no longer has {', '.join(missing)}: tui/widgets/live_table.py falls back to the "
        "public DataTable updates; port the fast path to this Textual or raise the bound in pyproject.toml"
    )


async def test_redis_py_has_every_wire_internal_the_limiter_uses(redis_client: aioredis.Redis) -> None:
    """Every redis-py pool and connection internal the held connections use exists (else: named here)."""
    missing = held.missing_internals(redis_client)
    assert missing == [], (
        f"redis-py no longer has {', '.join(missing)}: quotas/held.py falls back to client.fcall; "
        "port the held connections to this redis-py or raise the bound in pyproject.toml"
    )
    assert held.HeldConnections.pool_of(redis_client) is redis_client.connection_pool


@pytest.fixture
def no_datatable_internals() -> Iterator[None]:
    """LiveTable as it runs on a Textual that lacks one of its internals."""
    saved = LiveTable.fast
    LiveTable.fast = False
    yield
    LiveTable.fast = saved


async def test_gpu_table_without_the_internals_uses_public_updates(no_datatable_internals: None) -> None:
    """With LiveTable's fast path off, the GPU table still shows every GPU and follows a changed value."""
    from dataclasses import replace

    from collectors.samples import Source
    from tui.testing import frozen_readings

    async with frozen_session((200, 60)) as (app, pilot):
        table = app.screen.query_one(GpuTable)
        assert table.row_count > 0
        key = next(r.key for r in app.state.rows if r.node == "local" and r.gpu.index == 0)  # rows come worst first
        first = table.get_row(key)
        readings = frozen_readings(app.clock())
        local = readings[Source.GPUS]
        assert local.sample is not None
        hot = replace(local.sample.gpus[0], temp_c=97.0)
        sample = replace(local.sample, gpus=(hot, *local.sample.gpus[1:]))
        readings[Source.GPUS] = replace(local, sample=sample)
        load_frozen(app, readings)
        await settle(pilot)
        assert "97" in " ".join(str(c) for c in table.get_row(key))
        assert table.get_row(key) != first


async def test_limiter_without_the_wire_internals_decides_through_fcall(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redis-py without the held connections' internals: the limiter goes through client.fcall, same answers."""
    monkeypatch.setattr(held, "CONNECTION_INTERNALS", (*held.CONNECTION_INTERNALS, "a_name_no_release_has"))
    assert held.HeldConnections.pool_of(redis_client) is None
    store = QuotaStore(redis_client)
    await store.init()
    await store.set("seam", QuotaSpec(2, 86400), actor="test", create=True)
    limiter = Limiter(redis_client)
    assert limiter._held is None
    got = [await limiter.check("seam", "u1") for _ in range(3)]
    assert [(d.allowed, d.reason) for d in got] == [(True, "ok"), (True, "ok"), (False, "user_quota")]
    await limiter.aclose()


def test_quotas_api_imports_lazily() -> None:
    """`from quotas import Limiter, ...` works, and a bare `import quotas` loads neither redis nor a submodule."""
    code = (
        "import sys, quotas\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'redis' or m.startswith('quotas.'))\n"
        "print(','.join(heavy))\n"
        "from quotas import Limiter, Decision, QuotaStore, Quota, QuotaSpec, Conflict, UnknownTier, Unreachable\n"
        "from quotas import Unavailable, AuthFailed, BrokenQuota, AuditEntry\n"
        "import quotas.limiter\n"
        "assert Limiter is quotas.limiter.Limiter\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import quotas loaded: {out.stdout.strip()}"


def test_unknown_name_is_an_attribute_error() -> None:
    """A name quotas does not export raises AttributeError, as for any module."""
    import quotas

    with pytest.raises(AttributeError, match="no attribute 'Limitr'"):
        _ = quotas.Limitr  # the point: a misspelt name (mypy allows it: quotas has a module __getattr__)
