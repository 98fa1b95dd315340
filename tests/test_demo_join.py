"""A second terminal that runs the join command the demo's header shows sees the demo's fleet, not only its tiers."""

from __future__ import annotations

import shlex
import time
from typing import cast

from textual.pilot import Pilot

from sim.runner import WorldThread
from sim.world import DemoConfig
from surgewatch.cli import build_parser, settings_from
from surgewatch.cli.demo import demo_app
from surgewatch.settings import Settings
from tui.app import SurgewatchApp, create_app


async def test_the_join_command_in_the_demo_header_shows_the_fleet() -> None:
    """Pasting the header's `join:` command opens a console that lists every simulated GPU."""
    world = WorldThread(DemoConfig(nodes=2, gpus_per_node=2, seed=1, speed=2.0))
    world.start()
    try:
        subtitle = cast(SurgewatchApp, demo_app(world, Settings())).sub_title
        join = next(part for part in subtitle.split(" · ") if part.startswith("join: ")).removeprefix("join: ")
        argv = shlex.split(join)
        assert argv[0] == "surgewatch" and "--nodes" in argv
        second = create_app(settings_from(build_parser().parse_args(argv[1:])))
        async with second.run_test(size=(120, 40)) as pilot:
            await wait_rows(pilot, second, 4)
    finally:
        world.stop()


async def wait_rows(pilot: Pilot[int], app: SurgewatchApp, rows: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(app.state.rows) < rows:
        assert time.monotonic() < deadline, f"the joined console showed {len(app.state.rows)} of {rows} GPUs"
        await pilot.pause(0.1)
