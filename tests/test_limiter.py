"""The limiter against a real Valkey: exact admission, the usage semantics, every refusal reason."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
import redis.asyncio as aioredis

from quotas.errors import BrokenQuota
from quotas.keys import COUNTER_TTL_S, Keys
from quotas.limiter import Decision, Limiter
from quotas.model import QuotaError, QuotaSpec
from quotas.store import QuotaStore
from tests.conftest import wait_away_from_window_edges

DAY = 86400


@pytest.fixture
def limiter(redis_client: aioredis.Redis) -> Limiter:
    """A limiter on the test's server."""
    return Limiter(redis_client)


async def server_now(client: aioredis.Redis) -> float:
    """The server's clock (the limiter's), in epoch seconds."""
    secs, usecs = await client.time()
    return int(secs) + int(usecs) / 1e6


async def settle_in_second(client: aioredis.Redis, before: float = 0.6) -> None:
    """Wait until the server clock is early in a second, so a short burst falls in one second."""
    while True:
        secs, usecs = await client.time()
        frac = usecs / 1e6
        if frac < before and int(secs) % 60 < 58:
            return
        await asyncio.sleep(max(0.0, 1.02 - frac))


async def test_n_admitted_then_refused(store: QuotaStore, limiter: Limiter, away_from_day_edges: float) -> None:
    """With 3/1d a user gets exactly 3 admissions, then user_quota refusals with retry_after > 0."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    got = [await limiter.check("free", "alice") for _ in range(5)]
    assert [d.allowed for d in got] == [True, True, True, False, False]
    assert [d.remaining for d in got[:3]] == [2, 1, 0]
    assert got[3].reason == "user_quota" and got[3].remaining == 0 and got[3].limit == 3
    assert 0 < got[3].retry_after_s <= DAY


async def test_daily_window_resets_at_utc_midnight(store: QuotaStore, limiter: Limiter, redis_client: aioredis.Redis,
                                                   away_from_day_edges: float) -> None:
    """A refusal of a daily quota says to retry at the next 00:00 UTC, and the usage key expires then."""
    await store.set("free", QuotaSpec(1, DAY), actor="t")
    await limiter.check("free", "bob")
    refused = await limiter.check("free", "bob")
    secs, usecs = await redis_client.time()
    now = secs + usecs / 1e6
    assert abs(refused.retry_after_s - ((secs // DAY + 1) * DAY - now)) < 1.0
    ttl = await redis_client.ttl(Keys().usage("free", DAY, secs // DAY, "bob"))
    assert abs(ttl - ((secs // DAY + 1) * DAY + 60 - secs)) <= 2


async def test_users_are_independent(store: QuotaStore, limiter: Limiter, away_from_day_edges: float) -> None:
    """One user's exhausted quota does not touch another's."""
    await store.set("free", QuotaSpec(2, DAY), actor="t")
    for _ in range(3):
        await limiter.check("free", "alice")
    assert (await limiter.check("free", "alice")).allowed is False
    assert [(await limiter.check("free", "carol")).allowed for _ in range(3)] == [True, True, False]


async def test_raise_and_lower_apply_to_counted_usage(store: QuotaStore, limiter: Limiter,
                                                      away_from_day_edges: float) -> None:
    """Used 3 of 3/1d, raised to 5/1d: exactly 2 more at once; lowered to 1/1d: refused at once."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    assert all([(await limiter.check("free", "u")).allowed for _ in range(3)])
    assert (await limiter.check("free", "u")).reason == "user_quota"
    await store.set("free", QuotaSpec(5, DAY), actor="t")
    assert [(await limiter.check("free", "u")).allowed for _ in range(3)] == [True, True, False]
    await store.set("free", QuotaSpec(20, DAY), actor="t")
    assert (await limiter.check("free", "v")).remaining == 19
    await store.set("free", QuotaSpec(1, DAY), actor="t")
    d = await limiter.check("free", "v")
    assert (d.allowed, d.reason, d.remaining) == (False, "user_quota", 0)


async def test_refused_requests_consume_nothing(
    store: QuotaStore, limiter: Limiter, away_from_day_edges: float
) -> None:
    """Requests refused while paused do not count: after resume the full quota is there."""
    await store.set("free", QuotaSpec(2, DAY), actor="t")
    await store.pause("free", actor="t")
    d = await limiter.check("free", "u")
    assert (d.allowed, d.reason) == (False, "paused") and d.retry_after_s > 0
    await store.resume("free", actor="t")
    assert [(await limiter.check("free", "u")).allowed for _ in range(3)] == [True, True, False]


