"""The console: wires sources (workers) to state and screens. Widgets render; workers do the I/O."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from collectors.runner import SourceError, classify
from collectors.samples import Source
from quotas.errors import ErrorKind
from surgewatch.alerts import Event, audit_event
from surgewatch.failover import master_moves, masters
from surgewatch.failover import subtitle as header_subtitle
from surgewatch.plan import Factory, SourceSpec, plan
from surgewatch.session import Session
from surgewatch.settings import Settings
from surgewatch.state import ConsoleState
from surgewatch.thresholds import Thresholds
from tui.messages import SAMPLED, QuotaChanged, QuotasLoaded, QuotasRestored, SubscriptionChanged, _Sampled
from tui.no_color import NoColorTheme
from tui.operator import OperatorRequests
from tui.screens.editor import QuotaEditor
from tui.screens.help import HelpScreen, help_keys
from tui.screens.history import HistoryScreen
from tui.screens.overview import EditableOverviewScreen, OverviewScreen
from tui.widgets.events_log import EventLog
from tui.widgets.guard_panel import GuardPanel
from tui.widgets.tiers import TierPanel

RESTART_MAX_S = 30.0
FREEZE_HEAP_AFTER_S = 10.0  # the console is started by then; what it made so far lives as long as it (gc.freeze)


class SurgewatchApp(NoColorTheme, App[int]):
    """GPU health, per-tier traffic and live quotas in one terminal."""

    TITLE = "surgewatch"
    CSS = """
    Screen.-wall { background: black; }
    """
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(
        self,
        settings: Settings,
        *,
        sources: bool | Iterable[Source] = True,
        collector_factories: dict[Source, Factory] | None = None,
        clock: Callable[[], float] = time.time,
        subtitle: str | None = None,
        actor: str | None = None,
        subscribe: bool | None = None,
        wall_cycle_s: float = 10.0,
        tick_s: float | None = -1.0,
        recorder: Any = None,
        replay: Any = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.recorder = recorder  # surgewatch.recording.writer.Recorder: gets what the console renders from
        self.replay = replay  # tui.replay.Player: feeds the console from a recording instead
        self.thresholds = Thresholds.from_mapping(settings.thresholds)
        self.clock = clock
        self.read_only = settings.read_only or settings.wall
        self.state = ConsoleState(
            self.thresholds, clock, redis_configured=bool(settings.redis_url), can_restore=not self.read_only
        )
        self._wanted: set[Source] = (
            {Source(s) for s in sources} if not isinstance(sources, bool) else (set(Source) if sources else set())
        )
        self._factories = collector_factories or {}
        self._subscribe = bool(settings.redis_url) if subscribe is None else subscribe
        self._wall_cycle_s = wall_cycle_s
        # the redraw period: the console's interval by default; None redraws on every reading (tests)
        self._tick_s = settings.interval_s if tick_s is not None and tick_s < 0 else tick_s
        self.freeze_heap_after_s: float | None = None  # run_console's: see on_mount
        self._specs: dict[Source, SourceSpec] = {}
        self._restarts: dict[str, int] = {}
        self._audit_seen: set[tuple[str, str]] = set()  # (tier, entry id): tiers written in one ms share an id
        self._dirty: set[Source] = set()
        # the Redis link, the store, the operator and read-only: the one thing that writes
        self.session = Session(settings, actor=actor, read_only=self.read_only)
        self.requests = OperatorRequests(self)  # the operator's requests, through the session
        # the Service panel is laid out when inference servers are watched (or were, in a recording)
        self.serving_shown = bool(settings.servers or settings.prometheus) or (
            replay is not None and f"reading:{Source.SERVING}" in replay.rec.stream_names())
        self._masters: list[str] = []  # what the header names (a failover moves them)
        self._primaries = 0
        self.sub_title = subtitle if subtitle is not None else self._default_subtitle()
        if settings.wall:
            self.theme = "textual-dark"

    def _default_subtitle(self) -> str:
        return header_subtitle(self.settings, self._masters, self._primaries, self.read_only)

    # ----- lifecycle
    def on_mount(self) -> None:
        if self.replay is not None:
            from tui.screens.replay import ReplayOverviewScreen

            self.overview: OverviewScreen = ReplayOverviewScreen(self.state, self.replay)
        else:
            screen_cls = OverviewScreen if self.read_only else EditableOverviewScreen
            self.overview = screen_cls(self.state, wall=self.settings.wall)
        self.push_screen(self.overview)
        if self.replay is not None:
            self.replay.attach(self)
        for spec in plan(self.settings, self.session.connector, self._factories):
            if spec.name in self._wanted:
                self._specs[spec.name] = spec
                self.start_source(spec.name)
        if self.session.configured and self.replay is None:
            self.run_worker(self.requests.watch_guard(), group="guard-board", exclusive=True, exit_on_error=False)
        if self._subscribe and self.session.configured:
            self.run_worker(self._quota_events(), name="quota-events", group="quota-events", exit_on_error=False)
        if self._tick_s:
            self.set_interval(self._tick_s, self._tick)
        if self.settings.wall:
            self.set_interval(self._wall_cycle_s, self.overview.cycle_panel)
        if self.freeze_heap_after_s is not None:
            # once started (screens, the first readings, the traffic backfill), what lives as long as the console
            # leaves the cyclic collector's sight: a full collection then walks only what came since, not the
            # whole widget tree (one took 67 ms with 128 replicas watched: bench/README.md)
            self.set_timer(self.freeze_heap_after_s, gc.freeze)

    async def on_unmount(self) -> None:
        if self.recorder is not None:
            self.recorder.close()  # writes the last batch (at most half a second of readings)
        await self.session.aclose()

    def start_source(self, name: Source) -> None:
        self.run_worker(self._run_source(self._specs[name]), name=name, group=name, exit_on_error=False)

    async def _run_source(self, spec: SourceSpec) -> None:
        """One collector in its own worker: build, backfill if it can, then poll forever."""
        from collectors.runner import Runner

        collector = spec.make()
        window = getattr(collector, "window", None)
        if window is not None:
            self.fleet_window = window  # the GPU table's filter asks a large fleet for its nodes
        try:
            if hasattr(collector, "backfill"):
                try:
                    await asyncio.wait_for(collector.backfill(), spec.timeout_s * 2)
                except Exception as e:
                    self.log.warning(f"backfill of {spec.name} failed: {e}")
            runner = Runner(collector, interval_s=spec.interval_s, timeout_s=spec.timeout_s,
                            backoff_max_s=spec.backoff_max_s, clock=self.clock)
            await runner.run(lambda r: self.post_message(SAMPLED[spec.name](r)))
        finally:
            close = getattr(collector, "aclose", None)
            if close is not None:
                await close()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures land: say it in the events panel, restart with backoff."""
        w = event.worker
        if w.group not in self._specs and w.group != "quota-events":
            if event.state == WorkerState.ERROR:
                self._events([Event(self.clock(), "warn", "source", f"{w.name or w.group} failed: {w.error}")])
            return
        if event.state not in (WorkerState.ERROR, WorkerState.SUCCESS):
            return
        n = self._restarts[w.group] = self._restarts.get(w.group, 0) + 1
        delay = min(RESTART_MAX_S, 2.0 ** min(n, 5))
        why = f"failed: {w.error}" if event.state == WorkerState.ERROR else "stopped"
        self._events([Event(self.clock(), "crit", "source", f"{w.group} worker {why}; restarting in {delay:.0f}s")])
        if w.group == "quota-events":
            self.set_timer(delay, lambda: self.run_worker(
                self._quota_events(), name="quota-events", group="quota-events", exit_on_error=False))
        else:
            self.set_timer(delay, partial(self.start_source, Source(w.group)))

    # ----- readings in, screens out
    def _events(self, events: list[Event]) -> None:
        if events:
            self.state.add(events)
            self.overview.add_events(events)

    def _sampled(self, message: _Sampled) -> None:
        source = message.source
        if self.recorder is not None:
            self.recorder.reading(source, message.reading)
        if source == Source.TRAFFIC:
            self._traffic_masters(message.reading)
        events = self.state.apply(source, message.reading)
        self.overview.add_events(events)
        if self._tick_s:
            # widgets are redrawn once per tick, whatever the number of sources: one repaint a second
            self._dirty.add(source)
        else:
            self.overview.show((source,))

    on_gpus_sampled = on_host_sampled = on_fleet_sampled = on_traffic_sampled = on_serving_sampled = _sampled

    def _tick(self) -> None:
        # ages grow without new readings: re-evaluate staleness and the banner's countdown
        if self.state.refresh_ages():
            self._dirty.add(Source.GPUS)
        self._dirty.update((Source.HOST, Source.TRAFFIC, Source.SERVING))
        dirty, self._dirty = self._dirty, set()
        self.overview.show(tuple(dirty))

    async def _quota_events(self) -> None:
        """Supervised subscription: every change (here or anywhere) reaches the screen within a second; a storm
        costs at most one re-read per tier per second, or one of all (quotas.feed.coalesced), never a backlog."""
        from quotas.feed import coalesced, quota_events

        first = True
        async for ev in coalesced(quota_events(self.session.connector.subscriber, self.settings.prefix)):
            try:
                store = await self.session.open_store()
                if ev.kind == "disconnected":
                    kind = ev.error_kind or ErrorKind.UNREACHABLE
                    lost = SourceError(kind, f"quota change feed lost: {ev.error}")
                    self.post_message(SubscriptionChanged(False, lost))
                elif ev.kind in ("resubscribed", "reread"):
                    if ev.kind == "resubscribed":
                        self.post_message(SubscriptionChanged(True))
                    self.post_message(QuotasLoaded(await store.list()))
                    if first:  # the recent changes give the events panel context at start
                        self.post_message(QuotaChanged("*", list(reversed(await store.history(None, 5)))))
                        first = False
                elif ev.tier:
                    q = await store.get(ev.tier)
                    entries = await store.history(ev.tier, count=5)
                    self.post_message(QuotaChanged(ev.tier, list(reversed(entries)), q))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.post_message(SubscriptionChanged(False, classify(e)))

    def reset_events(self) -> None:
        """Forget the events shown and the audit entries seen (a replay's jump starts them afresh)."""
        self._audit_seen.clear()
        for log in self.overview.query(EventLog):
            log.clear()
            log.texts.clear()

    def on_quotas_loaded(self, message: QuotasLoaded) -> None:
        if self.recorder is not None:
            self.recorder.quotas_loaded(message.quotas)
        self.state.replace_quotas(message.quotas)
        self.overview.show((Source.TRAFFIC,))

    def on_quota_changed(self, message: QuotaChanged) -> None:
        if self.recorder is not None:
            self.recorder.quota_changed(message.entries, message.quota)
        if message.quota is not None:
            self.state.merge_quota(message.quota)
        fresh = [e for e in message.entries if (e.tier, e.id) not in self._audit_seen]
        self._audit_seen.update((e.tier, e.id) for e in fresh)
        self._events([audit_event(e) for e in fresh])
        self.overview.show((Source.TRAFFIC,))

    def on_subscription_changed(self, message: SubscriptionChanged) -> None:
        if self.recorder is not None:
            self.recorder.subscription(message.connected, message.error)
        self.state.subscription_error = None if message.connected else message.error
        self.overview.show((Source.TRAFFIC,))

    # ----- actions
    def action_edit(self, tier: str | None = None) -> None:
        """Open the quota editor for the selected tier (never available read-only)."""
        if self.read_only:
            self.notify("read-only console: quotas cannot be changed here", severity="warning")
            return
        refusal = self.state.edit_refusal() if self.session.configured else None
        if refusal:
            from tui.screens.refused import RefusedScreen

            self.notify(f"Edit refused: {refusal}.", severity="error")
            self.push_screen(RefusedScreen(f"Edit refused: {refusal}."))
            return
        if self.session.store is None and self.session.configured:
            # Redis configured but no source has connected yet: connect now, then come back here
            self.run_worker(self._store_then(partial(self.action_edit, tier)), group="open-store", exclusive=True,
                            exit_on_error=False)
            return
        if self._store_missing("see and change quotas"):
            return
        if tier is None and not self.overview.tiers_focused:
            # never guess which tier an operator meant: take them to the tier list first
            self.overview.focus_tiers()
            self.notify("Choose a tier with the arrow keys, then press e again.")
            return
        tier = tier or self.overview.selected_tier
        quota = self.state.quotas.get(tier) if tier else None
        if quota is None:
            self.notify(f"No quota known for tier {tier!r} yet.", severity="warning")
            return
        self.push_screen(QuotaEditor(self.session, quota), self._edited)

    def on_tier_panel_edit_requested(self, message: TierPanel.EditRequested) -> None:
        self.action_edit(message.tier)

    async def _store_then(self, then: Callable[[], None]) -> None:
        """Open the quota store (a worker: connecting is I/O), then run `then`; say why when it cannot."""
        try:
            await self.session.open_store()
        except Exception as e:
            self.notify(f"Cannot reach Redis to change quotas: {classify(e)}", severity="error")
            return
        then()

    def _edited(self, quota: Any) -> None:
        # the state takes the new quota from the change feed, as every console does (one route): here, a word
        if quota is not None:
            self.notify(f"tier {quota.tier} is now {quota.spec} (version {quota.version})")

    # ----- what the operator asks, done through the session (tui.operator)
    def action_restore(self) -> None:
        """Offer to write back the quotas this console last saw (Redis came back empty, or tiers lost theirs)."""
        self.requests.restore()

    def on_quotas_restored(self, message: QuotasRestored) -> None:
        self.requests.restored(message)

    def on_guard_panel_accept_requested(self, message: GuardPanel.AcceptRequested) -> None:
        self.requests.answer_guard(message.proposal, accept=True, panel=message.panel)

    def on_guard_panel_dismiss_requested(self, message: GuardPanel.DismissRequested) -> None:
        self.requests.answer_guard(message.proposal, accept=False, panel=message.panel)

    def _store_missing(self, what: str) -> bool:
        """True (and says why) when there is no store to use: no Redis configured, or not connected yet."""
        why = self.session.missing(what)
        if why is not None:
            self.notify(why, severity="warning")
        return why is not None

    def _traffic_masters(self, reading: Any) -> None:
        """A failover seen in the readings: an event per tier whose master moved; the header's masters."""
        self.session.adopt()  # the traffic worker opened the client first: the store shares it
        sample, prev = reading.sample, self.state.traffic
        if sample is None or sample is prev:
            return
        moved = master_moves(prev, sample, self.clock())
        self._events(moved)
        if moved:  # a failover: the client's map of masters is reloaded once, and the header follows
            self.run_worker(self._reload_cluster_map(), group="cluster-map", exclusive=True, exit_on_error=False)
        now = masters(sample.tiers)
        primaries = self.session.primaries()
        if (now, primaries) != (self._masters, self._primaries):
            self._masters, self._primaries = now, primaries
            self.sub_title = self._default_subtitle()

    async def _reload_cluster_map(self) -> None:
        try:
            await self.session.reload_cluster_map()
        except Exception as e:  # the map reloads by itself on the next MOVED: the header may lag until then
            self.log.warning(f"cluster map not reloaded: {e}")
            return
        primaries = self.session.primaries()
        if primaries != self._primaries:
            self._primaries = primaries
            self.sub_title = self._default_subtitle()

    def action_history(self) -> None:
        if self._store_missing("show the quota history"):
            return
        # the selected tier's history from the tier list; every tier's from anywhere else
        tier = self.overview.selected_tier if self.overview.tiers_focused else None
        self.push_screen(HistoryScreen(self.session.store, tier))

    def action_help(self) -> None:
        note = "Read-only: no edit keys." if self.read_only else ""
        # the header's whole subtitle (a small terminal shows only what fits): e.g. the demo's join command
        note = "\n".join(filter(None, [self.sub_title, note]))
        self.push_screen(HelpScreen(help_keys(self.screen, self), note))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        ov = self.overview
        yield SystemCommand("Help", "List every key binding", self.action_help)
        yield SystemCommand("Filter GPUs", "Show only GPUs matching a text", ov.action_filter)
        yield SystemCommand("Sort GPUs", "Sort the GPU table by the next column", ov.action_sort)
        yield SystemCommand(
            "Heat map metric", "Colour the heat map by temperature or utilization", ov.action_toggle_heat
        )
        if self.session.configured:  # Redis configured (the store opens with the first connection)
            yield SystemCommand("Quota history", "Audit history of the selected tier", self.action_history)
            if not self.read_only:
                for tier in sorted(self.state.quotas):
                    yield SystemCommand(
                        f"Edit quota of {tier}", f"Change tier {tier}'s quota", partial(self.action_edit, tier)
                    )


