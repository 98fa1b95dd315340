"""The what-if uses what is known: no admitted request ranks above the limit that was in force."""

from __future__ import annotations

import redis.asyncio as aioredis

from quotas.limiter import Limiter
from quotas.model import QuotaSpec
from quotas.store import QuotaStore
from tests.conftest import wait_away_from_window_edges

DAY = 86400


async def test_current_quota_would_refuse_nothing(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Users that used all of 20/1d: the what-if at 20/1d refuses 0 (ranks 17..20 sit in bucket 32, which
    the old even spread charged 12/16 of), and a lower limit still refuses what it should."""
    await wait_away_from_window_edges(redis_client)
    await store.set("free", QuotaSpec(20, DAY), actor="t")
    limiter = Limiter(redis_client)
    for user in ("a", "b", "c"):
        got = [await limiter.check("free", user) for _ in range(25)]
        assert sum(d.allowed for d in got) == 20
    at_current = await store.preview("free", QuotaSpec(20, DAY), minutes=1)
    assert (at_current.total_admitted, at_current.would_refuse) == (60, 0)
    lower = await store.preview("free", QuotaSpec(18, DAY), minutes=1)
    assert lower.would_refuse_user == 6  # ranks 19 and 20 of three users, exactly
    exact = await store.preview("free", QuotaSpec(10, DAY), minutes=1)
    assert exact.would_refuse_user == 30


async def test_shadow_mode_admits_any_rank_so_no_ceiling(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """In shadow mode every rank is admitted: the what-if at the shadow limit counts those above it."""
    await wait_away_from_window_edges(redis_client)
    await store.set("free", QuotaSpec(20, DAY, mode="shadow"), actor="t")
    limiter = Limiter(redis_client)
    for _ in range(32):
        assert (await limiter.check("free", "a")).allowed
    impact = await store.preview("free", QuotaSpec(20, DAY), minutes=1)
    assert (impact.total_admitted, impact.would_refuse_user) == (32, 12)
