"""The banner (Redis unreachable, no Redis configured) and the local host line."""

from __future__ import annotations

from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from collectors.samples import HostSample
from surgewatch.kpis import format_age
from tui.widgets.wrap import pack_groups


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


def host_groups(h: HostSample | None, stale_age: float | None, error: object | None) -> list[Text]:
    """The host line's groups, most important first; a line is broken (or cut) only between groups, so
    "disk r 1.2 MB/s w 8 kB/s" is never split into "disk r n/a w" and a lost tail."""
    if h is None:
        head = Text("host: ", style="dim")
        head.append(f"no data yet{f' ({error})' if error else ''}", style="dim italic")
        return [head]
    style = "dim italic" if stale_age is not None else ""
    name = Text(h.hostname, style="bold")
    groups = [
        Text(f"cpu {h.cpu_pct:.0f}%", style=style),
        Text(f"load {h.load_1:.2f} {h.load_5:.2f} {h.load_15:.2f}", style=style),
        Text(f"mem {h.mem_used_mib / 1024:.1f}/{h.mem_total_mib / 1024:.1f} GiB", style=style),
        Text(f"net ↓{_rate(h.net_rx_bps)} ↑{_rate(h.net_tx_bps)}", style=style),
        Text(f"disk r {_rate(h.disk_read_bps)} w {_rate(h.disk_write_bps)}", style=style),
    ]
    if stale_age is not None:  # that the values are old matters more than any of them: right after the name
        groups.insert(0, Text(f"stale {format_age(stale_age)}: {error or 'no update'}", style="yellow"))
    first = name.copy()
    first.append(" ")
    first.append_text(groups[0])  # the name never stands alone on a line
    return [first, *groups[1:]]


def host_text(h: HostSample | None, stale_age: float | None, error: object | None) -> Text:
    """The host line as one text (groups two spaces apart)."""
    return Text("  ").join(host_groups(h, stale_age, error))


class HostLine(Widget):
    """The local host's load, dimmed with its age when psutil stops answering. Its groups are packed into
    the width it has (two lines at most; one in the compact layout), whole groups only."""

    DEFAULT_CSS = "HostLine { height: auto; padding: 0 1; }"

    def __init__(self, max_lines: int = 2, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]  # Textual's widget options, passed through as given
        self.max_lines = max_lines
        self.groups: list[Text] = []
        self._shape = 0

    def lines(self, width: int) -> list[Text]:
        return pack_groups(self.groups, max(1, width), self.max_lines)

    def show(self, groups: list[Text] | Text) -> None:
        """Update without a layout pass unless the number of lines changes (values change every second)."""
        self.groups = [groups] if isinstance(groups, Text) else groups
        shape = len(self.lines(self.content_size.width))
        self.refresh(layout=shape != self._shape)
        self._shape = shape

    def render(self) -> Text:
        return Text("\n").join(self.lines(self.content_size.width))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return max(1, len(self.lines(width)))
