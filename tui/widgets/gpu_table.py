"""The GPU table: one row per GPU, updated cell by cell, sortable by any column and filterable."""

from __future__ import annotations

from textual.binding import Binding
from textual.reactive import reactive
from textual.widgets import DataTable

from surgewatch.kpis import GpuRow, format_age, mem_pct, mig_summary, near_full, severity_key, short_model
from surgewatch.thresholds import BAD, OK, STALE, WARN, Thresholds
from tui.widgets.cells import Cell, num_cell, sort_key
from tui.widgets.columns import Column, Shown
from tui.widgets.fitted_table import FittedTable

# In display order, what an operator acts on first: a GPU's status, temperature, utilization and throttling
# (and an XID) come right after its name and stay on screen at any size (keep 0-6); the rest is shown as
# room allows (tui.widgets.columns). `most` is the widest a value is drawn: longer ones end in an ellipsis
# in their own column, so no value (a long throttle list, a long model name) pushes the others away.
COLUMN_SPECS = (
    Column("node", "node", keep=0, most=21, least=6),
    Column("gpu", "gpu", keep=1, most=17, least=3, shrinks=True),  # narrowed to its index ("0 …") before a column goes
    Column("status", "status", keep=2, most=12, least=6),
    Column("temp", "temp", keep=3, most=5),
    Column("util", "util", keep=4, most=4),
    Column("throttle", "throttle", keep=5, most=18, short="thr"),
    Column("xid", "xid", keep=6, most=4),
    Column("mem", "mem GiB", keep=7, most=9, short="GiB"),
    Column("power", "W", keep=8, most=4),
    Column("mig", "MIG", keep=9, most=16),
    Column("clock", "SM MHz", keep=10, most=6, short="MHz"),
    Column("tensor", "tensor", keep=11, most=6, short="tens"),
    Column("dram", "dram", keep=12, most=4),
)
COLUMNS: tuple[tuple[str, str], ...] = tuple((c.key, c.label) for c in COLUMN_SPECS)
COLUMN_INDEX = {key: i for i, (key, _) in enumerate(COLUMNS)}
STATUS_STYLE = {"ok": OK, "hot": BAD, "throttled": WARN, "xid": BAD, "lost": "bold magenta", "down": BAD, "stale": WARN,
                "mig-full": BAD, "no-gpus": WARN}


def row_cells(row: GpuRow, th: Thresholds) -> list[Cell]:
    """The cells of one GPU; a stale row is dimmed whole and says how old its values are."""
    g = row.gpu
    dim = STALE if row.stale else None
    if row.placeholder:
        return node_cells(row)
    mem = None
    if g.mem_used_mib is not None:
        total = f"/{g.mem_total_mib / 1024:.0f}" if g.mem_total_mib else ""
        mem = Cell(f"{g.mem_used_mib / 1024:.1f}{total}", dim or "", g.mem_used_mib)
    status = row.status if row.age_s is None else f"{row.status} {format_age(row.age_s)}"
    # the model without its vendor prefix ("T4", "V100-SXM2-32GB", "RTX 2000 Ada"); the column's
    # ellipsis abbreviates it only where it must
    name = short_model(g.name)
    mig = mig_summary(g.mig)
    full = g.mig is not None and any(near_full(m) for m in g.mig)
    return [  # in COLUMN_SPECS order
        Cell(row.node, dim or "", row.node),
        Cell(f"{g.index} {name}".rstrip(), dim or "", g.index),
        # sorting by status sorts worst first (surgewatch.kpis.severity_key), not by the word
        Cell(status, STATUS_STYLE.get(row.status, ""), severity_key(row)),
        num_cell(g.temp_c, "{:.0f}", dim or th.temp_style(g.temp_c), "°C"),
        num_cell(g.util_pct, "{:.0f}", dim or th.util_style(g.util_pct), "%"),
        Cell(",".join(g.throttle) or "-", dim or (WARN if g.throttle else "dim"), ",".join(g.throttle)),
        Cell(str(g.xid) if g.xid is not None else "-", dim or (BAD if g.xid is not None else "dim"), g.xid),
        mem or Cell("n/a", "dim"),
        num_cell(g.power_w, "{:.0f}", dim or ""),
        Cell(mig or "-", dim or (BAD if full else "" if mig else "dim"), mig),
        num_cell(g.sm_clock_mhz, "{:.0f}", dim or ""),
        num_cell(g.tensor_active_pct, "{:.0f}", dim or "", "%"),
        num_cell(g.dram_active_pct, "{:.0f}", dim or "", "%"),
    ]


