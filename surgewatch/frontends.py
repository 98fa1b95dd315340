"""The front ends the CLI starts, named by the core and provided by the UI: the console, the demo's console,
replay's console and the served wall.

The core never imports the UI (`tui`, Textual): the `tui` package plugs in through the `surgewatch.front_ends`
entry point that `pyproject.toml` declares (`tui.front:FRONT_ENDS`), found with `importlib.metadata`, as pytest
finds its plugins. A headless command (`guard`, `record`, `snapshot`, `quota`) never loads it. Also here, pure and
shared by both sides: the served wall's options and the loopback rule the CLI checks before anything starts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from surgewatch.settings import Settings

if TYPE_CHECKING:
    from surgewatch.recording.reader import Recording

GROUP = "surgewatch.front_ends"


@dataclass
class ServeOptions:
    """`surgewatch serve`'s options, validated by the CLI."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    public_url: str | None = None
    max_viewers: int = 20
    size: tuple[int, int] = (160, 48)
    frame_s: float = 1.0
    client_timeout_s: float = 10.0  # an idle or slow-header connection is closed after this
    max_connections: int = 256  # open at once, all clients (fewer if the descriptor limit is lower)


def listen_host(host: str, option: str = "--host") -> str:
    """`host` if it can be an address to listen on; ValueError naming `option` otherwise. An empty host is
    refused: aiohttp and asyncio read it as every interface, while the log would say whatever was typed."""
    shown = repr(host[:60])  # repr: a control character typed or pasted is shown, never sent to the terminal
    if not host.strip() or len(host) > 253 or not host.isprintable() or any(c.isspace() for c in host):
        raise ValueError(f"invalid {option} {shown}: an IP address or a host name")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1] as in a URL
    if all(c.isdigit() or c == "." for c in bare) or ":" in bare or "[" in bare or "]" in bare:  # an address
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            raise ValueError(f"invalid {option} {shown}: not an IP address") from None
    return bare


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1), brackets or not."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FrontEnds(Protocol):
    """What the CLI asks of a UI: each call runs until the operator quits, and returns the exit code (or the app)."""

    def run_console(self, settings: Settings, *, record: str | None) -> int: ...

    def demo_app(self, settings: Settings, *, subtitle: str, recorder: Any) -> Any: ...

    def replay_app(self, settings: Settings, recording: Recording, *, start_at: float | None, speed: int,
                   subtitle: str) -> Any: ...

    def serve(self, settings: Settings, options: ServeOptions) -> int: ...


class NoFrontEnd(RuntimeError):
    """No UI is installed (the `surgewatch.front_ends` entry point is missing: a checkout used without
    `pip install`)."""


def front_ends() -> FrontEnds:
    """The installed UI's front ends."""
    found = list(entry_points(group=GROUP, name="tui"))
    if not found:
        raise NoFrontEnd("no console is installed (the surgewatch.front_ends entry point is missing): "
                         "install surgewatch with `pip install -e .` (or `pip install surgewatch`)")
    provided: FrontEnds = found[0].load()
    return provided
