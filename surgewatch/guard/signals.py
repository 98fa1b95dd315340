"""What the guard sees: fleet and traffic figures from the collectors' readings, or why it must not act.

`observe()` turns the same readings the console renders (local GPUs, fleet, Redis traffic, inference
servers) into one immutable `Observation`. It is `frozen` (with the reason, in the operator's words) when the
data cannot be trusted: too many GPUs stale or lost, Redis not ok or the traffic source failing, traffic
figures older than a few seconds. Inference servers' figures that are too old are not a reason to freeze:
they count as saturated (`saturated`, with why), as the Gateway API Inference Extension counts a replica
whose metrics are older than its staleness bound. `Sustain` tracks how long each signal has been above its target
(and below its release level), so one hot second does nothing, and where a falling temperature is heading.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from collectors.runner import Reading
from collectors.samples import FleetSample, FleetSummary, GpuSample, GpusSample, TierTraffic, TrafficSample
from collectors.serving_samples import ServingSample
from surgewatch.guard.policy import SERVING_SIGNALS, Policy, SignalRule
from surgewatch.kpis import fleet_figures


@dataclass(frozen=True, slots=True)
class Observation:
    """The fleet and the tiers at `at` (the guard's clock). `frozen` is why nothing may be done, or None."""

    at: float
    frozen: str | None
    gpus: int = 0
    stale_gpus: int = 0
    values: dict[str, float] = field(default_factory=dict)  # signal name -> value (reject_pct per its tier)
    tiers: dict[str, TierTraffic] = field(default_factory=dict)
    saturated: dict[str, str] = field(default_factory=dict)  # serving signal -> why it counts as saturated (inf)

    def admitted_rps(self) -> float:
        return sum(t.accepted_rps for t in self.tiers.values())


def _gpus(gpus: Reading[Any] | None, fleet: Reading[Any] | None, now: float, max_age_s: float
          ) -> tuple[list[GpuSample], int, FleetSummary | None]:
    """The fresh GPUs, how many more are known but stale or lost, and a fresh Prometheus summary of the
    GPUs that are up (a large fleet: its up nodes' GPUs in the sample are only the worst few, and the
    summary stands for all of them; the console's figures read it the same way, surgewatch.kpis)."""
    fresh: list[GpuSample] = []
    stale = 0
    summary: FleetSummary | None = None
    if gpus is not None and isinstance(gpus.sample, GpusSample) and gpus.sample.status == "ok":
        old = (gpus.age_s(now) or 0.0) > max_age_s
        for g in gpus.sample.gpus:
            if old or g.status != "ok":
                stale += 1
            else:
                fresh.append(g)
    if fleet is not None and isinstance(fleet.sample, FleetSample):
        old = (fleet.age_s(now) or 0.0) > max_age_s
        s = fleet.sample.summary
        if s is not None:
            if old:
                stale += s.gpus
            else:
                summary = s
        for node in fleet.sample.nodes:
            node_old = old or node.status != "up" or now - node.taken_at > max_age_s
            if s is not None and node.status == "up":
                continue  # counted in the summary
            for g in node.gpus:
                if node_old or g.status != "ok":
                    stale += 1
                else:
                    fresh.append(g)
    return fresh, stale, summary


def serving_values(policy: Policy, serving: Reading[Any] | None, now: float) -> tuple[dict[str, float], dict[str, str]]:
    """The serving signals' values (the worst model's; a figure without requests in its window is left out)
    and, when the figures cannot be trusted (older than `max_serving_age_s`, none yet, a model with no
    replica up), every serving signal at infinity with why it counts as saturated. Nothing without servers."""
    names = [r.name for r in policy.signals if r.name in SERVING_SIGNALS]
    if serving is None or not names:
        return {}, {}
    sample = serving.sample
    bound = policy.max_serving_age_s
    why = ""
    if not isinstance(sample, ServingSample):
        why = "no figures from the inference servers yet" + (f" ({serving.error})" if serving.error else "")
    elif (age := serving.age_s(now) or 0.0) > bound:
        why = f"the inference servers' figures are {age:.0f} s old (more than {bound:g} s)"
    elif not sample.models:
        why = "no replica serves a model (every inference server down or not one)"
    else:
        dead = [m.model for m in sample.models if not any(
            r.status == "up" and r.age_s(now) <= bound and any(f.model == m.model for f in r.models)
            for r in sample.replicas)] if sample.source == "scrape" else [m.model for m in sample.models
                                                                          if m.replicas_up == 0]
        if dead:
            why = f"model {dead[0]} has no replica with figures newer than {bound:g} s"
    if why:
        return {n: math.inf for n in names}, {n: why for n in names}
    assert isinstance(sample, ServingSample)
    picks = {"queue_per_replica": [m.queue_per_replica for m in sample.models],
             "kv_cache_pct": [m.figures.kv_cache_pct for m in sample.models],
             "e2e_p99_s": [m.figures.e2e_p99_s for m in sample.models]}
    values = {}
    for n in names:
        known = [v for v in picks[n] if v is not None]
        if known:
            values[n] = max(known)
    return values, {}


def observe(
    policy: Policy,
    *,
    now: float,
    traffic: Reading[Any] | None,
    fleet: Reading[Any] | None = None,
    gpus: Reading[Any] | None = None,
    serving: Reading[Any] | None = None,
) -> Observation:
    """One look at the readings. Frozen, with the reason, unless every figure can be trusted (the inference
    servers' figures are read as saturated when too old: `serving_values`)."""
    fresh, stale, summary = _gpus(gpus, fleet, now, policy.max_gpu_age_s)
    figures = fleet_figures(fresh, math.inf, summary)  # the console's own figures (hot is the console's word)
    total = figures.gpus + stale
    tiers: dict[str, TierTraffic] = {}
    sample = traffic.sample if traffic is not None else None
    if isinstance(sample, TrafficSample):
        tiers = {t.tier: t for t in sample.tiers}
    values: dict[str, float] = {}
    if figures.gpus:
        if figures.util_mean_pct is not None:
            values["util_pct"] = figures.util_mean_pct
        if figures.temp_mean_c is not None and figures.temp_max_c is not None:
            values["temp_c"] = figures.temp_mean_c
            values["temp_max_c"] = figures.temp_max_c
        values["throttled_pct"] = 100.0 * figures.throttled / figures.gpus
    for rule in policy.signals:
        if rule.name == "reject_pct" and rule.tier in tiers:
            t = tiers[rule.tier]
            offered = t.accepted_rps + t.rejected_rps
            values["reject_pct"] = 100.0 * t.rejected_rps / offered if offered else 0.0

    served, saturated = serving_values(policy, serving, now)
    values.update(served)

    def frozen(why: str) -> Observation:
        return Observation(now, why, total, stale, values, tiers, saturated)

    if traffic is None or traffic.sample is None:
        return frozen("no traffic figures from Redis yet" if traffic is None or traffic.error is None
                      else f"the traffic source fails: {traffic.error}")
    if traffic.error is not None:
        return frozen(f"the traffic source fails: {traffic.error}")
    assert isinstance(sample, TrafficSample)
    if sample.redis.status != "ok":
        return frozen(f"Redis is not ok: {sample.redis.status}" + (f" ({sample.redis.error})" if sample.redis.error
                                                                   else ""))
    age = traffic.age_s(now) or 0.0
    if age > policy.max_traffic_age_s:
        return frozen(f"the traffic figures are {age:.0f} s old (more than {policy.max_traffic_age_s:g} s)")
    if total == 0:
        return frozen("no GPU figures (no node answers and no local GPU)")
    share = 100.0 * stale / total
    if share > policy.freeze_stale_gpu_pct:
        return frozen(f"{share:.0f} % of GPUs ({stale} of {total}) are stale or lost "
                      f"(more than {policy.freeze_stale_gpu_pct:g} %)")
    missing = [r.name for r in policy.signals if r.name not in values and r.name != "reject_pct"
               and r.name not in SERVING_SIGNALS]
    if missing:
        return frozen(f"no value for signal {missing[0]} (the GPUs do not report it)")
    return Observation(now, None, total, stale, values, tiers, saturated)


PEGGED_UTIL_PCT = 99.5  # a GPU that is this busy has a queue behind it: how much more is not visible


def excess_share(rule: SignalRule, value: float, policy: Policy) -> float:
    """The share of the fleet's admitted load a signal above its target asks to shed (0..1):
    - utilization (load is proportional to it): (value - release) / value; pegged at 100 % it hides its
      excess (the queue behind it), and the policy's `pegged_shed_pct` stands in;
    - throttling (a share of the GPUs): the excess over release, in points, as a share of the load;
    - temperatures: the excess over release as a share of the rise from idle (heat follows load);
    - a tier's rejection rate, a queue, KV use and a latency: (value - release) / value;
    - a serving signal counted as saturated (figures too old: infinity): the smallest step, min_shed_pct."""
    if math.isinf(value):
        return policy.min_shed_pct / 100.0
    if rule.name == "util_pct" and value >= PEGGED_UTIL_PCT:
        return policy.pegged_shed_pct / 100.0
    if rule.name == "throttled_pct":
        return max(0.0, value - rule.release) / 100.0
    span = value - rule.idle
    return (value - rule.release) / span if span > 0 else 1.0


def headroom_share(policy: Policy, values: dict[str, float]) -> float:
    """The share of the fleet's admitted load that could come back with every load signal still at or below its
    release level: the smallest headroom of utilization ((release - value) / value) and the temperatures
    ((release - value) / (value - idle)). Throttling is left out: none throttling says nothing of how far the
    fleet is from it."""
    room = []
    for rule in policy.signals:
        v = values.get(rule.name)
        if v is None or rule.name not in ("util_pct", "temp_c", "temp_max_c"):
            continue
        span = v - rule.idle
        room.append(max(0.0, rule.release - v) / span if span > 0 else 1.0)
    return min(room) if room else 0.0


UNIT = {"util_pct": " %", "temp_c": " °C", "temp_max_c": " °C", "throttled_pct": " %", "reject_pct": " %",
        "queue_per_replica": "", "kv_cache_pct": " %", "e2e_p99_s": " s"}


def describe(rule: SignalRule) -> str:
    what = {
        "util_pct": "fleet utilization", "temp_c": "fleet temperature", "temp_max_c": "hottest GPU",
        "throttled_pct": "fleet throttling", "reject_pct": f"{rule.tier} rejections",
        "queue_per_replica": "requests waiting per replica", "kv_cache_pct": "KV-cache use",
        "e2e_p99_s": "e2e p99",
    }
    return what[rule.name]


def fmt(rule: SignalRule, value: float) -> str:
    if math.isinf(value):
        return "saturated"
    digits = 1 if rule.name.startswith("temp") or rule.name in ("e2e_p99_s", "queue_per_replica") else 0
    return f"{value:.{digits}f}{UNIT[rule.name]}"


def exceeded_text(exceeded: list[tuple[SignalRule, float, float]], obs: Observation) -> str:
    """A shed's reason: each signal above its target and for how long; a saturated one says why."""
    def one(r: SignalRule, v: float, s: float) -> str:
        if r.name in obs.saturated:
            return f"{describe(r)} counted as saturated for {s:.0f} s: {obs.saturated[r.name]}"
        return f"{describe(r)} {fmt(r, v)} > {fmt(r, r.target)} for {s:.0f} s"
    return "; ".join(one(r, v, s) for r, v, s in exceeded)


TEMPS = ("temp_c", "temp_max_c")
SLOPE_SPAN_S = 5.0  # the slope of a temperature is read over this long: long enough to average out one noisy look


@dataclass
class Sustain:
    """Since when each signal has been above its target, since when all have been below release, and the
    recent temperatures (for `heading`)."""

    above_since: dict[str, float] = field(default_factory=dict)
    calm_since: float | None = None
    temps: deque[tuple[float, dict[str, float]]] = field(default_factory=lambda: deque(maxlen=64))

    def heading(self, policy: Policy, obs: Observation) -> dict[str, float]:
        """`obs.values` with each falling temperature read where it is heading: a first-order lag settles at
        its value plus the time constant (`thermal_tau_s`) times its slope; never below the signal's idle.
        A rising temperature, or one without `SLOPE_SPAN_S` of history, is read as it is: the guard sheds on
        what it sees and gives back on what the cooling already shows."""
        values = dict(obs.values)
        if policy.thermal_tau_s <= 0:
            return values
        old = [(at, v) for at, v in self.temps if obs.at - at >= SLOPE_SPAN_S]
        if not old:
            return values
        at0, v0 = old[-1]
        idle = {r.name: r.idle for r in policy.signals}
        for name in TEMPS:
            if name in values and name in v0:
                slope = (values[name] - v0[name]) / (obs.at - at0)
                if slope < 0:
                    values[name] = max(idle.get(name, 0.0), values[name] + policy.thermal_tau_s * slope)
        return values

    def update(self, policy: Policy, obs: Observation) -> None:
        while self.temps and obs.at - self.temps[0][0] > 2 * SLOPE_SPAN_S:
            self.temps.popleft()
        self.temps.append((obs.at, {k: v for k, v in obs.values.items() if k in TEMPS}))
        calm, seen = True, False
        for rule in policy.signals:
            v = obs.values.get(rule.name)
            if v is None:
                self.above_since.pop(rule.name, None)
                continue
            seen = True
            if v > rule.target:
                self.above_since.setdefault(rule.name, obs.at)
            else:
                self.above_since.pop(rule.name, None)
            if v > rule.release:
                calm = False
        if calm and seen:  # no signal with a value is silence, not calm
            if self.calm_since is None:
                self.calm_since = obs.at
        else:
            self.calm_since = None

    def reset(self) -> None:
        self.above_since.clear()
        self.calm_since = None
        self.temps.clear()

    def exceeded(self, policy: Policy, obs: Observation) -> list[tuple[SignalRule, float, float]]:
        """(rule, value, seconds above target) of the signals above target for their sustain time."""
        out = []
        for rule in policy.signals:
            since = self.above_since.get(rule.name)
            if since is not None and obs.at - since >= rule.sustain_s:
                out.append((rule, obs.values[rule.name], obs.at - since))
        return out

    def calm_for(self, obs: Observation) -> float | None:
        """Seconds every signal with a value has been below its release level; None while one is above it (0.0
        would be "calm for 0 s", which a hold_s of 0 takes for calm: capacity given back while hot)."""
        return None if self.calm_since is None else obs.at - self.calm_since


def silence(policy: Policy, obs: Observation) -> str | None:
    """Why the guard must not act when no signal of its policy has a value (a policy of serving signals without
    servers, a reject_pct of a tier that has no traffic): silence read as calm would give capacity back."""
    if any(obs.values.get(r.name) is not None for r in policy.signals):
        return None
    return f"no signal of the policy has a value ({', '.join(describe(r) for r in policy.signals)})"
