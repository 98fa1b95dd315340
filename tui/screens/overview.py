"""The overview: KPIs, GPUs (table and heat map), tiers, events. A grid when wide, tabs when small."""

from __future__ import annotations

import time

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Header, Input, Static, TabbedContent, TabPane

from collectors.samples import Source
from surgewatch.service import empty_text
from surgewatch.state import ConsoleState
from tui.widgets.events_log import EventLog, IncidentBar
from tui.widgets.fit_footer import FitFooter
from tui.widgets.gpu_table import GpuTable
from tui.widgets.guard_panel import GuardPanel
from tui.widgets.heatmap import HeatLegend, HeatMap
from tui.widgets.kpis import KpiStrip, WallKpis
from tui.widgets.service import ServicePanel
from tui.widgets.status import Banner, HostLine, host_groups
from tui.widgets.summary import Summary, SummaryData
from tui.widgets.tiers import TierOrder, TierPanel
from tui.widgets.wall import CycleLine, WallTiers

COMPACT_WIDTH = 120  # below this (or COMPACT_HEIGHT) panels become tabs
COMPACT_HEIGHT = 34
PANELS = ("gpus", "heat", "tiers", "events")
NO_REDIS_SHORT = "No Redis configured: GPUs and host only; --redis URL shows tiers, quotas."
PANEL_NAMES = {"summary": "Overview", "gpus": "GPUs", "heat": "Heat map", "tiers": "Tiers", "events": "Events",
               "service": "Service"}


