"""What the console knows: the latest reading of each source and what is derived from them.

Plain Python, no Textual: the app feeds readings in, gets events back, and hands the state to the
screen to render. Keeping it here keeps the app small and the rules testable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from collectors.runner import Reading, SourceError
from collectors.samples import FleetSample, GpusSample, RedisHealth, Source, TrafficSample
from collectors.serving_samples import ServingSample
from quotas.errors import ErrorKind
from quotas.model import Quota
from surgewatch.alerts import Event, gpu_events, node_events, traffic_events
from surgewatch.incidents import ServingWatch, ThrottleIncident, keep_latest
from surgewatch.kpis import GpuRow, GpuRowCache, Kpis, build_gpu_rows, compute_kpis, format_age
from surgewatch.redis_alerts import TrafficWatch, redis_events
from surgewatch.service import ServiceRow, service_rows
from surgewatch.thresholds import Thresholds

SOURCE_LABEL = {
    Source.GPUS: "local GPUs (NVML)", Source.HOST: "local host", Source.FLEET: "fleet nodes",
    Source.TRAFFIC: "Redis traffic", Source.SERVING: "inference servers",
}
# Redis's named states in the operator's words (the banner's heading): one table, whichever route says it
# (a failing call's ErrorKind, or the traffic poll's redis.status: the same names), so one state never
# reads two ways depending on which arrived first
HEALTH_HEADING = {
    "out_of_memory": "REDIS OUT OF MEMORY",
    "read_only_replica": "REDIS IS A READ-ONLY REPLICA",
    "persistence_error": "REDIS REFUSES WRITES (MISCONF)",
    "loading": "REDIS IS LOADING",
    "bad_data": "BAD DATA IN REDIS",
    "no_tiers": "REDIS HOLDS NO TIERS",
    "unavailable": "REDIS CANNOT DECIDE NOW",
    "writes_paused": "REDIS HOLDS WRITES (PAUSED)",
    "library_missing": "LIMITER LIBRARY MISSING",
}
REDIS_HEADING: dict[str, str] = {
    **HEALTH_HEADING,
    ErrorKind.AUTH_FAILED: "Redis refused the login",
    ErrorKind.ERROR: "Redis answered with an error",
}
# why there are no local GPUs, in a few words, where the fleet's GPUs fill the panel anyway
LOCAL_GPU_SHORT = {"no_library": "no NVML library", "no_driver": "no NVIDIA driver", "no_gpus": "none",
                   "error": "NVML failed"}
# states in which a quota write would fail anyway: edits are refused up front
WRITE_REFUSED = ("out_of_memory", "read_only_replica", "persistence_error", "loading", "unavailable", "writes_paused")
NO_REDIS_HINT = (
    "No Redis configured: monitoring this host and its GPUs only. For per-tier traffic and quotas pass "
    "--redis URL (or set REDIS_URL); `surgewatch demo` shows everything."
)


class ConsoleState:
    def __init__(
        self, thresholds: Thresholds, clock: Callable[[], float], redis_configured: bool, *, can_restore: bool = False
    ) -> None:
        self.can_restore = can_restore  # an editable console offers to restore lost quotas
        self.thresholds = thresholds
        self.clock = clock
        self.redis_configured = redis_configured
        self.readings: dict[Source, Reading[Any]] = {}
        self.rows: tuple[GpuRow, ...] = ()
        self._row_cache = GpuRowCache()
        self.quotas: dict[str, Quota] = {}
        self.last_known: dict[str, Quota] = {}  # the newest quota seen of every tier, kept when it vanishes
        self.last_known_at = 0.0  # when a quota was last seen
        self._vanished: dict[str, Quota] = {}  # missing tier -> the quota it had when it went missing
        self.missing: dict[str, float] = {}  # tiers whose quota is gone (no_quota) -> since when (epoch s)
        self._traffic_watch = TrafficWatch()
        self.events: list[Event] = []
        self.subscription_error: SourceError | None = None
        self._throttling = ThrottleIncident()  # the fleet's throttling as one incident (surgewatch.incidents)
        self.serving_watch = ServingWatch()  # each model's SLO breaches as incidents, replicas down/up

    def _remember(self, events: list[Event]) -> list[Event]:
        keep_latest(self.events, events, 500)  # an incident's update replaces its previous entry
        return events

    def ongoing(self) -> list[Event]:
        """The incidents still going on (throttling), oldest first: pinned above the events."""
        return [e for e in self.events if e.ongoing]

    def apply(self, source: Source, reading: Reading[Any]) -> list[Event]:
        """Take a new reading of `source`; return the events it causes (also kept in `events`)."""
        now = self.clock()
        prev = self.readings.get(source)
        self.readings[source] = reading
        out: list[Event] = []
        label = SOURCE_LABEL.get(source, source)
        if reading.error and (prev is None or not prev.error):
            out.append(Event(now, "warn", "source", f"{label} failing: {reading.error}"))
        elif not reading.error and prev is not None and prev.error:
            out.append(Event(now, "info", "source", f"{label} back"))
        if source in (Source.GPUS, Source.FLEET):
            before = {r.key: r for r in self.rows}
            self.rows = self.build_rows()
            out += gpu_events(before, self.rows, now, self._throttling)
        if source == Source.FLEET and isinstance(reading.sample, FleetSample):
            old = prev.sample if prev is not None and isinstance(prev.sample, FleetSample) else None
            if reading.sample is not old:
                out += node_events(old, reading.sample, now)
        if source == Source.SERVING and isinstance(reading.sample, ServingSample):
            old_s = prev.sample if prev is not None and isinstance(prev.sample, ServingSample) else None
            if reading.sample is not old_s:
                out += self.serving_watch.update(old_s, reading.sample, self.thresholds, now)
        if source == Source.TRAFFIC and isinstance(reading.sample, TrafficSample):
            old_t = prev.sample if prev is not None and isinstance(prev.sample, TrafficSample) else None
            if reading.sample is not old_t:
                out += traffic_events(old_t, reading.sample, self.thresholds, now)
                out += redis_events(old_t, reading.sample, now)
                out += self._traffic_watch.update(reading.sample, self.thresholds, now, self.last_change_at)
                for t in reading.sample.tiers:
                    if t.quota is not None:
                        self.merge_quota(t.quota)
                    elif t.state == "no_quota":
                        self._went_missing(t.tier, now)
        return self._remember(out)

    @property
    def serving(self) -> Reading[ServingSample] | None:
        """The inference servers' latest reading (None before one, or without --servers/--prometheus)."""
        return self.readings.get(Source.SERVING)

    def service_rows(self) -> tuple[ServiceRow, ...]:
        """The Service panel's rows (surgewatch.service): stale figures dimmed with their age."""
        return service_rows(self.serving, self.clock(), self.thresholds)

    def build_rows(self) -> tuple[GpuRow, ...]:
        return build_gpu_rows(
            self.readings.get(Source.GPUS), self.readings.get(Source.FLEET), self.clock(), self.thresholds,
            self._row_cache,
        )

    def refresh_ages(self) -> bool:
        """Recompute staleness of GPU rows (a node that stops answering ages even without new readings).
        True when any row changed (cached rows are reused, so this is an identity check)."""
        rows = self.build_rows()
        changed = len(rows) != len(self.rows) or any(a is not b for a, b in zip(rows, self.rows, strict=False))
        self.rows = rows
        return changed

    def merge_quota(self, q: Quota) -> bool:
        """Keep the newest version of a tier's quota; True when it changed what is shown."""
        cur = self.quotas.get(q.tier)
        if cur is not None and cur.version > q.version:
            return False
        gone = self._vanished.get(q.tier)
        if q.tier in self.missing and gone is not None and q.version <= gone.version and (
            q.updated_at <= gone.updated_at
        ):
            return False  # read before the quota vanished (a slow reply): the tier is still without one
        self.quotas[q.tier] = q
        self.missing.pop(q.tier, None)
        self._vanished.pop(q.tier, None)
        known = self.last_known.get(q.tier)
        if known is None or known.version <= q.version or known.updated_at <= q.updated_at:
            self.last_known[q.tier] = q
        self.last_known_at = self.clock()
        return cur != q

    def _went_missing(self, tier: str, now: float) -> None:
        """The tier's quota is gone: remember since when, and which quota vanished (a slower reply read
        before it vanished must not bring it back)."""
        self.missing.setdefault(tier, now)
        vanished = self.quotas.pop(tier, None) or self.last_known.get(tier)
        if vanished is not None:
            self._vanished.setdefault(tier, vanished)

    @property
    def last_change_at(self) -> float:
        """When the newest quota shown was written (0: none): a change explains a traffic change."""
        return max((q.updated_at for q in self.quotas.values()), default=0.0)

    def restorable(self) -> list[Quota]:
        """The last-known quotas of the tiers that lost theirs (all of them after Redis came back empty)."""
        return [q for t, q in sorted(self.last_known.items()) if t in self.missing or not self.quotas]

    def replace_quotas(self, quotas: list[Quota]) -> None:
        """After a (re)subscription: the store's list is the truth (a tier may be gone: it is missing then)."""
        now = self.clock()
        for gone in set(self.quotas) - {q.tier for q in quotas}:
            self._went_missing(gone, now)
        self.quotas = {}
        for q in quotas:
            self.merge_quota(q)

    def add(self, events: list[Event]) -> list[Event]:
        return self._remember(events)

    def kpis(self) -> Kpis:
        return compute_kpis(
            self.rows, self.readings.get(Source.TRAFFIC), list(self.readings.values()), self.clock(), self.thresholds
        )

    @property
    def traffic(self) -> TrafficSample | None:
        r = self.readings.get(Source.TRAFFIC)
        return r.sample if r is not None and isinstance(r.sample, TrafficSample) else None

    @property
    def redis_health(self) -> RedisHealth | None:
        """The server's named state from the last traffic poll (None before one, or without Redis)."""
        t = self.traffic
        return t.redis if t is not None else None

    @property
    def redis_error(self) -> SourceError | None:
        """Why Redis is unusable right now, or None when it answers (or is not configured)."""
        r = self.readings.get(Source.TRAFFIC)
        if r is not None and r.error:
            return r.error
        return self.subscription_error

    def redis_heading(self) -> str:
        """What is wrong with Redis in a few words: a refused login or a full server is not an outage."""
        err = self.redis_error
        return REDIS_HEADING.get(err.kind, "Redis unreachable") if err else ""

    def banner(self) -> tuple[str, str]:
        """(level, text) for the banner; empty text when all is well."""
        if not self.redis_configured:
            return ("info", NO_REDIS_HINT)
        err = self.redis_error
        if not err:
            return self._health_banner()
        now = self.clock()
        r = self.readings.get(Source.TRAFFIC)
        if (r is not None and r.error is None and r.sample is not None and err is self.subscription_error
                and err.kind in (ErrorKind.UNREACHABLE, ErrorKind.TIMEOUT)):
            # the server answers the traffic poll: only the change feed is down, and the server's own state
            # (empty after a restart, out of memory...) is still the operator's to see
            health = self._health_banner()[1]
            return ("error", f"QUOTA CHANGES NOT RECEIVED: {err.message.rstrip('.')}. Redis answers the traffic "
                    "poll; the change feed reconnects by itself, and a change made elsewhere may show late until "
                    "it does. Edits are refused until it is back." + (f" {health}" if health else ""))
        retry = ""
        if r is not None and r.error:
            retry = f" Retrying in {format_age(max(0.0, r.next_poll_at - now))}."
            age = r.age_s(now)
            retry += f" Traffic and quotas shown are {format_age(age)} old." if age is not None else ""
        elif self.subscription_error:
            retry = " Reconnecting by itself."
        hint = " (check the user and password in the Redis URL)" if err.kind == ErrorKind.AUTH_FAILED else ""
        heading, text = self.redis_heading(), err.message.rstrip(".")
        return ("error", f"{heading}: {text}{hint}.{retry} Edits are refused until it is back.")

    def _health_banner(self) -> tuple[str, str]:
        """The server answers: its named state, and tiers that lost their quota, in the operator's words."""
        health = self.redis_health
        parts: list[str] = []
        if health is not None and health.status != "ok":
            heading = HEALTH_HEADING.get(health.status, f"Redis: {health.status}")
            parts.append(f"{heading}: {health.error or health.status}.")
        if self.missing and (health is None or health.status != "no_tiers"):
            tiers = ", ".join(sorted(self.missing))
            parts.append(
                f"NO QUOTA for {tiers}: every gateway request for {'it' if len(self.missing) == 1 else 'them'} "
                "is refused as unknown_tier."
            )
        unknown = self.traffic.unknown_tiers if self.traffic else ()
        if unknown:  # a misspelt tier: gateways refused by nobody's choice (quotas/keys.py Punknown:B)
            parts.append(f"UNKNOWN TIER: {'; '.join(u.message() for u in unknown[:3])}.")
        broken = sorted(t.tier for t in (self.traffic.tiers if self.traffic else ()) if t.state == "broken")
        if broken and (health is None or health.status != "bad_data"):
            parts.append(
                f"QUOTA BROKEN for {', '.join(broken)} (junk, or edited outside surgewatch: see the events); "
                f"`surgewatch quota set {broken[0]} LIMIT/WINDOW` repairs it."
            )
        if not parts:
            return ("", "")
        if self.restorable():
            parts.append("Press r to restore the last-known quotas." if self.can_restore else
                         "Restore them with `surgewatch quota import FILE` (this console is read-only).")
        return ("error", " ".join(parts))

    def edit_refusal(self) -> str | None:
        """Why a quota edit would fail now (Redis unreachable, out of memory, ...), or None."""
        if self.redis_error:
            return f"{self.redis_heading()} ({self.redis_error})"
        health = self.redis_health
        if health is not None and health.status in WRITE_REFUSED:
            return f"{HEALTH_HEADING[health.status].capitalize()} ({health.error})"
        return None

    def gpu_note(self) -> str:
        """Why there are no local GPUs (no driver, no library...), or '' when there is nothing to say."""
        r = self.readings.get(Source.GPUS)
        sample = r.sample if r is not None else None
        if not isinstance(sample, GpusSample) or sample.status == "ok":
            return ""
        if self.readings.get(Source.FLEET):
            # the fleet is what this console watches (the demo, a GPU-less ops box): one short line
            return f"local GPUs: {LOCAL_GPU_SHORT.get(sample.status, sample.status)} (remote nodes below)"
        return f"local GPUs: {sample.message or sample.status}. Give --nodes or --prometheus to watch remote GPUs."

    def source_status(self, source: Source) -> tuple[Any, float | None, SourceError | None]:
        """(sample, stale age or None, error) of one source."""
        r = self.readings.get(source)
        if r is None:
            return None, None, None
        now = self.clock()
        age = r.age_s(now)
        stale = r.error is not None or (age is not None and age > self.thresholds.stale_after_s)
        return r.sample, (age if stale else None), r.error
