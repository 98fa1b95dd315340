"""Host load from psutil, read on this very machine."""

from __future__ import annotations

import asyncio

import psutil

from collectors.host import HostCollector


async def test_host_sample_has_sane_values() -> None:
    """CPU per core, load, memory and swap come back in range and with units in MiB."""
    c = HostCollector()
    try:
        s = await c.poll()
    finally:
        await c.aclose()
    assert 0 <= s.cpu_pct <= 100 and len(s.cpu_per_core_pct) == psutil.cpu_count()
    assert all(0 <= x <= 100 for x in s.cpu_per_core_pct)
    assert s.load_1 >= 0 and s.hostname
    assert 0 < s.mem_used_mib <= s.mem_total_mib
    assert abs(s.mem_total_mib - psutil.virtual_memory().total / 2**20) < 1
    assert s.swap_total_mib >= s.swap_used_mib >= 0


async def test_io_rates_appear_after_two_background_readings() -> None:
    """Network and disk rates are n/a at first, then computed from readings taken off the poll path."""
    c = HostCollector(io_interval_s=0.05)
    try:
        first = await c.poll()
        assert first.net_rx_bps is None  # only one reading started, none finished
        s = first
        for _ in range(100):
            await asyncio.sleep(0.06)
            s = await c.poll()
            if s.net_rx_bps is not None:
                break
    finally:
        await c.aclose()
    assert s.net_rx_bps is not None and s.net_rx_bps >= 0 and s.net_tx_bps is not None
    if psutil.disk_io_counters() is not None:
        assert s.disk_read_bps is not None and s.disk_read_bps >= 0


async def test_cpu_busy_loop_shows() -> None:
    """Burning CPU between two polls raises the total CPU percentage above zero."""
    c = HostCollector()
    try:
        await c.poll()
        end = asyncio.get_running_loop().time() + 0.3
        while asyncio.get_running_loop().time() < end:
            sum(i * i for i in range(1000))
        s = await c.poll()
    finally:
        await c.aclose()
    assert s.cpu_pct > 0 and max(s.cpu_per_core_pct) > 0
