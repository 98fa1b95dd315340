"""Traffic that stops is an alarm: the rule on plain samples, and the console on real counters."""

from __future__ import annotations

import redis.asyncio as aioredis

from collectors.samples import TierTraffic, TrafficSample
from quotas.keys import Keys
from quotas.store import QuotaStore
from sim.valkey import ValkeyProcess
from surgewatch.redis_alerts import TrafficWatch
from surgewatch.settings import Settings
from surgewatch.thresholds import Thresholds
from tui.app import create_app
from tui.testing import wait_until

TH = Thresholds()


def sample(per_second: list[int], rejected: list[int] | None = None) -> TrafficSample:
    """One tier whose per-second history is `per_second` (oldest first)."""
    rej = tuple(rejected or [0] * len(per_second))
    return TrafficSample(100.0, (TierTraffic("free", None, 0.0, 0.0, accepted_history=tuple(per_second),
                                             rejected_history=rej),))


def test_stop_after_a_real_level_warns_once_and_says_when_back() -> None:
    """30 req/s for 55 s then 5 s of nothing: one warn; silence again: nothing more; requests again: back."""
    watch = TrafficWatch()
    (ev,) = watch.update(sample([30] * 55 + [0] * 5), TH, 1000.0, 0.0)
    assert ev.severity == "warn" and ev.kind == "traffic_stopped" and "gateways down" in ev.text
    assert watch.update(sample([30] * 54 + [0] * 6), TH, 1001.0, 0.0) == []
    (back,) = watch.update(sample([30] * 54 + [0] * 5 + [12]), TH, 1002.0, 0.0)
    assert back.severity == "info" and "back" in back.text


def test_refused_requests_are_traffic_and_a_trickle_is_not_a_level() -> None:
    """Requests the limiter refuses still count as traffic; below the level (20 req/s) a stop is no alarm."""
    assert TrafficWatch().update(sample([0] * 60, [40] * 60), TH, 1000.0, 0.0) == []
    assert TrafficWatch().update(sample([10] * 55 + [0] * 5), TH, 1000.0, 0.0) == []
    assert TrafficWatch().update(sample([30] * 55 + [0] * 2 + [1] * 3), TH, 1000.0, 0.0) == []


def test_a_recent_quota_change_explains_the_drop() -> None:
    """A quota change in the last 30 s may explain a drop: no alarm (an operator is at work)."""
    assert TrafficWatch().update(sample([30] * 55 + [0] * 5), TH, 1000.0, 990.0) == []


async def test_console_raises_the_alarm_on_real_counters(valkey: ValkeyProcess, redis_client: aioredis.Redis) -> None:
    """Counters in Redis show 40 req/s that ended 8 s ago: the console's events say traffic stopped."""
    await QuotaStore(redis_client).init()
    secs, _ = await redis_client.time()
    now = int(secs)
    keys = Keys()
    pipe = redis_client.pipeline(transaction=False)
    for s in range(now - 70, now - 8):
        pipe.hincrby(keys.counters("free", s // 60), f"{s % 60}:accepted", 40)
    await pipe.execute()
    app = create_app(Settings(redis_url=valkey.url, interval_s=0.2), sources=("traffic",), actor="t", subscribe=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(pilot, lambda: any(e.kind == "traffic_stopped" for e in app.state.events),
                         what="traffic stopped event")
        (ev,) = [e for e in app.state.events if e.kind == "traffic_stopped"]
        assert ev.severity == "warn" and "req/s over the last minute, none in the last 5 s" in ev.text
