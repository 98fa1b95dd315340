"""The guard's policy: what it watches, whom it sheds, within which bounds. TOML, validated whole.

The policy is the `[guard]` table of `surgewatch.toml`, or of the file given with `--policy FILE`.
Every setting is checked before the guard starts; a bad one is refused with a message that names it
(`guard.tiers.free.floor: ...`), and the command exits 2. A misspelt name is refused, never ignored.
`DEFAULT_POLICY` is the policy used when there is no `[guard]` table; it is documented line by line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from quotas.model import MAX_TIER_CAP_RPS, QuotaError, parse_spec, validate_tier
from surgewatch.settings import ConfigError

GuardMode = Literal["propose", "auto"]
Lever = Literal["limit", "cap"]  # what a step lowers: the per-user limit, or the tier cap (requests/s)
LEVERS: tuple[Lever, ...] = ("limit", "cap")
MODES: tuple[GuardMode, ...] = ("propose", "auto")
SIGNALS = ("util_pct", "temp_c", "temp_max_c", "throttled_pct", "reject_pct", "queue_per_replica", "kv_cache_pct",
           "e2e_p99_s")
# what users feel, from the inference servers (--servers or --prometheus): left out without them
SERVING_SIGNALS = ("queue_per_replica", "kv_cache_pct", "e2e_p99_s")
# the highest target a signal may have (a share: 100; a temperature: 150 degrees)
SIGNAL_MAX = {"temp_c": 150.0, "temp_max_c": 150.0, "queue_per_replica": 100_000.0, "e2e_p99_s": 3600.0}

DEFAULT_POLICY = """\
[guard]
# propose: proposals appear in every console (a: accept, x: dismiss) and nothing is written;
# auto: the guard applies them itself, as temporary overrides under its own name (guard@HOST)
mode = "propose"
# who is shed first: the first tier in this order that is above its floor takes the next step
order = ["free", "plus"]
# tiers the guard never touches, whatever the signals say
protect = ["pro", "team", "enterprise"]
# seconds between two steps of the guard (any tier); also how long a tier an operator changed is left alone.
# Heat lags load (a GPU's temperature takes tens of seconds to settle): a step needs time to show
cooldown_s = 15
# at most this many steps (sheds and give-backs) in any hour; then it only watches
max_changes_per_hour = 30
# every signal below its release level for this long before one step of capacity is given back
hold_s = 10
# a step given back raises the tier's limit by this share (at least 1); a cap rises by the fleet's
# headroom (how far utilization and temperature are below release), at most by this share
give_back_pct = 50
# the GPUs' thermal time constant (seconds): a temperature lags its load by about this long, so a falling
# one is read where it is heading (its value plus this times its slope over the last 5 s) when the
# headroom of a give-back is sized; a rising one is read as it is. 0: always as it is
thermal_tau_s = 12
# each step is a temporary override of this length: if the guard dies, the tier falls back by itself
override_s = 600
# the what-if looks at this many minutes of the tier's admitted requests
preview_minutes = 5
# each step sheds at least this share of the fleet's admitted load...
min_shed_pct = 3
# ... and at most this share
max_shed_pct = 40
# the share to shed while utilization is pegged at 100 %: its excess (the queue behind it) is hidden
pegged_shed_pct = 32
# freeze (act on nothing) when more than this share of GPUs is stale or lost
freeze_stale_gpu_pct = 25
# freeze when the traffic figures are older than this (seconds)
max_traffic_age_s = 5
# GPU readings older than this count as stale (seconds; nodes are scraped every 5 s by default)
max_gpu_age_s = 15
# inference servers' figures older than this (seconds), or a model with no replica up, count as saturated:
# the serving signals read above their target, and the step's reason says why (as the Gateway API
# Inference Extension counts a replica whose metrics are older than its staleness bound)
max_serving_age_s = 15
# how often the loop looks (seconds)
interval_s = 1
# how long a proposal stays up when nobody accepts or dismisses it (seconds)
proposal_ttl_s = 120

# the signals: a step is taken when one is above its target for sustain_s seconds; capacity is given
# back when all are below their release level for hold_s
[guard.signals]
# the fleet's mean GPU utilization (%): busy is not harm, a queue that lasts is (sustain_s)
util_pct = { target = 95, release = 88, sustain_s = 10 }
# the fleet's mean GPU temperature (degrees C; idle: what it reads with no load)
temp_c = { target = 80, release = 79, sustain_s = 3, idle = 30 }
# the share of GPUs throttling for heat or power (%)
throttled_pct = { target = 10, release = 6, sustain_s = 3 }
# optional: a tier's rejection rate (%), e.g. a paid tier refused by its tier cap
# reject_pct = { tier = "pro", target = 5, release = 1, sustain_s = 10 }
# what users feel, with --servers or --prometheus (left out without inference servers; a figure with no
# request in its window is left out, never read as 0). The worst model's requests waiting per replica up
# (the Gateway API Inference Extension's saturation threshold: 5)
queue_per_replica = { target = 5, release = 1, sustain_s = 5 }
# the worst model's KV-cache use (%, the mean over its replicas; the Inference Extension's 0.8)
kv_cache_pct = { target = 80, release = 70, sustain_s = 5 }
# the worst model's end-to-end latency p99 over the last minute (seconds): the SLO ([thresholds] e2e_p99_slo_s)
e2e_p99_s = { target = 10, release = 8, sustain_s = 5 }