async def test_refusals_take_nothing_whichever_way_the_tier_counts(store: QuotaStore, limiter: Limiter,
                                                                  redis_client: aioredis.Redis,
                                                                  away_from_day_edges: float) -> None:
    """A user at the limit stays exactly at it through refusals between other users' admissions (each counted,
    then taken back in the same call); a raise then admits exactly the difference."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    day = int(away_from_day_edges) // DAY
    usage = Keys().usage("free", DAY, day, "alice")
    assert [(await limiter.check("free", "alice")).allowed for _ in range(3)] == [True, True, True]
    for _ in range(2):
        assert (await limiter.check("free", "bob")).allowed  # an admission: the tier counts first again
        assert [(await limiter.check("free", "alice")).reason for _ in range(3)] == ["user_quota"] * 3
        assert await redis_client.get(usage) == b"3"
    await store.set("free", QuotaSpec(4, DAY), actor="t")
    assert [(await limiter.check("free", "alice")).allowed for _ in range(2)] == [True, False]
    assert await redis_client.get(usage) == b"4" and 0 < await redis_client.ttl(usage) <= DAY + 60


async def test_a_tier_that_refuses_much_reads_usage_first(store: QuotaStore, limiter: Limiter,
                                                          redis_client: aioredis.Redis,
                                                          away_from_day_edges: float) -> None:
    """Refusals are counted and taken back (DECRBY) until they are a large share of the tier's recent decisions;
    then the tier reads usage first and a refusal writes only its counter; admissions turn it back; usage stays
    exact."""

    async def calls(*names: str) -> list[int]:
        stats = await redis_client.info("commandstats")
        return [stats.get(f"cmdstat_{n}", {}).get("calls", 0) for n in names]

    await store.set("free", QuotaSpec(1, DAY), actor="t")
    day = int(away_from_day_edges) // DAY
    assert (await limiter.check("free", "alice")).allowed
    await redis_client.config_resetstat()
    assert [(await limiter.check("free", "alice")).reason for _ in range(20)] == ["user_quota"] * 20
    taken_back, read = await calls("decrby", "get")
    assert 0 < taken_back < 20 and taken_back + read == 20  # counted first, then read first
    assert await redis_client.get(Keys().usage("free", DAY, day, "alice")) == b"1"
    await redis_client.config_resetstat()
    assert all([(await limiter.check("free", f"new{i}")).allowed for i in range(30)])
    read, counted = await calls("get", "incrby")
    assert 0 < read < 30 and read + counted == 30  # read first, then counted first again
    assert (await limiter.check("free", "alice")).reason == "user_quota"
    assert await redis_client.get(Keys().usage("free", DAY, day, "alice")) == b"1"


async def test_replies_name_the_current_limit_after_a_change(store: QuotaStore, limiter: Limiter,
                                                              away_from_day_edges: float) -> None:
    """Admissions and refusals after a quota change carry the new limit, also where `remaining` repeats one the
    library already replied with under the old limit (its reply strings are kept per quota)."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    got = [await limiter.check("free", "a") for _ in range(4)]
    assert [(d.limit, d.remaining, d.reason) for d in got] == [(3, 2, "ok"), (3, 1, "ok"), (3, 0, "ok"),
                                                               (3, 0, "user_quota")]
    await store.set("free", QuotaSpec(4, DAY), actor="t")
    got = [await limiter.check("free", "b") for _ in range(2)] + [await limiter.check("free", "a") for _ in range(2)]
    assert [(d.limit, d.remaining, d.reason) for d in got] == [(4, 3, "ok"), (4, 2, "ok"), (4, 0, "ok"),
                                                               (4, 0, "user_quota")]


async def test_junk_in_a_usage_key_counts_from_zero(store: QuotaStore, limiter: Limiter,
                                                    redis_client: aioredis.Redis, away_from_day_edges: float) -> None:
    """A usage key overwritten by hand with a non-number is counted from zero and rewritten with its expiry."""
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    day = int(away_from_day_edges) // DAY
    usage = Keys().usage("free", DAY, day, "u")
    await redis_client.set(usage, "lots")
    d = await limiter.check("free", "u")
    assert (d.allowed, d.remaining) == (True, 2)
    assert await redis_client.get(usage) == b"1" and await redis_client.ttl(usage) > 0