class OverviewScreen(Screen[None]):
    """The main screen. Render-only: `show(state)` pushes the latest state into the widgets."""

    EDITABLE = False  # a reader's screen: no edit keys, and the panels offer none

    DEFAULT_CSS = """
    OverviewScreen .panel { border: round $primary 50%; border-title-color: $text; height: 1fr; }
    OverviewScreen .panel:focus-within { border: round $accent; }
    OverviewScreen #left { width: 1fr; }
    OverviewScreen #right { width: 1fr; }
    OverviewScreen #gpu-filter { display: none; height: 3; }
    OverviewScreen #gpu-note { display: none; height: auto; padding: 0 1; color: $text-muted; }
    OverviewScreen #gpu-note.-shown { display: block; }
    OverviewScreen #gpu-filter.-shown { display: block; }
    OverviewScreen #heat-panel { height: 2fr; max-height: 16; }
    OverviewScreen #gpu-panel { height: 3fr; }
    OverviewScreen TabbedContent { height: 1fr; }
    OverviewScreen TabPane { padding: 0; }
    OverviewScreen.-wall KpiStrip { display: none; }
    /* a wall is read from across a room: each tier's 15 minutes as tall bars filling the panel, not one line */
    OverviewScreen.-wall TierSpark { height: 1fr; min-height: 1; max-height: 10; margin-bottom: 1; }
    OverviewScreen.-wall TierSpark > Sparkline { height: 1fr; }
    OverviewScreen.-wall TierSpark > Label { text-style: bold; }
    OverviewScreen.-compact Tabs { height: 1; }
    OverviewScreen.-compact Tabs Underline { display: none; }
    OverviewScreen.-compact Tab.-active { text-style: bold reverse; }
    OverviewScreen #event-box { height: 1fr; }
    OverviewScreen #service-panel { height: auto; max-height: 12; }
    """

    BINDINGS = [
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("h", "app.history", "History"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort"),
        Binding("t", "toggle_heat", "Heat: temp/util"),
        # wall mode only (check_action): the cycle and the panels by hand; nothing else
        Binding("space", "pause_cycle", "Pause/resume cycle", priority=True),
        Binding("left", "panel(-1)", "Previous panel", show=False, priority=True),
        Binding("right", "panel(1)", "Next panel", show=False, priority=True),
    ]
    WALL_ACTIONS = ("pause_cycle", "panel")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.WALL_ACTIONS:
            return self.wall
        return True

    AUTO_FOCUS = "#gpus"

    compact: reactive[bool] = reactive(False, recompose=True)
    """True when the terminal is small (e.g. 80x24 over SSH): the panels become tabs."""

    def __init__(self, state: ConsoleState, *, wall: bool = False) -> None:
        super().__init__()
        self.state = state
        self.wall = wall
        self.heat_metric = "temp"
        self._table_view: tuple[str | None, bool, str] = (None, False, "")
        self.tier_order = TierOrder()  # one fixed order for the tier table, the overview tab and the wall
        self.cycle_paused = False
        self._cycled_at: float | None = None

    # ----- layout
    def compose(self) -> ComposeResult:
        th = self.state.thresholds
        if not self.is_mounted:  # first compose: pick the layout now rather than recompose at once
            self.set_reactive(OverviewScreen.compact, self._is_compact(self.app.size.width, self.app.size.height))
        # the overview tab first at small sizes: focus its tab strip, not the GPU table in another tab
        self.AUTO_FOCUS = "#tabs Tabs" if self.panels[0] == "summary" else "#gpus"  # type: ignore[misc]  # Textual declares it a ClassVar; the focus target depends on the layout picked
        yield Header()
        yield Banner(id="banner")
        if self.wall:
            yield WallKpis(th, id="kpis", serving=self.serving_shown)
            yield WallTiers(th, self.tier_order, id="wall-tiers")
            yield CycleLine("", id="cycle")
        else:
            yield KpiStrip(th, id="kpis")
        yield HostLine(max_lines=1 if self.compact else 2, id="host")  # one line in the small layout
        yield GuardPanel(id="guard", read_only=not self.EDITABLE)
        if self.compact or self.wall:
            with TabbedContent(id="tabs", initial=f"tab-{self.panels[0]}"):
                if "summary" in self.panels:
                    with TabPane("Overview", id="tab-summary"):
                        yield Summary(th, self.tier_order, id="summary")
                with TabPane("GPUs", id="tab-gpus"):
                    yield from self._gpu_panel()
                with TabPane("Heat map", id="tab-heat"):
                    yield from self._heat_panel()
                with TabPane("Tiers", id="tab-tiers"):
                    yield TierPanel(th, self.state.clock, self.tier_order, id="tiers")
                if "service" in self.panels:
                    with TabPane("Service", id="tab-service"):
                        yield ServicePanel(id="service")
                with TabPane("Events", id="tab-events"):
                    yield from self._event_panel()
        else:
            with Horizontal(id="body"):
                with Vertical(id="left"):
                    with Vertical(id="gpu-panel", classes="panel") as p:
                        p.border_title = "GPUs"
                        yield from self._gpu_panel()
                    with Vertical(id="heat-panel", classes="panel") as p:
                        p.border_title = "Heat map"
                        yield from self._heat_panel()
                with Vertical(id="right"):
                    with Vertical(id="tier-panel", classes="panel") as p:
                        p.border_title = "Tiers (15 min)"
                        yield TierPanel(th, self.state.clock, self.tier_order, id="tiers")
                    if self.serving_shown:
                        with Vertical(id="service-panel", classes="panel") as p:
                            p.border_title = "Service (inference servers, last minute)"
                            yield ServicePanel(id="service")
                    with Vertical(id="event-panel", classes="panel") as p:
                        p.border_title = "Events"
                        yield from self._event_panel()
        yield FitFooter()

    @property
    def panels(self) -> tuple[str, ...]:
        """The tabs, in order: an overview tab first at small sizes (not on a wall, which shows its KPIs)."""
        panels = PANELS if not self.serving_shown else (*PANELS[:3], "service", *PANELS[3:])
        return panels if self.wall or not self.compact else ("summary", *panels)

    @property
    def serving_shown(self) -> bool:
        """Inference servers are watched: the Service panel (and the wall's serving figures) are laid out."""
        return bool(getattr(self.app, "serving_shown", False))

    def _event_panel(self) -> ComposeResult:
        with Vertical(id="event-box"):
            yield IncidentBar(id="incidents")
            yield EventLog(id="events")

    def _gpu_panel(self) -> ComposeResult:
        column, reverse, text = self._table_view
        yield Input(text, placeholder="filter GPUs: node, model, status, throttle reason (esc: done)",
                    id="gpu-filter", disabled=not text, classes="-shown" if text else "")
        yield Static("", id="gpu-note")
        table = GpuTable(self.state.thresholds, id="gpus")
        # a resize across the breakpoint rebuilds the panels: keep the operator's sort and filter
        table.set_reactive(GpuTable.sort_column, column)
        table.set_reactive(GpuTable.sort_reverse, reverse)
        table.set_reactive(GpuTable.filter_text, text)
        yield table

    def _heat_panel(self) -> ComposeResult:
        yield HeatLegend(id="heat-legend")
        yield HeatMap(self.state.thresholds, fill=self.wall, id="heat")  # a wall: GPUs as blocks that fill it

    def on_mount(self) -> None:
        self.set_class(self.wall, "-wall")
        self.set_class(self.compact, "-compact")
        self._fit_title()
        self.show_all()

    def on_resize(self) -> None:
        compact = self._is_compact(self.size.width, self.size.height)
        if compact != self.compact:
            tables = self.query(GpuTable)
            if tables:
                t = tables.first()
                self._table_view = (t.sort_column, t.sort_reverse, t.filter_text)
            self.compact = compact
        self._fit_title()

    def _fit_title(self) -> None:
        """At small sizes the header shows the subtitle's parts that fit whole (`?` shows all of it), so an
        address is never cut mid-way; at large sizes the app's subtitle as it is."""
        full = self.app.sub_title
        room = self.size.width - len(self.app.title) - 22  # the header's icon, clock space and separator
        parts, shown = full.split(" · "), list[str]()
        for part in parts:
            if len(" · ".join([*shown, part, "? shows all"])) > room:
                break
            shown.append(part)
        short = full if len(full) <= room else " · ".join([*shown, "? shows all"])
        self.sub_title = short if short != full else None

    @staticmethod
    def _is_compact(width: int, height: int) -> bool:
        return width < COMPACT_WIDTH or height < COMPACT_HEIGHT

    def watch_compact(self, compact: bool) -> None:
        # after a recompose the new widgets start empty: fill them from the state
        self.set_class(compact, "-compact")
        self.call_after_refresh(self.show_all)

    # ----- rendering
    def show_all(self) -> None:
        self.show()
        logs = self.query(EventLog)  # absent for a moment mid-recompose: show() copes the same way
        if logs:
            logs.first().add(self.state.events)
        self._show_incidents()

    def show(self, sources: tuple[Source, ...] = tuple(Source)) -> None:
        """Push the state into the widgets; `sources` limits the work to what changed."""
        try:
            self._show(sources)
        except NoMatches:
            pass  # mid-recompose (a resize across the breakpoint): show_all() runs once it is done

    def _show(self, sources: tuple[Source, ...]) -> None:
        st = self.state
        level, text = st.banner()
        if self.compact and not st.redis_configured:
            text = NO_REDIS_SHORT  # one line at 80 columns; the overview tab says the rest
        self.query_one("#banner", Banner).message = (level, text)
        self.query_one("#kpis").kpis = st.kpis()  # type: ignore[attr-defined]  # KpiStrip and WallKpis both have `kpis`; the query returns a Widget
        if Source.HOST in sources:
            sample, age, err = st.source_status(Source.HOST)
            self.query_one(HostLine).show(host_groups(sample, age, err))
        if Source.GPUS in sources or Source.FLEET in sources:
            note = self.query_one("#gpu-note", Static)
            text = st.gpu_note()
            if text != str(note.render()):
                note.update(text)
                note.set_class(bool(text), "-shown")
            self.query_one(GpuTable).gpu_rows = st.rows
            self.query_one(HeatMap).gpu_rows = st.rows
            self.query_one(HeatLegend).show(self.heat_metric, st.thresholds)
        if Source.TRAFFIC in sources:
            panel = self.query_one(TierPanel)
            _, age, _ = st.source_status(Source.TRAFFIC)
            stale = age is not None or st.redis_error is not None
            panel.show(quotas=dict(st.quotas), traffic=st.traffic, stale=stale,
                       note=st.banner()[1] if not st.redis_configured else "")
            for wall_tiers in self.query(WallTiers):
                wall_tiers.show(dict(st.quotas), st.traffic, stale)
        if Source.SERVING in sources:
            for service in self.query(ServicePanel):
                service.show(st.service_rows(), empty_text(st.serving))
        self._show_summary()
        self._show_cycle()

    def _show_summary(self) -> None:
        found = self.query(Summary)
        if not found:
            return
        st = self.state
        _, age, _ = st.source_status(Source.TRAFFIC)
        found.first().show(SummaryData(
            rows=st.rows, quotas=dict(st.quotas), traffic=st.traffic,
            traffic_stale=age is not None or st.redis_error is not None, redis_configured=st.redis_configured,
            gpu_note=st.gpu_note(), events=st.events[-50:] + [e for e in st.events[:-50] if e.ongoing],
            now=st.clock(),
        ))

    def _show_incidents(self) -> None:
        for bar in self.query(IncidentBar):
            bar.show(self.state.ongoing())

    def _show_cycle(self) -> None:
        found = self.query(CycleLine)
        tabs = self._ready_tabs()
        if not found or tabs is None:
            return
        ids = [f"tab-{p}" for p in self.panels]
        i = ids.index(tabs.active) if tabs.active in ids else 0
        left = None
        if self._cycled_at is not None and not self.cycle_paused:
            left = getattr(self.app, "_wall_cycle_s", 10.0) - (time.monotonic() - self._cycled_at)
        found.first().show(PANEL_NAMES[self.panels[i]], i + 1, len(ids), self.cycle_paused, left)

    def add_events(self, events: list) -> None:
        logs = self.query(EventLog)
        if events and logs:
            logs.first().add(events)
        if any(e.incident for e in events):
            self._show_incidents()

    @property
    def selected_tier(self) -> str | None:
        panels = self.query(TierPanel)
        return panels.first().selected_tier if panels else None

    @property
    def tiers_focused(self) -> bool:
        return self.focused is not None and self.focused.id == "tier-table"

    def _ready_tabs(self) -> TabbedContent | None:
        """The tabs when they can be switched: none in the wide layout, nor while they are still mounting."""
        found = self.query("#tabs")
        if not found:
            return None
        tabs = found.first(TabbedContent)
        # Just after start or a recompose the TabbedContent exists before its tab strip and its panes
        # do, and setting `active` then raises (no such tab, or no such pane in its switcher): a wall
        # console on a slow box died of this on its first cycle. Both must be complete.
        # (queries, never `tab_count`: that raises while the strip itself is not there yet)
        n = len(self.panels)
        ready = (tabs.is_mounted and len(tabs.query("#tabs-list > ContentTab")) == n
                 and len(tabs.query("ContentSwitcher > TabPane")) == n)
        return tabs if ready else None

    def _show_tab(self, pane_id: str) -> None:
        if tabs := self._ready_tabs():
            try:
                tabs.active = pane_id
            except (NoMatches, ValueError):  # a mount step Textual has and this check misses: next time
                pass

    def focus_tiers(self) -> None:
        self._show_tab("tab-tiers")
        self.query_one("#tier-table").focus()

    def cycle_panel(self, step: int = 1, *, by_timer: bool = True) -> None:
        """Wall mode: show the next tab (skipped while the tabs are still mounting, or paused)."""
        if by_timer:
            self._cycled_at = time.monotonic()
            if self.cycle_paused:
                return
        if tabs := self._ready_tabs():
            ids = [f"tab-{p}" for p in self.panels]
            self._show_tab(ids[(ids.index(tabs.active) + step) % len(ids)] if tabs.active in ids else ids[0])
        self._show_cycle()

    def action_pause_cycle(self) -> None:
        """Wall mode: stop (or restart) the panel cycle; the cycle line says it is paused."""
        self.cycle_paused = not self.cycle_paused
        self._show_cycle()

    def action_panel(self, step: int) -> None:
        """Wall mode: the previous or next panel by hand."""
        self.cycle_panel(step, by_timer=False)

    # ----- actions
    def action_filter(self) -> None:
        self._show_tab("tab-gpus")
        box = self.query_one("#gpu-filter", Input)
        box.disabled = False
        box.add_class("-shown")
        box.focus()

    @on(Input.Changed, "#gpu-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(GpuTable).filter_text = event.value

    @on(Input.Submitted, "#gpu-filter")
    def _filter_done(self) -> None:
        self.query_one(GpuTable).focus()

    def on_key(self, event) -> None:
        box = self.query("#gpu-filter")
        if event.key == "escape" and box and box.first().has_focus:
            inp = box.first(Input)
            if not inp.value:
                inp.remove_class("-shown")
                inp.disabled = True
            self.query_one(GpuTable).focus()
            event.stop()

    def action_sort(self) -> None:
        self.query_one(GpuTable).action_sort_next()

    def action_toggle_heat(self) -> None:
        self.heat_metric = "util" if self.heat_metric == "temp" else "temp"
        self.query_one(HeatMap).metric = self.heat_metric
        self.query_one(HeatLegend).show(self.heat_metric, self.state.thresholds)


class EditableOverviewScreen(OverviewScreen):
    """The overview with the edit binding; read-only and wall modes use OverviewScreen, which has none."""

    EDITABLE = True
    BINDINGS = [Binding("e", "edit_quota", "Edit quota"), Binding("r", "app.restore", "Restore quotas", show=False),
                Binding("a", "guard_answer(True)", "Accept guard proposal", show=False),
                Binding("x", "guard_answer(False)", "Dismiss guard proposal", show=False)]

    def action_edit_quota(self) -> None:
        """The tier panel asks for its chosen tier's editor (the app opens it, or says why not)."""
        panels = self.query(TierPanel)
        if panels:
            panels.first().request_edit()
        else:  # a layout without the tier panel mounted yet: the app takes the operator there
            self.post_message(TierPanel.EditRequested(None))

    def action_guard_answer(self, accept: bool) -> None:
        """The guard panel asks for its open proposal to be answered (the app does it, through its session)."""
        self.query_one(GuardPanel).request_answer(accept=accept)