# per tier in the order: the floor it never goes below and the largest step it may take at once (% of
# its limit; with lever = "cap", % of its admitted rate). lever: what a step lowers, "limit" (the per-user
# limit: heavy users first, coarse when each user sends a few requests) or "cap" (the tier cap, requests
# per second: as fine as needed, light users refused alike; the per-user limit is kept, and the cap never
# goes below cap_floor_rps)
[guard.tiers]
free = { floor = "1/1d", step_pct = 50, lever = "cap", cap_floor_rps = 20 }
plus = { floor = "50/1d", step_pct = 25 }
"""

_TOP = {
    "mode", "order", "protect", "cooldown_s", "max_changes_per_hour", "hold_s", "override_s", "preview_minutes",
    "min_shed_pct", "max_shed_pct", "freeze_stale_gpu_pct", "max_traffic_age_s", "max_gpu_age_s", "interval_s",
    "proposal_ttl_s", "signals", "tiers", "give_back_pct", "pegged_shed_pct", "thermal_tau_s", "max_serving_age_s",
}


@dataclass(frozen=True, slots=True)
class SignalRule:
    """One watched signal: above `target` for `sustain_s` triggers a step; below `release` allows give-back.
    `idle` is the signal's value with no load (the excess is measured from it); `tier` for `reject_pct`."""

    name: str
    target: float
    release: float
    sustain_s: float
    idle: float = 0.0
    tier: str | None = None