async def test_unknown_tier_refused_and_counted_in_its_own_counters(
    limiter: Limiter, store: QuotaStore, redis_client: aioredis.Redis
) -> None:
    """A tier without a quota is refused with unknown_tier, counted per second in its own expiring counter
    hash (check and check_many alike, by cost) and by name in the unknown-tier bucket, and no other key is
    created."""
    await wait_away_from_window_edges(redis_client)
    before = {cast(bytes, k) for k in await redis_client.keys("*")}  # decode_responses off: bytes
    d = await limiter.check("nosuch", "u")
    assert (d.allowed, d.reason) == (False, "unknown_tier") and d.retry_after_s > 0 and d.limit is None
    got = await limiter.check_many([("nosuch", "u1", 1), ("nosuch", "u2", 3)])
    assert [x.reason for x in got] == ["unknown_tier"] * 2
    await limiter.record("nosuch", "blocked")
    new = {cast(bytes, k) for k in await redis_client.keys("*")} - before
    named = {k for k in new if k.startswith(b"surgewatch:unknown:")}  # the name, counted (quotas/keys.py)
    assert named and sum([await redis_client.zscore(k, "nosuch") or 0 for k in named]) == 5
    new -= named
    assert len(new) == 1, new
    key = new.pop()
    assert key.startswith(b"surgewatch:{nosuch}:c:")
    fields = cast(dict[bytes, bytes], await redis_client.hgetall(key))  # decode_responses off: bytes
    assert sum(int(v) for f, v in fields.items() if f.endswith(b":unknown_tier")) == 5
    assert set(fields) <= {f for f in fields if f.endswith(b":unknown_tier")}  # nothing counted as blocked
    assert 0 < await redis_client.ttl(key) <= COUNTER_TTL_S


@pytest.mark.parametrize("tier", ["fr}ee", "a b", "FREE ", "x" * 33, "frée", "", "free:x"])
async def test_hostile_tier_is_refused_as_unknown_never_an_error(
    limiter: Limiter, store: QuotaStore, redis_client: aioredis.Redis, tier: str
) -> None:
    """A tier name the tier rule refuses is answered unknown_tier, never an exception; what it writes is only what a
    gateway's call of the same name writes (its expiring counters, its name in the bounded unknown-tier bucket),
    and nothing at all when no key can hold it."""
    before = {cast(bytes, k) for k in await redis_client.keys("*")}  # decode_responses off: bytes
    assert (await limiter.check(tier, "u")).reason == "unknown_tier"
    new = {cast(bytes, k) for k in await redis_client.keys("*")} - before
    if "}" in tier or not tier:
        assert new == set()
    else:
        assert all(k.startswith((f"surgewatch:{{{tier}}}:c:".encode(), b"surgewatch:unknown:")) for k in new), new


@pytest.mark.parametrize(
    "user,cost",
    [("", 1), ("x" * 129, 1), ("é" * 65, 1), ("\ud800", 1), (None, 1), ("u", 0), ("u", -1), ("u", 1.5), ("u", True)],
)
async def test_bad_user_or_cost_is_an_error(limiter: Limiter, store: QuotaStore, user: str, cost: object) -> None:
    """An empty or over-long user id, or a cost that is not a whole number >= 1, raises QuotaError."""
    with pytest.raises(QuotaError):
        await limiter.check("free", user, cost)  # type: ignore[arg-type]  # the point: a bad cost type reaches validation


async def test_cost_counts_against_the_quota(store: QuotaStore, limiter: Limiter, away_from_day_edges: float) -> None:
    """A request of cost 3 uses 3 of the quota; one that does not fit is refused whole."""
    await store.set("free", QuotaSpec(5, DAY), actor="t")
    assert (await limiter.check("free", "u", 3)).remaining == 2
    assert (await limiter.check("free", "u", 3)).reason == "user_quota"
    assert (await limiter.check("free", "u", 2)).remaining == 0


async def test_shadow_admits_and_counts(store: QuotaStore, limiter: Limiter, away_from_day_edges: float) -> None:
    """In shadow mode over-quota requests are admitted with reason shadow and usage still counts."""
    await store.set("free", QuotaSpec(2, DAY, mode="shadow"), actor="t")
    got = [await limiter.check("free", "u") for _ in range(4)]
    assert [(d.allowed, d.reason) for d in got] == [(True, "ok"), (True, "ok"), (True, "shadow"), (True, "shadow")]
    await store.set("free", QuotaSpec(2, DAY), actor="t")  # enforce: the shadow admissions were counted
    assert (await limiter.check("free", "u")).reason == "user_quota"