def node_cells(row: GpuRow) -> list[Cell]:
    """A node with no GPU to show: its name, why (in the model's column, wide enough for "up, no GPU
    series"; a long error is cut there and read in full in the events) and its state."""
    style = STATUS_STYLE.get(row.status, "")
    note = row.note.removeprefix("down: ")  # the status column says down
    cells = [Cell(row.node, STALE if row.stale else "", row.node), Cell(note, style, -1),
             Cell(row.status, style, severity_key(row))]
    return cells + [Cell("", "", None) for _ in COLUMNS[len(cells):]]


def instance_lines(row: GpuRow) -> list[str]:
    """A MIG GPU's instances, one line each, flagged when near their memory limit."""
    out = []
    for m in row.gpu.mig or ():
        pct = mem_pct(m.mem_used_mib, m.mem_total_mib)
        mem = "n/a" if m.mem_used_mib is None else f"{m.mem_used_mib:.0f}/{_f(m.mem_total_mib)} MiB"
        flag = "  NEAR ITS MEMORY LIMIT" if near_full(m) else ""
        out.append(f"GI {m.gi_id:<3} {m.profile:<10} mem {mem:<18} {_f(pct, '{:.1f}%'):>6}  util "
                   f"{_f(m.util_pct, '{:.0f}%')}{flag}")
    return out


def _f(v: float | None, fmt: str = "{:.0f}") -> str:
    return "n/a" if v is None else fmt.format(v)


