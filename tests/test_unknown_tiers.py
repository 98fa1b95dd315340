"""A gateway's misspelt tier is seen by name: counted (bounded) by the library, named in `snapshot` and the console's
banner; and every tier string handed to the Python limiter gets a decision, the same one the library gives."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from quotas import keys
from quotas.decisions import UNKNOWN_RETRY_S, UNKNOWN_TIER, Decision
from quotas.decisions import batch_decisions as _batch_decisions
from quotas.keys import Keys
from quotas.limiter import Limiter
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from surgewatch.settings import Settings
from surgewatch.snapshot import render_text, take_snapshot
from tests.cluster_fixtures import Cluster, cluster, flush  # noqa: F401  # the module's cluster fixture
from tests.test_rules_once import lua_number
from tui.app import create_app
from tui.testing import screen_text, wait_until
from tui.widgets.events_log import EventLog

K = Keys()
ODD = ["fre", "Free", "", "x" * 10_240, "ünïcödé", "a{b}", "\x1b]2;PWNED\x07", "free ", "y" * 300, "a" * 33]


def test_the_unknown_tier_rules_are_the_librarys() -> None:
    """The Python side of the unknown-tier rules is the library's: bucket, names kept, name bytes, lifetime, and
    the retry a refused request is told."""
    assert lua_number("UNKNOWN_BUCKET_S") == keys.UNKNOWN_BUCKET_S
    assert lua_number("UNKNOWN_KEEP") == keys.UNKNOWN_KEEP
    assert lua_number("UNKNOWN_NAME_MAX") == keys.UNKNOWN_NAME_MAX
    assert lua_number("UNKNOWN_TTL_S") == keys.UNKNOWN_TTL_S
    assert lua_number("PAUSED_RETRY_S") == UNKNOWN_RETRY_S


async def _library_says(r: aioredis.Redis, key: str) -> Decision:
    """What a gateway's raw FCALL gets for this quota key."""
    (d,) = _batch_decisions("-1 " + " ".join((await r.fcall("sw_check_many", 1, key, "u", "1")).decode().split()[1:]))
    return d


@pytest.mark.parametrize("hold", [16, 0], ids=["held", "pool"])
async def test_every_tier_string_gets_the_librarys_decision(
    store: QuotaStore, redis_client: aioredis.Redis, hold: int
) -> None:
    """Misspelt, uppercase, empty, 10 kB, unicode, braces, escape sequences: `check` and `check_many` answer
    unknown_tier (never an exception), equal to what the library answers a gateway for the same name."""
    lim = Limiter(redis_client, hold=hold)
    try:
        missing = await _library_says(redis_client, K.quota("nosuchtier"))
        assert missing == UNKNOWN_TIER
        for name in ODD:
            d = await lim.check(name, "u")
            assert d == UNKNOWN_TIER, name[:20]
            if keys.odd_key(K, name) is not None:
                assert d == await _library_says(redis_client, K.quota(name))
        many = await lim.check_many([(n, "u", 1) for n in ODD] + [("free", "u", 1)])
        assert many[:-1] == [UNKNOWN_TIER] * len(ODD) and many[-1].allowed
        await lim.record("", "blocked")  # nothing to count, and no exception
    finally:
        await lim.aclose()


async def _gateway(r: aioredis.Redis, tier: str, n: int, cost: int = 1) -> None:
    """A gateway in another language: raw FCALLs of a tier that has no quota."""
    for _ in range(n):
        assert (await r.fcall("sw_check_many", 1, K.quota(tier), "u", str(cost))).split()[1] == b"5"


async def test_a_misspelt_tier_is_named_in_snapshot_and_the_console(
    valkey: ValkeyProcess, store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """64 requests for `fre` from a gateway and 3 for `Free` from the Python limiter: `snapshot --json` lists both
    by name with their refusals, the table says "gateways ask for tier 'fre', which has no quota", and so does the
    console's banner."""
    await _gateway(redis_client, "fre", 64)
    lim = Limiter(redis_client)
    for _ in range(3):
        await lim.check("Free", "u")
    await lim.aclose()
    doc = await take_snapshot(redis_url=valkey.url, prefix=K.prefix, nodes=(), prometheus=None, local=False)
    unknown = {u["tier"]: u for u in doc["unknown_tiers"]}
    assert unknown["fre"]["refused_1m"] == 64 and unknown["Free"]["refused_1m"] == 3
    assert list(unknown) == ["fre", "Free"]  # most refused first
    assert "gateways ask for tier 'fre', which has no quota" in unknown["fre"]["message"]
    assert "gateways ask for tier 'fre', which has no quota" in render_text(doc)
    assert "free" not in unknown  # a tier with a quota is never unknown
    app = create_app(Settings(redis_url=valkey.url, interval_s=0.2, read_only=True), sources=("traffic",))
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_until(pilot, lambda: "gateways ask for tier 'fre'" in " ".join(screen_text(app).split()),
                         what="the unknown tier named", timeout=20)
        events = app.overview.query_one("#events", EventLog).texts
        assert sum("gateways ask for tier 'fre'" in e for e in events) == 1  # one event when it starts


async def test_the_names_kept_are_bounded_to_the_most_refused(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """A flood of 40 made-up names after one heavy misspelling: each 10 s bucket keeps at most 16 names, and the
    heavy one stays; names are cut at 64 bytes."""
    await _gateway(redis_client, "heavy", 1, cost=500)
    for i in range(40):
        await _gateway(redis_client, f"made-up-{i}", 1)
    await _gateway(redis_client, "z" * 200, 1)
    buckets = [k async for k in redis_client.scan_iter(match=f"{K.prefix}unknown:*")]
    assert buckets
    kept = [await redis_client.zrange(k, 0, -1) for k in buckets]
    assert all(len(names) <= keys.UNKNOWN_KEEP for names in kept)
    assert any(b"heavy" in names for names in kept)
    assert any(n == b"z" * keys.UNKNOWN_NAME_MAX for names in kept for n in names)  # cut, still counted
    assert all(len(n) <= keys.UNKNOWN_NAME_MAX for names in kept for n in names)
    for k in buckets:
        assert 0 < await redis_client.ttl(k) <= keys.UNKNOWN_TTL_S


async def test_on_a_cluster_an_unknown_tier_is_still_decided(cluster: Cluster) -> None:  # noqa: F811
    """On Redis Cluster the name bucket lives in another slot: the library's write of it is refused, yet every
    decision for an unknown name stands (unknown_tier) and known tiers are decided as ever."""
    from quotas.connect import open_client

    flush(cluster)
    client = await open_client(cluster.url)
    lim = Limiter(client)
    try:
        await QuotaStore(client).init()
        assert [d.reason for d in await lim.check_many([("fre", "u", 1), ("free", "u", 1)])] == ["unknown_tier", "ok"]
        assert (await lim.check("fre", "u")).reason == "unknown_tier"
    finally:
        await lim.aclose()
        await client.aclose()
