"""The demo surge through the real console: a minute of waves of throttling is one incident, not sixty lines."""

from __future__ import annotations

from typing import cast

from sim.runner import WorldThread
from sim.world import DemoConfig, Tick
from surgewatch.cli.demo import demo_app
from surgewatch.settings import Settings
from tui.app import SurgewatchApp
from tui.testing import wait_until
from tui.widgets.events_log import EventLog, IncidentBar


async def test_a_minute_of_the_surge_holds_one_updating_throttling_incident() -> None:
    """After 60 simulated seconds of the surge the events panel has one throttling line, updated in place."""
    ticks: list[Tick] = []
    world = WorldThread(DemoConfig(nodes=8, gpus_per_node=4, seed=0, speed=4.0), on_tick=ticks.append)
    world.start()
    try:
        app = cast(SurgewatchApp, demo_app(world, Settings()))
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: any(e.kind == "throttle" for e in app.state.events), 60,
                             "the fleet to start throttling")
            shown: set[str] = set()

            def a_minute_on() -> bool:
                shown.update(t for t in app.overview.query_one(IncidentBar).texts if "throttl" in t)
                return len(ticks) >= 60

            await wait_until(pilot, a_minute_on, 60, "60 simulated seconds")
            throttle = [e for e in app.state.events if e.kind == "throttle"]
            assert len({e.incident for e in throttle}) == 1 and len(throttle) == 1
            logged = [t for t in app.overview.query_one(EventLog).texts if "throttl" in t]
            # the throttling incident's own lines (the demo's SLO breaches are incidents of their own)
            bar = [t for t in app.overview.query_one(IncidentBar).texts if "throttl" in t]
            # ongoing: pinned, one line; ended: one line in the log; never one line per wave
            assert len(bar) + len(logged) == 1, (bar, logged)
            assert len(shown) > 1  # its counts changed in place while the surge went on
            line = (bar or logged)[0]
            assert "GPUs on" in line and "since" in line and "peak" in line
    finally:
        world.stop()
