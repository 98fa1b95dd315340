"""Host load through psutil.

The 1 Hz path only reads cheap counters (/proc/stat, /proc/meminfo, loadavg) without blocking:
`cpu_percent(interval=None)` compares with the previous call instead of sleeping. Network and disk
counters walk every interface and block device (slow on big hosts), so they are read in a worker
thread every `io_interval_s` and their rates reused in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import psutil

from collectors.samples import HostSample

MIB = 1024 * 1024


def _io_counters() -> tuple[float, Any, Any]:
    """One reading of the slow counters (in a worker thread)."""
    try:
        net = psutil.net_io_counters()
    except (OSError, RuntimeError):
        net = None
    try:
        disk = psutil.disk_io_counters()
    except (OSError, RuntimeError):
        disk = None
    return time.monotonic(), net, disk


def _rate(new: Any, old: Any, attr: str, dt: float) -> float | None:
    if new is None or old is None or dt <= 0:
        return None
    delta = getattr(new, attr) - getattr(old, attr)
    return max(0.0, delta / dt)  # counters can wrap or reset: never report a negative rate


class HostCollector:
    """CPU (total and per core), load, memory, swap, network and disk rates of this host."""

    name = "host"

    def __init__(self, *, io_interval_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.io_interval_s = io_interval_s
        self._clock = clock
        self.hostname = socket.gethostname()
        self._io_prev: tuple[float, Any, Any] | None = None
        self._io_rates: tuple[float | None, float | None, float | None, float | None] = (None, None, None, None)
        self._io_task: asyncio.Task[tuple[float, Any, Any]] | None = None
        self._io_started = -float("inf")
        # prime the CPU counters so the first poll compares against now, not against boot
        psutil.cpu_percent(interval=None)
        psutil.cpu_percent(interval=None, percpu=True)

    async def poll(self) -> HostSample:
        self._io_tick()
        cpu = psutil.cpu_percent(interval=None)
        per_core = tuple(float(x) for x in psutil.cpu_percent(interval=None, percpu=True))
        try:
            load = os.getloadavg()
        except OSError:
            load = (0.0, 0.0, 0.0)
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        rx, tx, rd, wr = self._io_rates
        return HostSample(
            taken_at=self._clock(),
            hostname=self.hostname,
            cpu_pct=float(cpu),
            cpu_per_core_pct=per_core,
            load_1=float(load[0]), load_5=float(load[1]), load_15=float(load[2]),
            mem_used_mib=(vm.total - vm.available) / MIB,
            mem_total_mib=vm.total / MIB,
            swap_used_mib=sw.used / MIB,
            swap_total_mib=sw.total / MIB,
            net_rx_bps=rx, net_tx_bps=tx, disk_read_bps=rd, disk_write_bps=wr,
        )

    def _io_tick(self) -> None:
        """Harvest a finished I/O reading, start the next one when due; never waits."""
        task = self._io_task
        if task is not None and task.done():
            self._io_task = None
            if not task.cancelled() and task.exception() is None:
                cur = task.result()
                prev, self._io_prev = self._io_prev, cur
                if prev is not None:
                    dt = cur[0] - prev[0]
                    self._io_rates = (
                        _rate(cur[1], prev[1], "bytes_recv", dt), _rate(cur[1], prev[1], "bytes_sent", dt),
                        _rate(cur[2], prev[2], "read_bytes", dt), _rate(cur[2], prev[2], "write_bytes", dt),
                    )
        now = time.monotonic()
        if self._io_task is None and now - self._io_started >= self.io_interval_s:
            self._io_started = now
            self._io_task = asyncio.create_task(asyncio.to_thread(_io_counters))

    async def aclose(self) -> None:
        task, self._io_task = self._io_task, None
        if task is not None:
            with contextlib.suppress(Exception):
                await task