async def test_paused_shadow_admits_as_shadow(store: QuotaStore, limiter: Limiter) -> None:
    """A paused tier in shadow mode admits with reason shadow instead of refusing."""
    await store.set("free", QuotaSpec(5, DAY, paused=True, mode="shadow"), actor="t")
    assert (await limiter.check("free", "u")) == Decision(True, "shadow", 4, 0.0, 5)


async def test_tier_cap_refuses_over_the_rate(
    store: QuotaStore, limiter: Limiter, redis_client: aioredis.Redis
) -> None:
    """A tier cap of 3/s admits 3 requests of one second across users, then refuses with tier_cap."""
    await store.set("pro", QuotaSpec(100, 3600, tier_cap_rps=3), actor="t")
    await settle_in_second(redis_client)
    got = await limiter.check_many([("pro", f"user{i}", 1) for i in range(5)])
    assert [d.reason for d in got] == ["ok", "ok", "ok", "tier_cap", "tier_cap"]
    assert all(0 < d.retry_after_s <= 1.0 for d in got[3:])


async def test_check_many_matches_check(store: QuotaStore, limiter: Limiter, away_from_day_edges: float) -> None:
    """The pipelined batch decides exactly like one call per request, in order."""
    await store.set("free", QuotaSpec(2, DAY), actor="t")
    got = await limiter.check_many(
        [("free", "a", 1), ("free", "a", 1), ("free", "a", 1), ("plus", "a", 1), ("zzz", "a", 1)]
    )
    assert [d.reason for d in got] == ["ok", "ok", "user_quota", "ok", "unknown_tier"]
    assert await limiter.check_many([]) == []


async def test_broken_quota_refuses_with_clear_error(
    store: QuotaStore, limiter: Limiter, redis_client: aioredis.Redis
) -> None:
    """Junk where the limiter reads the quota, or a key of the wrong type, raises BrokenQuota naming it; never
    admits."""
    await redis_client.hset(Keys().quota("free"), "enforced", "lots|86400||0|enforce|")
    with pytest.raises(BrokenQuota, match=r"limit='?lots"):
        await limiter.check("free", "u")
    with pytest.raises(BrokenQuota, match=r"limit='?lots"):
        await limiter.check_many([("free", "u", 1)] * 2)
    await redis_client.hset(Keys().quota("team"), "enforced", "no separators")
    with pytest.raises(BrokenQuota, match="enforced"):
        await limiter.check("team", "u")
    # a hash without `enforced` (restored by hand) is broken: there is no pre-v3 field-by-field path
    await redis_client.hdel(Keys().quota("enterprise"), "enforced")
    with pytest.raises(BrokenQuota, match="no enforced field"):
        await limiter.check("enterprise", "u")
    await redis_client.delete(Keys().quota("plus"))
    await redis_client.set(Keys().quota("plus"), "junk")
    with pytest.raises(BrokenQuota, match="not a hash"):
        await limiter.check("plus", "u")
    with pytest.raises(BrokenQuota):
        await limiter.check_many([("pro", "u", 1), ("plus", "u", 1)])


async def test_expiring_override_falls_back_on_time(store: QuotaStore, limiter: Limiter,
                                                    away_from_day_edges: float) -> None:
    """A 1 s override of 1/1d falls back to 5/1d by itself, visible in the history."""
    await store.set("free", QuotaSpec(5, DAY), actor="t")
    q = await store.set("free", QuotaSpec(1, DAY), actor="oncall", reason="surge", for_s=1)
    assert q.expires_at is not None
    assert [(await limiter.check("free", "u")).allowed for _ in range(2)] == [True, False]
    async with asyncio.timeout(30):  # a hang guard: the override ends 1 s after it was set
        while not (d := await limiter.check("free", "u")).allowed:
            await asyncio.sleep(0.1)
    assert d.allowed and d.limit == 5 and d.remaining == 3
    now = await store.get("free")
    assert now is not None and (now.limit, now.expires_at, now.version) == (5, None, q.version + 1)
    h = await store.history("free", count=1)
    assert h[0].actor == "surgewatch (override expired)" and h[0].kind == "expired"
    assert h[0].old is not None and h[0].old.limit == 1 and h[0].new is not None and h[0].new.limit == 5


