"""Outcome and rank counters written by the limiter equal its decisions exactly; the preview reads them."""

from __future__ import annotations

import re
from collections import Counter
from typing import cast

import pytest
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from quotas.keys import AUDIT_MAXLEN, COUNTER_TTL_S, Keys
from quotas.library import library_source
from quotas.limiter import Limiter
from quotas.model import QuotaError, QuotaSpec
from quotas.store import QuotaStore

DAY = 86400


async def counters(client: aioredis.Redis, tier: str, kind: str = "c") -> Counter[str]:
    """Sum every `P{T}:c:M` (or `:r:M`) hash of the tier by outcome (or rank bucket)."""
    total: Counter[str] = Counter()
    async for key in client.scan_iter(match=f"surgewatch:{{{tier}}}:{kind}:*"):
        # decode_responses is off: fields and values are bytes
        for field, value in cast(dict[bytes, bytes], await client.hgetall(key)).items():
            f = field.decode()
            if f == "about":  # what the hash holds, in words: see test_counter_hashes_are_hash_tables
                continue
            total[f.split(":")[1] if kind == "c" else f] += int(value)
    return total


async def test_outcome_counters_equal_decisions(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Accepted, user_quota, paused, shadow, blocked and error counts equal what was decided and recorded."""
    lim = Limiter(redis_client)
    await store.set("free", QuotaSpec(3, DAY), actor="t")
    decided: Counter[str] = Counter()
    for i in range(40):
        d = await lim.check("free", f"user{i % 7}")
        decided["accepted" if d.allowed else d.reason] += 1
    await store.pause("free", actor="t")
    for _ in range(5):
        decided[(await lim.check("free", "x")).reason] += 1
    await store.set("free", QuotaSpec(1, DAY, mode="shadow"), actor="t")
    for _ in range(4):
        d = await lim.check("free", "y")
        decided["accepted"] += 1
        decided["shadow"] += d.reason == "shadow"
    await lim.record("free", "blocked", 2)
    await lim.record("free", "error")
    decided["blocked"] += 2
    decided["error"] += 1
    assert decided == Counter(accepted=25, user_quota=19, paused=5, shadow=3, blocked=2, error=1)
    assert await counters(redis_client, "free") == decided


async def test_counter_keys_expire_and_fields_are_seconds(store: QuotaStore, redis_client: aioredis.Redis,
                                                          away_from_window_edges: float) -> None:
    """Counter hashes live at least an hour and at most COUNTER_TTL_S; fields are `S:OUTCOME` with S in 0..59."""
    lim = Limiter(redis_client)
    await lim.check("pro", "u")
    await lim.check("pro", "u")  # rank 2: the first rank the rank hash stores
    keys = [k async for k in redis_client.scan_iter(match="surgewatch:{pro}:[cr]:*")]
    assert len(keys) >= 2
    for k in keys:
        assert 3600 < await redis_client.ttl(k) <= COUNTER_TTL_S
    (ck,) = [k for k in keys if b":c:" in k]
    for field in cast(list[bytes], await redis_client.hkeys(ck)):  # decode_responses off: bytes
        if field == b"about":
            continue
        s, outcome = field.decode().split(":")
        assert 0 <= int(s) <= 59 and outcome == "accepted"


async def test_counter_hashes_are_hash_tables(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Each minute's counter hashes carry an `about` field long enough to keep them hash tables (not listpacks,
    where every increment scans the fields), whichever write creates them; the readers skip it."""
    lim = Limiter(redis_client)
    await lim.check("pro", "u")
    await lim.check("pro", "u")
    await lim.check_many([("team", "u", 1), ("team", "u", 1)])
    await lim.record("plus", "blocked")
    keys = [k async for k in redis_client.scan_iter(match="surgewatch:{*}:[cr]:*")]
    # c and r of pro, team and plus (of two minutes where the calls straddle one)
    assert {(k.split(b"}")[0], k.split(b":")[2]) for k in keys} == {
        (b"surgewatch:{" + t, kind) for t in (b"pro", b"team", b"plus") for kind in (b"c", b"r")}
    for k in keys:
        about = await redis_client.hget(k, "about")
        assert about and len(about) > 64 and b"README" in about
        assert await redis_client.object("encoding", k) == b"hashtable"
        assert 3600 < await redis_client.ttl(k) <= COUNTER_TTL_S
    impact = await store.preview("pro", QuotaSpec(1, DAY))
    assert (impact.total_admitted, impact.would_refuse) == (2, 1)


async def test_rank_counters(store: QuotaStore, redis_client: aioredis.Redis, away_from_window_edges: float) -> None:
    """Admitted requests are counted by rank (exact to 16, then power-of-two buckets, spread by cost), alike
    through check and check_many; rank 1 is not stored but is the accepted count less the other buckets."""
    lim = Limiter(redis_client)
    for tier in ("pro", "team"):
        await store.set(tier, QuotaSpec(1000, 3600), actor="t")
    requests = [("a", 1)] * 20 + [("b", 1)] * 3 + [("c", 40)]  # c: ranks 1..40 in one request
    for user, cost in requests:
        await lim.check("pro", user, cost)
    await lim.check_many([("team", user, cost) for user, cost in requests])
    expected = Counter({str(r): 2 for r in range(2, 17)})
    for r in (2, 3):
        expected[str(r)] += 1
    expected["32"] = 4 + 16
    expected["64"] = 8
    for tier in ("pro", "team"):
        ranks = await counters(redis_client, tier, "r")
        assert ranks == expected
        assert (await counters(redis_client, tier))["accepted"] - ranks.total() == 3  # the three users' rank 1


async def test_record_rejects_other_outcomes(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """record() accepts only blocked and error, with a whole count >= 1."""
    lim = Limiter(redis_client)
    for outcome, n in (("accepted", 1), ("paused", 1), ("blocked", 0)):
        with pytest.raises(QuotaError):
            await lim.record("free", outcome, n)
    assert await counters(redis_client, "free") == Counter()


async def test_preview_from_rank_counters(store: QuotaStore, redis_client: aioredis.Redis,
                                          away_from_window_edges: float) -> None:
    """The what-if counts the admitted requests ranked above a new limit, all of them when paused, and what a
    cap refuses in the one second the requests were admitted in."""
    from tests.test_limiter import settle_in_second

    lim = Limiter(redis_client)
    await store.set("free", QuotaSpec(20, DAY), actor="t")
    await settle_in_second(redis_client)  # the 15 admissions fall in one second: a cap of 1 refuses 14 of them
    for user, n in (("a", 10), ("b", 4), ("c", 1)):
        for _ in range(n):
            await lim.check("free", user)
    impact = await store.preview("free", QuotaSpec(3, DAY))
    assert (impact.total_admitted, impact.would_refuse_user, impact.would_refuse) == (15, 8, 8)
    assert (await store.preview("free", QuotaSpec(20, DAY))).would_refuse == 0
    assert (await store.preview("free", QuotaSpec(20, DAY, paused=True))).would_refuse == 15
    capped = await store.preview("free", QuotaSpec(20, DAY, tier_cap_rps=1))
    assert (capped.would_refuse_user, capped.would_refuse_cap, capped.would_refuse) == (0, 14, 14)


async def write_counters(client: aioredis.Redis, tier: str, minute: int, accepted: dict[int, int],
                         ranks: dict[int, int] | None = None) -> None:
    """Counter (and rank) hashes of one minute as the limiter writes them: `S:outcome` and rank-bucket fields."""
    k = Keys()
    fields: dict[FieldT, EncodableT] = {f"{s}:accepted": n for s, n in accepted.items()}
    fields |= {f"{s}:user_quota": 99 for s in accepted}  # refusals are not admitted requests: never counted
    fields["about"] = "outcome counters per second (README)"
    await client.hset(k.counters(tier, minute), mapping=fields)
    if ranks:
        rank_fields: dict[FieldT, EncodableT] = {str(b): n for b, n in ranks.items()}
        await client.hset(k.ranks(tier, minute), mapping={"about": "rank buckets (README)", **rank_fields})


async def test_preview_exact_from_counters_at_known_minutes(store: QuotaStore, redis_client: aioredis.Redis,
                                                            away_from_window_edges: float) -> None:
    """Counters written at known minutes and seconds give exact Impacts: a limit inside a power-of-two bucket
    (spread evenly), a limit plus a cap (counted after the user-limit refusals), the current quota giving 0."""
    minute = int(away_from_window_edges) // 60
    # the last five minutes: 30 and 10 admitted in seconds 5 and 6 now, 24 in second 10 two minutes ago, 4 in
    # second 59 four minutes ago; ranks (this minute): 10 at rank 2, 8 at rank 3, 16 in bucket 32 (ranks 17..32)
    await write_counters(redis_client, "pro", minute, {5: 30, 6: 10}, {2: 10, 3: 8, 32: 16})
    await write_counters(redis_client, "pro", minute - 2, {10: 24})
    await write_counters(redis_client, "pro", minute - 4, {59: 4})
    await write_counters(redis_client, "pro", minute - 5, {0: 1000}, {64: 1000})  # older than five minutes
    await write_counters(redis_client, "pro", minute + 1, {0: 1000})  # not yet: a clock ahead is not read
    total = 30 + 10 + 24 + 4  # rank 1 is what the stored ranks leave: 68 - 34 = 34

    async def got(spec: QuotaSpec, minutes: int = 5) -> tuple[int, int, int, int]:
        i = await store.preview("pro", spec, minutes=minutes)
        assert i.would_refuse == i.would_refuse_user + i.would_refuse_cap
        return (i.total_admitted, i.would_refuse_user, i.would_refuse_cap, i.would_refuse)

    # limit 24 inside bucket 32 (ranks 17..32): (32 - 24) / 16 of its 16 requests
    assert await got(QuotaSpec(24, 3600)) == (total, 8, 0, 8)
    assert await got(QuotaSpec(20, 3600)) == (total, 12, 0, 12)
    # at a bucket's edges: all of it at its lower bound, none at its upper one; exact ranks above 2
    assert await got(QuotaSpec(16, 3600)) == (total, 16, 0, 16)
    assert await got(QuotaSpec(2, 3600)) == (total, 8 + 16, 0, 24)
    assert await got(QuotaSpec(1, 3600)) == (total, 10 + 8 + 16, 0, 34)
    # a cap of 10/s after the limit's 8 refusals: each second keeps 1 - 8/68 of its requests, then the cap
    # refuses what exceeds 10: round(30 * 60/68) = 26 -> 16; round(10 * 60/68) = 9 -> 0; round(24 * 60/68) = 21
    # -> 11; round(4 * 60/68) = 4 -> 0
    assert await got(QuotaSpec(24, 3600, tier_cap_rps=10)) == (total, 8, 27, 35)
    assert await got(QuotaSpec(1000, 3600, tier_cap_rps=10)) == (total, 0, 20 + 0 + 14 + 0, 34)
    assert await got(QuotaSpec(1000, 3600, paused=True)) == (total, total, 0, total)
    # this minute only: 40 admitted, rank 1 = 40 - 34 = 6
    assert await got(QuotaSpec(24, 3600), minutes=1) == (40, 8, 0, 8)
    # the current quota (limit at the top of the highest bucket, a cap at the busiest second) refuses nothing
    await store.set("pro", QuotaSpec(32, 3600, tier_cap_rps=30), actor="t")
    current = await store.get("pro")
    assert current is not None
    assert await got(current.settings()) == (total, 0, 0, 0)


def test_library_constants_match_key_schema() -> None:
    """The Lua library's TTL and audit bound are the ones quotas/keys.py documents."""
    src = library_source()
    assert re.search(rf"COUNTER_TTL_S = {COUNTER_TTL_S}\b", src)
    assert re.search(rf"AUDIT_MAXLEN = {AUDIT_MAXLEN}\b", src)
    assert Keys().usage("free", 86400, 3, "u") == "surgewatch:{free}:u:86400:3:u"


async def test_tier_cap_refusals_are_counted(store: QuotaStore, redis_client: aioredis.Redis) -> None:
    """Within one second, a cap of 2 admits 2 and counts the other 3 as tier_cap, exactly."""
    from tests.test_limiter import settle_in_second

    lim = Limiter(redis_client)
    await store.set("team", QuotaSpec(100, 3600, tier_cap_rps=2), actor="t")
    await settle_in_second(redis_client)
    got = await lim.check_many([("team", f"u{i}", 1) for i in range(5)])
    assert [d.reason for d in got] == ["ok", "ok", "tier_cap", "tier_cap", "tier_cap"]
    assert await counters(redis_client, "team") == Counter(accepted=2, tier_cap=3)


async def test_single_and_batch_paths_agree_on_random_traffic(store: QuotaStore, redis_client: aioredis.Redis,
                                                              away_from_window_edges: float) -> None:
    """Random requests and quota changes, through check on one tier and check_many on another, give the same
    decisions, outcome counters and rank counters (the two Lua paths stay one behaviour)."""
    import random

    rnd = random.Random(7)
    lim = Limiter(redis_client)
    specs = [QuotaSpec(5, DAY), QuotaSpec(12, DAY), QuotaSpec(2, DAY, mode="shadow"), QuotaSpec(30, DAY),
             QuotaSpec(3, DAY, paused=True), QuotaSpec(0, DAY)]
    single: list[tuple[bool, str, int]] = []
    batched: list[tuple[bool, str, int]] = []
    admitted: Counter[str] = Counter()
    for step in range(120):
        spec = specs[(step // 10) % len(specs)] if step % 10 == 0 else None
        if spec:
            for tier in ("pro", "team"):
                await store.set(tier, spec, actor="t")
        pairs = [(f"u{rnd.randrange(6)}", rnd.choice((1, 1, 1, 2, 5, 17))) for _ in range(6)]
        for user, cost in pairs:
            d = await lim.check("pro", user, cost)
            single.append((d.allowed, d.reason, d.remaining))
            admitted[user] += cost if d.allowed else 0
        many = await lim.check_many([("team", u, c) for u, c in pairs])
        batched += [(d.allowed, d.reason, d.remaining) for d in many]
    assert single == batched
    assert len({r for _, r, _ in single}) >= 4  # ok, user_quota, shadow, paused all happened
    assert await counters(redis_client, "pro") == await counters(redis_client, "team")
    assert await counters(redis_client, "pro", "r") == await counters(redis_client, "team", "r")
    for tier in ("pro", "team"):  # usage is what was admitted, whichever way the limiter read and counted it
        usage: Counter[str] = Counter()
        async for key in redis_client.scan_iter(match=f"surgewatch:{{{tier}}}:u:*"):
            used = await redis_client.get(key)
            assert used is not None, key
            usage[key.decode().rsplit(":", 1)[1]] += int(used)
        assert usage == admitted


def test_preview_arithmetic_on_hand_made_counters() -> None:
    """The what-if's arithmetic on hashes as Redis returns them: bucket 16 is exact, buckets add up, several
    minutes' ranks add up, a stored rank-1 field or junk field is ignored, rank 1 may be 0."""
    from quotas.preview import impact_from, refused_above

    assert refused_above(10, {16: 4}) == 4  # rank 16 is an exact rank (above 10), not the bucket 9..16
    assert refused_above(2, {3: 8, 32: 16}) == 8 + 16  # every bucket's refusals count, not only the last
    assert refused_above(20, {64: 32, 32: 16}) == 32 + 16 * (32 - 20) / 16  # a spread bucket adds to the others
    minutes = [{b"2": b"3", b"about": b"rank buckets", b"junk": b"5", b"1": b"4"}, {b"2": b"2", b"3": b"1"}]
    counters = [{b"7:accepted": b"6", b"7:user_quota": b"9"}, {b"8:accepted": b"4"}]
    # 10 admitted: ranks 2 (3 + 2) and 3 (1) stored, rank 1 the other 4; the stored "1" and the junk ignored
    impact = impact_from(QuotaSpec(1, DAY), minutes, counters)
    assert (impact.total_admitted, impact.would_refuse_user, impact.would_refuse) == (10, 6, 6)
    assert impact_from(QuotaSpec(2, DAY), minutes, counters).would_refuse == 1
    # a period that starts mid-window: every admitted request is a stored rank above 1, so rank 1 holds none
    only_ranked = impact_from(QuotaSpec(1, DAY), [{b"2": b"5"}], [{b"3:accepted": b"5"}])
    assert (only_ranked.total_admitted, only_ranked.would_refuse_user) == (5, 5)