@dataclass(frozen=True, slots=True)
class TierRule:
    """A sheddable tier: its floor (per-user limit per window), the largest step (in % of its limit, or with
    `lever = "cap"` of its admitted rate), and with the cap lever the tier cap it never goes below."""

    tier: str
    floor_limit: int
    floor_window_s: int
    step_pct: float
    lever: Lever = "limit"
    cap_floor_rps: int = 0

    def floor_in(self, window_s: int) -> int:
        """The floor as a limit in `window_s` (a 1/1d floor is 1 in a day, 0 in an hour: at least 1 then)."""
        if window_s == self.floor_window_s:
            return self.floor_limit
        return max(1 if self.floor_limit else 0, -(-self.floor_limit * window_s // self.floor_window_s))


@dataclass(frozen=True, slots=True)
class Policy:
    mode: GuardMode
    order: tuple[str, ...]
    protect: tuple[str, ...]
    tiers: dict[str, TierRule]
    signals: tuple[SignalRule, ...]
    cooldown_s: float = 15.0
    max_changes_per_hour: int = 30
    hold_s: float = 10.0
    give_back_pct: float = 50.0
    thermal_tau_s: float = 12.0
    override_s: int = 600
    preview_minutes: int = 5
    min_shed_pct: float = 3.0
    max_shed_pct: float = 40.0
    pegged_shed_pct: float = 32.0
    freeze_stale_gpu_pct: float = 25.0
    max_traffic_age_s: float = 5.0
    max_gpu_age_s: float = 15.0
    max_serving_age_s: float = 15.0
    interval_s: float = 1.0
    proposal_ttl_s: int = 120


def freshness_problem(policy: Policy, *, scrape_interval_s: float, scrape_timeout_s: float, gpus: bool,
                      servers: bool) -> str | None:
    """Why this policy would take readings of a healthy fleet for stale ones, or None.

    Between two scrapes a reading ages up to the scrape interval, plus a slow scrape (its timeout) and the
    guard's own interval; a bound below that would read every gap between scrapes as stale: GPUs lost
    (the guard frozen) or inference servers saturated (shedding for no reason)."""
    oldest_s = scrape_interval_s + scrape_timeout_s + policy.interval_s
    for on, key, bound, then in ((gpus, "max_gpu_age_s", policy.max_gpu_age_s, "the GPUs stale"),
                                 (servers, "max_serving_age_s", policy.max_serving_age_s, "the servers saturated")):
        if on and bound < oldest_s:
            return (f"[guard] {key} = {bound:g} s is less than a reading's age between two scrapes, "
                    f"{oldest_s:g} s (node_interval_s {scrape_interval_s:g} + scrape timeout {scrape_timeout_s:g} "
                    f"+ interval_s {policy.interval_s:g}): it would read {then} between scrapes; raise {key} "
                    f"or lower node_interval_s")
    return None


def _num(d: dict[str, Any], key: str, where: str, lo: float, hi: float, default: float | None = None) -> float:
    if key not in d:
        if default is None:
            raise ConfigError(f"{where}.{key}: missing (a number from {lo:g} to {hi:g})")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ConfigError(f"{where}.{key}: {v!r} is not a number from {lo:g} to {hi:g}")
    return float(v)


def _names(d: dict[str, Any], key: str, where: str, default: tuple[str, ...]) -> tuple[str, ...]:
    v = d.get(key, list(default))
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{where}.{key}: a list of tier names, e.g. [\"free\", \"plus\"]")
    for x in v:
        try:
            validate_tier(x)
        except QuotaError as e:
            raise ConfigError(f"{where}.{key}: {e}") from None
    if len(set(v)) != len(v):
        raise ConfigError(f"{where}.{key}: a tier appears twice")
    return tuple(v)


def _unknown(d: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown setting {extra[0]!r} (known: {', '.join(sorted(allowed))})")


def _signal(name: str, v: Any, where: str) -> SignalRule:
    if name not in SIGNALS:
        raise ConfigError(f"{where}: unknown signal {name!r} (known: {', '.join(SIGNALS)})")
    if not isinstance(v, dict):
        raise ConfigError(f"{where}.{name}: a table such as {{ target = 90, release = 80, sustain_s = 5 }}")
    _unknown(v, {"target", "release", "sustain_s", "idle", "tier"}, f"{where}.{name}")
    hi = SIGNAL_MAX.get(name, 100.0)
    target = _num(v, "target", f"{where}.{name}", 0, hi)
    release = _num(v, "release", f"{where}.{name}", 0, hi, target)
    if release > target:
        raise ConfigError(f"{where}.{name}.release: {release:g} is above the target {target:g}")
    idle = _num(v, "idle", f"{where}.{name}", 0, hi, 30.0 if name.startswith("temp") else 0.0)
    if idle >= release and release > 0:
        raise ConfigError(f"{where}.{name}.idle: {idle:g} must be below the release level {release:g}")
    tier = v.get("tier")
    if name == "reject_pct":
        if not isinstance(tier, str):
            raise ConfigError(f"{where}.{name}.tier: which tier's rejection rate, e.g. tier = \"pro\"")
        try:
            validate_tier(tier)
        except QuotaError as e:
            raise ConfigError(f"{where}.{name}.tier: {e}") from None
    elif tier is not None:
        raise ConfigError(f"{where}.{name}.tier: only reject_pct names a tier")
    return SignalRule(name, target, release, _num(v, "sustain_s", f"{where}.{name}", 0, 3600), idle, tier)


def _tier(name: str, v: Any, where: str) -> TierRule:
    if not isinstance(v, dict):
        raise ConfigError(f"{where}.{name}: a table such as {{ floor = \"1/1d\", step_pct = 50 }}")
    _unknown(v, {"floor", "step_pct", "lever", "cap_floor_rps"}, f"{where}.{name}")
    floor = v.get("floor")
    if not isinstance(floor, str):
        raise ConfigError(f"{where}.{name}.floor: missing (LIMIT/WINDOW, e.g. \"1/1d\")")
    try:
        limit, window_s = parse_spec(floor)
    except QuotaError as e:
        raise ConfigError(f"{where}.{name}.floor: {e}") from None
    lever = v.get("lever", "limit")
    if lever not in LEVERS:
        raise ConfigError(f"{where}.{name}.lever: {lever!r} is not 'limit' (the per-user limit) or 'cap' "
                          "(the tier cap, requests per second)")
    if lever == "cap" and "cap_floor_rps" not in v:
        raise ConfigError(f"{where}.{name}.cap_floor_rps: missing: lever = \"cap\" needs the tier cap it never "
                          "goes below (requests per second, e.g. 20)")
    if lever == "limit" and "cap_floor_rps" in v:
        raise ConfigError(f"{where}.{name}.cap_floor_rps: only lever = \"cap\" uses it")
    cap_floor = int(_num(v, "cap_floor_rps", f"{where}.{name}", 1, MAX_TIER_CAP_RPS, 1))
    if "cap_floor_rps" in v and not float(v["cap_floor_rps"]).is_integer():
        raise ConfigError(f"{where}.{name}.cap_floor_rps: {v['cap_floor_rps']!r} is not a whole number")
    return TierRule(name, limit, window_s, _num(v, "step_pct", f"{where}.{name}", 1, 90, 50.0), lever, cap_floor)


def parse_policy(table: Any, *, source: str = "guard") -> Policy:
    """The policy from a `[guard]` table; ConfigError naming the first bad setting."""
    w = source
    if not isinstance(table, dict):
        raise ConfigError(f"{w}: a table of settings")
    _unknown(table, _TOP, w)
    mode = table.get("mode", "propose")
    if mode not in MODES:
        raise ConfigError(f"{w}.mode: {mode!r} is not 'propose' or 'auto'")
    order = _names(table, "order", w, ("free", "plus"))
    protect = _names(table, "protect", w, ())
    both = sorted(set(order) & set(protect))
    if both:
        raise ConfigError(f"{w}.protect: tier {both[0]!r} is also in guard.order: a protected tier is never shed")
    if not order:
        raise ConfigError(f"{w}.order: at least one tier to shed")
    tiers_t = table.get("tiers", {})
    if not isinstance(tiers_t, dict):
        raise ConfigError(f"{w}.tiers: a table, one entry per tier in guard.order")
    tiers = {n: _tier(n, v, f"{w}.tiers") for n, v in tiers_t.items()}
    for n in order:
        if n not in tiers:
            raise ConfigError(f"{w}.tiers.{n}: missing: every tier in guard.order needs a floor")
    for n in tiers:
        if n not in order:
            raise ConfigError(f"{w}.tiers.{n}: not in guard.order (order: {', '.join(order)})")
    sig_t = table.get("signals", {})
    if not isinstance(sig_t, dict) or not sig_t:
        raise ConfigError(f"{w}.signals: at least one signal, e.g. throttled_pct = {{ target = 10, sustain_s = 5 }}")
    signals = tuple(_signal(n, v, f"{w}.signals") for n, v in sig_t.items())
    min_shed = _num(table, "min_shed_pct", w, 1, 90, 3.0)
    max_shed = _num(table, "max_shed_pct", w, 1, 90, 40.0)
    if min_shed > max_shed:
        raise ConfigError(f"{w}.min_shed_pct: {min_shed:g} is above max_shed_pct {max_shed:g}")
    return Policy(
        mode=mode, order=order, protect=protect, tiers=tiers, signals=signals,
        cooldown_s=_num(table, "cooldown_s", w, 0, 86400, 15.0),
        max_changes_per_hour=int(_num(table, "max_changes_per_hour", w, 1, 3600, 30)),
        hold_s=_num(table, "hold_s", w, 0, 86400, 10.0),
        give_back_pct=_num(table, "give_back_pct", w, 1, 1000, 50.0),
        thermal_tau_s=_num(table, "thermal_tau_s", w, 0, 3600, 12.0),
        override_s=int(_num(table, "override_s", w, 1, 31 * 86400, 600)),
        preview_minutes=int(_num(table, "preview_minutes", w, 1, 60, 5)),
        min_shed_pct=min_shed, max_shed_pct=max_shed,
        pegged_shed_pct=_num(table, "pegged_shed_pct", w, 1, 90, 32.0),
        freeze_stale_gpu_pct=_num(table, "freeze_stale_gpu_pct", w, 0, 100, 25.0),
        max_traffic_age_s=_num(table, "max_traffic_age_s", w, 0.5, 3600, 5.0),
        max_gpu_age_s=_num(table, "max_gpu_age_s", w, 0.5, 3600, 15.0),
        max_serving_age_s=_num(table, "max_serving_age_s", w, 0.5, 3600, 15.0),
        interval_s=_num(table, "interval_s", w, 0.1, 60, 1.0),
        proposal_ttl_s=int(_num(table, "proposal_ttl_s", w, 1, 86400, 120)),
    )


def default_policy() -> Policy:
    return parse_policy(tomllib.loads(DEFAULT_POLICY)["guard"])


def over_default(table: Any) -> Any:
    """A `[guard]` table with the built-in values for what it does not set: `signals` and `tiers`, when
    given, replace the built-in ones whole (an `order` without `tiers` keeps the built-in floors of its tiers)."""
    if not isinstance(table, dict):
        return table
    base = tomllib.loads(DEFAULT_POLICY)["guard"]
    merged = {**base, **table}
    if "order" in table and "tiers" not in table and isinstance(table["order"], list):
        merged["tiers"] = {k: v for k, v in base["tiers"].items() if k in table["order"]}
    return merged


def load_policy(path: str | None, file: dict[str, Any] | None = None) -> Policy:
    """`--policy FILE` (a TOML file with a `[guard]` table), else the `[guard]` table of the config file
    (`file`, already read), else the default policy; a table sets what it names over the default."""
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"--policy {path}: cannot read it ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--policy {path}: not TOML (not UTF-8 text)") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--policy {path}: not TOML ({e})") from None
        if "guard" not in doc:
            raise ConfigError(f"--policy {path}: no [guard] table (see `surgewatch guard --print-policy`)")
        return parse_policy(over_default(doc["guard"]))
    if file and "guard" in file:
        return parse_policy(over_default(file["guard"]))
    return default_policy()