class GpuTable(FittedTable):
    """Every GPU of the fleet. Rows keep their keys across ticks: only changed cells are updated."""

    DEFAULT_CSS = """
    GpuTable { height: 1fr; scrollbar-size-vertical: 1; }
    """
    COLUMN_SPECS = COLUMN_SPECS
    ESSENTIAL = 5  # node, gpu, status, temp, util, throttle: the model name is cut to keep them

    BINDINGS = [
        Binding("s", "sort_next", "Sort", tooltip="Sort by the next column (again: reverse)"),
        Binding("m", "mig", "MIG instances", tooltip="Show the GPU instances of the selected MIG GPU"),
    ]

    gpu_rows: reactive[tuple[GpuRow, ...]] = reactive((), always_update=True, repaint=False)
    """The GPUs to show; set by the screen on each fleet or NVML reading."""
    filter_text: reactive[str] = reactive("")
    """Case-insensitive text a row must contain (node, model, status, throttle reason) to be shown."""
    sort_column: reactive[str | None] = reactive(None)
    """The column key rows are sorted by; None for the default, worst first (by status)."""
    sort_reverse: reactive[bool] = reactive(False)

    def __init__(self, thresholds: Thresholds, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.thresholds = thresholds
        self._shown_rows: dict[str, GpuRow] = {}

    @staticmethod
    def _matches(row: GpuRow, f: str) -> bool:
        hay = (f"{row.node} gpu{row.gpu.index} {row.gpu.name or ''} {row.status} {' '.join(row.gpu.throttle)} "
               f"{mig_summary(row.gpu.mig)} {row.note}")
        return f in hay.lower()

    def watch_gpu_rows(self, rows: tuple[GpuRow, ...]) -> None:
        self._sync(rows)

    def watch_filter_text(self) -> None:
        window = getattr(self.app, "fleet_window", None) if self.is_mounted else None
        if window is not None:
            # a fleet too large to fetch whole (Prometheus mode): the next refresh fetches the nodes
            # whose name holds the filter text, so filtering for a node finds it
            window.focus = self.filter_text
        self._sync(self.gpu_rows)

    def _sync(self, rows: tuple[GpuRow, ...]) -> None:
        """Add new rows, remove gone ones, update changed cells; never clear and rebuild."""
        if not self.is_mounted:
            return
        with self.batch_updates():
            self._sync_rows(rows)

    def _sync_rows(self, rows: tuple[GpuRow, ...]) -> None:
        th = self.thresholds
        f = self.filter_text.strip().lower()
        wanted = {r.key: r for r in rows if self._matches(r, f)} if f else {r.key: r for r in rows}
        for key in [k for k in self._shown if k not in wanted]:
            self.remove_row(key)
            del self._shown[key]
            del self._shown_rows[key]
        added = changed = grown = False
        for key, row in wanted.items():
            prev = self._shown_rows.get(key)
            if prev is row:
                continue  # the same (immutable) row object: nothing to redraw
            if prev is not None and prev == row:
                self._shown_rows[key] = row  # a new scrape with the same values: nothing to redraw
                continue
            self._shown_rows[key] = row
            changed = True
            cells = row_cells(row, th)
            old = self._shown.get(key)
            grown = grown or self.outgrown(cells)  # a wider value: the columns are planned again below
            if old is None:
                self._shown[key] = cells
                self.add_row(*self.shown_cells(cells), key=key)
                added = True
            else:
                diff = self.changed(cells, old)
                sort_col = COLUMN_INDEX[self.sorted_by]
                if cells[sort_col].value != old[sort_col].value and self.sorted_by in self.shown_columns:
                    # DataTable sorts by the cells it holds: the sort value changed (a hotter GPU) under the
                    # same text ("throttled"), so the cell is replaced too
                    diff[self.sorted_by] = cells[sort_col]
                self._shown[key] = cells
                if diff:
                    self.update_row(key, diff)
        if grown and self.refit():
            added = True  # rebuilt for wider values: sorted again below
        if added:
            self._apply_sort()
        elif changed:
            self._apply_sort(only_if_moved=True)

    @property
    def sorted_by(self) -> str:
        """The column rows are sorted by now: the operator's, or status (worst first) by default."""
        return self.sort_column or "status"

    def _apply_sort(self, *, only_if_moved: bool = False) -> None:
        if not self._shown:
            return
        column, reverse = self.sorted_by, self.sort_reverse if self.sort_column else False
        col = COLUMN_INDEX[column]
        current = self.shown_keys
        wanted = sorted(current, key=lambda k: sort_key(self._shown[k][col]), reverse=reverse)
        if only_if_moved and wanted == current:
            return  # a sort re-renders the whole table: skip it when the new values leave the order as it is
        if column in self.shown_columns:
            self.sort(column, key=sort_key, reverse=reverse)
        else:  # sorted by a column this width leaves out: the rows are laid out again in that order
            self.clear()
            for key in wanted:
                self.add_row(*self.shown_cells(self._shown[key]), key=key)

    def _rebuild(self, plan: tuple[Shown, ...]) -> None:
        super()._rebuild(plan)
        self._apply_sort()

    def watch_sort_column(self) -> None:
        self._apply_sort()

    def watch_sort_reverse(self) -> None:
        self._apply_sort()

    def action_sort_next(self) -> None:
        """Cycle the sort column; a column sorts ascending, then descending, then the next one."""
        keys = [k for k, _ in COLUMNS]
        if self.sort_column is None:
            self.sort_column = keys[0]
        elif not self.sort_reverse:
            self.sort_reverse = True
        else:
            self.sort_reverse = False
            self.sort_column = keys[(keys.index(self.sort_column) + 1) % len(keys)]
        order = "descending" if self.sort_reverse else "ascending"
        self.notify(f"GPUs sorted by {dict(COLUMNS)[self.sort_column]} {order}")

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        # clicking a header sorts by it; clicking it again reverses
        key = str(event.column_key.value)
        if self.sort_column == key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_reverse = False
            self.sort_column = key

    @property
    def selected_row(self) -> GpuRow | None:
        if not self._shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self._shown_rows.get(str(key))

    def action_mig(self) -> None:
        """Expand the selected MIG GPU to its instances (a list over the table; esc closes it)."""
        row = self.selected_row
        if row is None or row.gpu.mig is None:
            self.notify("The selected GPU is not in MIG mode.", severity="warning")
            return
        from tui.screens.mig import MigInstancesScreen

        title = f"{row.node} GPU {row.gpu.index} {short_model(row.gpu.name)}: {mig_summary(row.gpu.mig)}"
        self.app.push_screen(MigInstancesScreen(title, instance_lines(row)))

    @property
    def shown_keys(self) -> list[str]:
        """Row keys in display order (what the operator sees, top to bottom)."""
        return [str(r.key.value) for r in self.ordered_rows]