async def test_gateway_contract_raw_fcall(store: QuotaStore, redis_client: aioredis.Redis,
                                          away_from_day_edges: float) -> None:
    """What a Go/Node/Rust gateway sees: FCALL sw_check and sw_check_many replies, as documented."""
    await store.set("free", QuotaSpec(2, DAY), actor="t")
    key = Keys().quota("free")
    ok = await redis_client.fcall("sw_check", 1, key, "gw-user", 1)
    assert ok[:3] == [1, b"ok", 1] and ok[3] == 0 and ok[4] == 2
    many = (await redis_client.fcall("sw_check_many", 1, key, "gw-user", 1, "gw-user", 1)).split()
    assert many[0] == b"2" and many[1:4] == [b"0", b"0", b"0"] and many[4:6] == [b"2", b"0"] and int(many[6]) > 0
    assert (await redis_client.fcall("sw_check_many", 1, Keys().quota("nosuch"), "u", 1)).split()[:2] == [b"-1", b"5"]


async def test_check_many_large_batch_keeps_order(store: QuotaStore, limiter: Limiter,
                                                   away_from_window_edges: float) -> None:
    """A batch larger than one server call (2,000) is split in order: exactly `limit` admissions first."""
    await store.set("pro", QuotaSpec(2100, 3600), actor="t")
    got = await limiter.check_many([("pro", "heavy", 1)] * 2500 + [("free", "light", 1)])
    assert all(d.allowed for d in got[:2100]) and not any(d.allowed for d in got[2100:2500])
    assert got[2099].remaining == 0 and got[2100].reason == "user_quota" and got[2500].reason == "ok"


async def test_paused_override_retry_after_is_its_expiry(store: QuotaStore, limiter: Limiter,
                                                         redis_client: aioredis.Redis) -> None:
    """A temporary pause tells refused clients to come back when it ends, to the ms by the server's clock."""
    q = await store.set("free", QuotaSpec(20, DAY, paused=True), actor="t", for_s=600)
    assert q.expires_at is not None
    before = await server_now(redis_client)
    d = await limiter.check("free", "u")
    after = await server_now(redis_client)
    assert d.reason == "paused"
    # the library's clock is whole ms (up to 1 ms before `before`) and it rounds the retry up to a whole ms
    assert q.expires_at - after - 0.001 <= d.retry_after_s <= q.expires_at - before + 0.002


async def test_hand_edited_field_is_not_enforced_and_is_reported(store: QuotaStore, limiter: Limiter,
                                                                 redis_client: aioredis.Redis,
                                                                 away_from_day_edges: float) -> None:
    """A field edited by hand (no version, audit or event) is not enforced; the tier reads as broken until a set."""
    await store.set("free", QuotaSpec(2, DAY), actor="t")
    await redis_client.hset(Keys().quota("free"), "limit", "1000")
    assert [(await limiter.check("free", "u")).allowed for _ in range(3)] == [True, True, False]
    assert [d.allowed for d in await limiter.check_many([("free", "u", 1), ("free", "v", 1)])] == [False, True]
    with pytest.raises(BrokenQuota, match="edited outside surgewatch"):
        await store.get("free")
    assert "free" not in [q.tier for q in await store.list()]
    assert "while the limiter enforces 2|86400|" in store.broken["free"]
    repaired = await store.set("free", QuotaSpec(3, DAY), actor="t")
    assert (await store.get("free")) == repaired
    assert [(await limiter.check("free", "u")).allowed for _ in range(2)] == [True, False]


async def test_hash_without_enforced_field_is_broken_until_a_set(store: QuotaStore, limiter: Limiter,
                                                                 redis_client: aioredis.Redis) -> None:
    """A quota hash without `enforced` (a pre-v3 library's, or restored by hand) is refused as broken by the
    limiter and the store, never read field by field; `quota set` repairs it."""
    await store.set("free", QuotaSpec(2, DAY), actor="t")
    await redis_client.hdel(Keys().quota("free"), "enforced")
    with pytest.raises(BrokenQuota, match="no enforced field"):
        await limiter.check("free", "u")
    with pytest.raises(BrokenQuota, match="no enforced field"):
        await limiter.check_many([("free", "u", 1)] * 2)
    with pytest.raises(BrokenQuota, match="no enforced field"):
        await store.get("free")
    await store.set("free", QuotaSpec(4, DAY), actor="t")
    assert await redis_client.hget(Keys().quota("free"), "enforced") == b"4|86400||0|enforce|"
    assert [(await limiter.check("free", "u")).allowed for _ in range(5)] == [True] * 4 + [False]