def create_app(settings: Settings, **overrides: Any) -> SurgewatchApp:
    """The one factory used by the CLI, the demo, replay and the tests.

    `recorder=Recorder(...)` records what the console renders from; `replay=Player(...)` opens the same
    console read-only on a recording (no collectors, no Redis, the recorded time as its clock)."""
    replay = overrides.get("replay")
    if replay is not None:
        overrides = {"sources": False, "subscribe": False, "clock": replay.clock, **overrides}
        settings = replace(settings, read_only=True, redis_url=None)
    return SurgewatchApp(settings, **overrides)


def run_console(settings: Settings, *, record: str | None = None, keep_s: float | None = None) -> int:
    """The console; with `record` (`surgewatch --record FILE`) it also records into FILE."""
    recorder = None
    try:
        if record is not None:
            from surgewatch.recording.writer import Recorder

            recorder = Recorder(record, keep_s=keep_s)  # a RecordingError is a ValueError: exit 2 below
        app = create_app(settings, recorder=recorder)
    except ValueError as e:  # e.g. a misspelt [thresholds] name: say it before taking the screen
        import sys

        print(f"surgewatch: {e}", file=sys.stderr)
        return 2
    app.freeze_heap_after_s = FREEZE_HEAP_AFTER_S  # a console process, not an app in a test run
    try:
        result = app.run()
    finally:
        if recorder is not None:
            recorder.close()
    return int(result or 0)
