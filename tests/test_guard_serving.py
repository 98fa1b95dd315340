"""The guard sheds on what users feel (queues, KV cache, e2e p99), and counts old serving figures as saturated."""

from __future__ import annotations

from typing import Any

import pytest

from collectors.runner import Reading
from collectors.serving_samples import ModelServing, ReplicaSample, ServingFigures, ServingSample
from quotas.store import QuotaStore
from surgewatch.guard.loop import Guard
from surgewatch.guard.policy import Policy, default_policy, over_default, parse_policy
from surgewatch.guard.signals import observe
from tests.test_guard_loop import ACTOR, LIMIT_POLICY, fleet, guard_entries, surge_traffic, traffic

COOL: dict[str, Any] = {"util": 50.0, "temp": 60.0}  # the GPUs are fine: only the users' side can ask for a step


@pytest.fixture
async def busy(store: QuotaStore) -> QuotaStore:
    """The store after real limiter decisions of a surge (the what-if reads them)."""
    await surge_traffic(store)
    return store


def policy() -> Policy:
    """The built-in signals (heat and serving) with the per-user-limit tiers of the loop's tests."""
    return parse_policy(over_default({"tiers": LIMIT_POLICY["tiers"], "cooldown_s": 10, "min_shed_pct": 15}))


def serving(at: float, *, waiting: float = 0.0, e2e_p99_s: float | None = 4.0, kv_pct: float = 40.0,
            age_s: float = 0.0) -> Reading[ServingSample]:
    """Two vLLM replicas of one model, read `age_s` before `at`."""
    read = at - age_s
    f = ServingFigures("sdxl", waiting=waiting, running=16, kv_cache_pct=kv_pct, e2e_p99_s=e2e_p99_s)
    replicas = tuple(ReplicaSample(f"http://n{i}:8000/metrics", "up", None, 1.0, read, read, kind="vllm",
                                   models=(f,)) for i in range(2))
    model = ModelServing("sdxl", ("vllm",), 2, 2, f, kv_cache_max_pct=kv_pct, queue_per_replica=waiting / 2)
    return Reading("serving", ServingSample(read, replicas, (model,)), read, None, 0, at + 1)


async def look(g: Guard, store: QuotaStore, at: float, **serving_kw: Any) -> Any:
    obs = observe(g.policy, now=at, traffic=await traffic(store, at), fleet=fleet(at=at, **COOL),
                  serving=serving(at, **serving_kw))
    await g.step(obs)
    return obs


async def test_a_deep_queue_on_cool_gpus_sheds_free_and_says_so(busy: QuotaStore) -> None:
    """24 requests waiting on 2 replicas (12 each, target 5) for 5 s: free is shed, the reason names the queue."""
    g = Guard(busy, policy(), actor=ACTOR, mode="auto", say=lambda _: None)
    for t in range(0, 6):
        obs = await look(g, busy, t, waiting=24)
    assert obs.values["queue_per_replica"] == 12 and obs.frozen is None
    (e,) = await guard_entries(busy)
    assert e.tier == "free" and e.new.limit < e.old.limit
    assert "requests waiting per replica 12.0 > 5.0 for 5 s" in e.reason


async def test_an_e2e_p99_over_the_slo_sheds_and_a_window_without_requests_does_not(busy: QuotaStore) -> None:
    """e2e p99 14.2 s > 10 s sustained sheds; "no requests" (None) is left out, never read as 0 or as a breach."""
    g = Guard(busy, policy(), actor=ACTOR, mode="auto", say=lambda _: None)
    for t in range(0, 6):
        obs = await look(g, busy, t, e2e_p99_s=None)
    assert "e2e_p99_s" not in obs.values and await guard_entries(busy) == []
    for t in range(6, 12):
        await look(g, busy, t, e2e_p99_s=14.2)
    (e,) = await guard_entries(busy)
    assert "e2e p99 14.2 s > 10.0 s for 5 s" in e.reason


async def test_serving_figures_older_than_their_bound_count_as_saturated_in_the_reason(busy: QuotaStore) -> None:
    """Figures 30 s old (bound 15 s) read as saturated, not calm: the smallest step, and the reason says why."""
    g = Guard(busy, policy(), actor=ACTOR, mode="auto", say=lambda _: None)
    for t in range(30, 36):
        obs = await look(g, busy, t, age_s=30.0)
    assert obs.frozen is None and obs.saturated
    (e,) = await guard_entries(busy)
    assert ("requests waiting per replica counted as saturated for 5 s: the inference servers' figures are "
            "30 s old (more than 15 s)") in e.reason


async def test_without_inference_servers_the_default_policy_watches_the_gpus_alone(busy: QuotaStore) -> None:
    """No --servers: the serving signals are left out, the guard is not frozen for want of them."""
    obs = observe(default_policy(), now=0, traffic=await traffic(busy, 0), fleet=fleet(at=0, **COOL))
    assert obs.frozen is None
    assert not {"queue_per_replica", "kv_cache_pct", "e2e_p99_s"} & set(obs.values)
