"""Running the demo world: headless (JSON lines on stdout) or in a background thread for the console.

Either way the embedded Valkey and every node server stop when the run ends, however it ends
(end of the duration, Ctrl+C, SIGTERM, an error): nothing is left listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis

from sim.valkey import ValkeyProcess
from sim.world import DemoConfig, Tick, World

log = logging.getLogger(__name__)


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def write_nodes_file(valkey: ValkeyProcess, urls: list[str], name: str = "nodes.txt") -> Path:
    """The node URLs (or the inference servers', `servers.txt`), one a line, for `surgewatch --nodes @FILE`
    (`--servers @FILE`) in a second terminal."""
    path = valkey.data_dir / name
    path.write_text("".join(u + "\n" for u in urls))
    return path


def join_command(redis_url: str, nodes_file: Path | None, servers_file: Path | None = None) -> str:
    """The command a second terminal runs to see this world: its Redis and, when it serves nodes, their list
    (without --nodes that console would show the tiers and no fleet) and their inference servers' list."""
    nodes = f" --nodes @{nodes_file}" if nodes_file is not None else ""
    servers = f" --servers @{servers_file}" if servers_file is not None else ""
    return f"surgewatch --redis {redis_url}{nodes}{servers}"


async def _headless(config: DemoConfig, valkey: ValkeyProcess, duration_s: int, out: IO[str], err: IO[str]) -> bool:
    """The scenario for `duration_s` simulated seconds; True when a SIGTERM stopped it first."""
    client = _client(valkey.url)
    world: World | None = None
    # SIGTERM ends the run between two ticks, through the loop: an exception raised by a signal handler at an
    # arbitrary point of the loop could be swallowed there, and a terminated demo then ran on (seen under load)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        world = await World.create(config, client)
        nodes = write_nodes_file(valkey, world.node_urls) if world.node_urls else None
        servers = write_nodes_file(valkey, world.server_urls, "servers.txt") if world.server_urls else None
        served = f"{len(world.node_urls)} nodes; " if world.node_urls else ""
        print(f"surgewatch demo: {served}join with: {join_command(valkey.url, nodes, servers)}", file=err,
              flush=True)

        def emit(tick: Tick) -> None:
            out.write(json.dumps(tick.to_json(), separators=(", ", ": ")) + "\n")
            out.flush()

        await world.run(emit, duration_s=duration_s, stop=stop)
        return stop.is_set()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)
        if world is not None:
            await world.close()
        await client.aclose()


def run_headless(
    config: DemoConfig,
    duration_s: int,
    *,
    redis_port: int | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """Run the scenario for `duration_s` simulated seconds, one JSON object a second on `out`."""
    valkey = ValkeyProcess(redis_port)
    try:
        valkey.start()
        terminated = asyncio.run(_headless(config, valkey, duration_s, out, err))
    finally:
        valkey.close()
    return 128 + signal.SIGTERM if terminated else 0  # a terminated run says so, as the shell's convention has it


class WorldThread:
    """The world in a background thread with its own event loop, so the console's loop never waits on it.

    `start()` returns once Valkey answers, the tiers are seeded and the nodes serve; `stop()` ends
    the loop, closes the node servers and stops Valkey. Ticks are handed to `on_tick` in the
    world's thread (keep it cheap)."""

    def __init__(
        self, config: DemoConfig, *, redis_port: int | None = None, on_tick: Callable[[Tick], None] | None = None
    ) -> None:
        self.config = config
        self.valkey = ValkeyProcess(redis_port)
        self.on_tick = on_tick
        self.node_urls: list[str] = []
        self.nodes_file: Path | None = None
        self.server_urls: list[str] = []  # each node's inference server (sim/serving.py)
        self.servers_file: Path | None = None
        self.last_tick: Tick | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def redis_url(self) -> str:
        return self.valkey.url

    def start(self, timeout_s: float = 30.0) -> WorldThread:
        self.valkey.start()
        self._thread = threading.Thread(target=self._main, name="surgewatch-demo-world", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise RuntimeError(f"the demo world did not start within {timeout_s}s")
        if self._error is not None:
            err = self._error
            self.stop()
            raise RuntimeError(f"the demo world failed to start: {err}") from err
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as e:  # reported to start(), or logged if it happens later
            self._error = e
            log.exception("demo world stopped with an error")
        finally:
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = _client(self.valkey.url)
        world: World | None = None
        try:
            world = await World.create(self.config, client)
            self.node_urls = world.node_urls
            if self.node_urls:
                self.nodes_file = write_nodes_file(self.valkey, self.node_urls)
            self.server_urls = world.server_urls
            if self.server_urls:
                self.servers_file = write_nodes_file(self.valkey, self.server_urls, "servers.txt")
            self._ready.set()

            def tick(t: Tick) -> None:
                self.last_tick = t
                if self.on_tick is not None:
                    self.on_tick(t)

            await world.run(tick, stop=self._stop)
        finally:
            if world is not None:
                await world.close()
            await client.aclose()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the world and the server; idempotent."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # the loop already ended
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.valkey.close()

    def __enter__(self) -> WorldThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
