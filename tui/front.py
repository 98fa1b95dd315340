"""The front ends this UI provides to the core's CLI (surgewatch.frontends): registered in `pyproject.toml` as
the `surgewatch.front_ends` entry point, so the core starts them without importing Textual or `tui`."""

from __future__ import annotations

import sys
from typing import Any

from quotas.safe import safe
from surgewatch.frontends import ServeOptions
from surgewatch.recording.reader import Recording
from surgewatch.settings import Settings


class TextualFrontEnds:
    """The Textual console, its demo and replay forms, and the wall served to browsers."""

    def run_console(self, settings: Settings, *, record: str | None) -> int:
        from tui.app import run_console

        return run_console(settings, record=record)

    def demo_app(self, settings: Settings, *, subtitle: str, recorder: Any) -> Any:
        from tui.app import FREEZE_HEAP_AFTER_S, create_app

        app = create_app(settings, subtitle=subtitle, recorder=recorder)
        app.freeze_heap_after_s = FREEZE_HEAP_AFTER_S  # a console process (tui/app.py's run_console does the same)
        # Textual only hints at q on Ctrl+C; the demo promises that Ctrl+C ends it (an Input still copies with it)
        app.action_help_quit = app.action_quit  # type: ignore[method-assign,assignment]  # sync slot, async action: Textual awaits either
        return app

    def replay_app(self, settings: Settings, recording: Recording, *, start_at: float | None, speed: int,
                   subtitle: str) -> Any:
        from tui.app import create_app
        from tui.replay import Player

        return create_app(settings, replay=Player(recording, start_at=start_at, speed=speed), subtitle=subtitle)

    def serve(self, settings: Settings, options: ServeOptions) -> int:
        import asyncio
        import signal

        from tui import serve_log
        from tui.serve import WallServer

        log_handler = serve_log.configure(sys.stderr)
        server = WallServer(settings, options)
        host = f"[{options.host}]" if ":" in options.host else options.host  # an IPv6 address in a URL
        where = safe(options.public_url or f"http://{host}:{options.port}/")  # typed text: made visible
        login = " (login: open it once with ?token=TOKEN, or send Authorization: Bearer)" if options.token else ""

        async def main() -> None:
            stop, ready = asyncio.Event(), asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)

            async def announce() -> None:  # once it listens: a port taken is said instead, never both
                await ready.wait()
                print(f"surgewatch serve: the wall console on {where}{login}", file=sys.stderr, flush=True)

            said = asyncio.create_task(announce())
            try:
                await server.run(ready=ready, stop=stop)
            finally:
                said.cancel()

        try:
            asyncio.run(main())
        except OSError as e:  # the port is taken, the address is not ours
            print(f"surgewatch serve: cannot listen on {safe(options.host)}:{options.port}: "
                  f"{safe(e.strerror or e)}", file=sys.stderr)
            return 1
        finally:
            log_handler.close()  # says how many lines the rate limit left out at the end
        return 0


FRONT_ENDS = TextualFrontEnds()
