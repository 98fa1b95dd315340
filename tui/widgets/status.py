"""The banner (Redis unreachable, no Redis configured) and the local host line."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from collectors.samples import HostSample
from surgewatch.kpis import format_age


class Banner(Static):
    """A one- or two-line warning across the top; hidden when there is nothing to say."""

    DEFAULT_CSS = """
    Banner { height: auto; padding: 0 1; display: none; }
    Banner.-warn { display: block; background: $warning 30%; color: $text; }
    Banner.-error { display: block; background: $error 40%; color: $text; text-style: bold; }
    Banner.-info { display: block; background: $primary 20%; color: $text; }
    """

    message: reactive[tuple[str, str]] = reactive(("", ""))
    """(level, text): level is error, warn or info; empty text hides the banner."""

    def watch_message(self, message: tuple[str, str]) -> None:
        level, text = message
        for lv in ("error", "warn", "info"):
            self.set_class(bool(text) and lv == level, f"-{lv}")
        self.update(text)


def _rate(bps: float | None) -> str:
    if bps is None:
        return "n/a"
    for unit, size in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bps >= size:
            return f"{bps / size:.1f} {unit}"
    return f"{bps:.0f} B/s"


def host_text(h: HostSample | None, stale_age: float | None, error: object | None) -> Text:
    t = Text()
    if h is None:
        t.append("host: ", style="dim")
        t.append(f"no data yet{f' ({error})' if error else ''}", style="dim italic")
        return t
    style = "dim italic" if stale_age is not None else ""
    t.append(f"{h.hostname} ", style="bold")
    t.append(f"cpu {h.cpu_pct:.0f}%  load {h.load_1:.2f} {h.load_5:.2f} {h.load_15:.2f}  ", style=style)
    t.append(f"mem {h.mem_used_mib / 1024:.1f}/{h.mem_total_mib / 1024:.1f} GiB  ", style=style)
    t.append(
        f"net ↓{_rate(h.net_rx_bps)} ↑{_rate(h.net_tx_bps)}  "
        f"disk r {_rate(h.disk_read_bps)} w {_rate(h.disk_write_bps)}",
        style=style,
    )
    if stale_age is not None:
        t.append(f"  stale {format_age(stale_age)}: {error or 'no update'}", style="yellow")
    return t


class HostLine(Static):
    """The local host's load, dimmed with its age when psutil stops answering."""

    DEFAULT_CSS = "HostLine { height: auto; padding: 0 1; }"
    _shape: tuple[int, int] = (0, 0)

    def show(self, text: Text) -> None:
        """Update without a layout pass unless the number of lines changes (values change every second)."""
        width = max(1, self.size.width - 2)
        shape = (-(-text.cell_len // width), width)
        self.update(text, layout=shape != self._shape)
        self._shape = shape
