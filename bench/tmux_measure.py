"""Measuring a program as a user runs it: its CPU and peak RSS (with its children), in a real terminal (tmux).

Shared by the console benchmarks (bench/console.py, bench/console_serving.py, bench/prometheus_scale.py).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime+stime of a process and its children that were waited for (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_pids(pid: int) -> list[int]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def measure(pid: int, seconds: float, warmup: float) -> tuple[float, float]:
    """(CPU % of one core over `seconds` after `warmup`, peak RSS MB) of `pid` and its children."""
    import psutil

    time.sleep(warmup)
    pids = tree_pids(pid)
    c0 = sum(proc_cpu_s(p) for p in pids)
    t0 = time.monotonic()
    rss = 0.0
    end = t0 + seconds
    while time.monotonic() < end:
        with contextlib.suppress(psutil.NoSuchProcess):
            rss = max(rss, sum(psutil.Process(p).memory_info().rss for p in tree_pids(pid)) / 1e6)
        time.sleep(1.0)
    c1 = sum(proc_cpu_s(p) for p in tree_pids(pid) if Path(f"/proc/{p}").exists())
    return 100.0 * (c1 - c0) / (time.monotonic() - t0), rss


class Tmux:
    """One detached tmux session per measured program, at 200x60, on a private socket."""

    def __init__(self, name: str, command: str, env: dict[str, str] | None = None) -> None:
        self.sock = f"swbench-{os.getpid()}"
        self.name = name
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        new = ["tmux", "-L", self.sock, "new-session", "-d", "-s", name, "-x", "200", "-y", "60",
               f"env TERM=xterm-256color {envs} {command}"]
        # the previous session's kill can leave its server exiting as this one connects ("server exited
        # unexpectedly"): ask again once it is gone; a program that cannot start fails every time
        for _ in range(2):
            if subprocess.run(new).returncode == 0:
                break
            time.sleep(1.0)
        else:
            subprocess.run(new, check=True)
        out = subprocess.run(["tmux", "-L", self.sock, "list-panes", "-t", name, "-F", "#{pane_pid}"],
                             capture_output=True, text=True, check=True)
        self.pid = int(out.stdout.split()[0])

    def capture(self) -> str:
        return subprocess.run(["tmux", "-L", self.sock, "capture-pane", "-p", "-t", self.name],
                              capture_output=True, text=True).stdout

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-session", "-t", self.name], capture_output=True)


def measure_in_tmux(name: str, command: str, seconds: float, warmup: float,
                    env: dict[str, str] | None = None) -> tuple[float, float, str]:
    try:
        t = Tmux(name, command, env)
    except subprocess.CalledProcessError:  # the program exited at once (not installed, bad option)
        print(f"  {name}: `{command}` did not start in tmux: not measured")
        return 0.0, 0.0, ""  # no RSS, no screen: not_measured() names it, the run fails
    try:
        cpu, rss = measure(t.pid, seconds, warmup)
        return cpu, rss, t.capture()
    finally:
        t.close()


def measure_process(args: list[str], seconds: float, warmup: float) -> tuple[float, float]:
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return measure(p.pid, seconds, warmup)
    finally:
        p.terminate()
        p.wait(10)


def serve_until_killed(pages: list[Callable[[], str]], port_file: str) -> None:
    """One loopback /metrics server per page function, their URLs written to `port_file` (one a line); then
    serve until this helper process is terminated (the benchmarks' node and replica fleets)."""
    from tui.testing import MetricsNode

    servers = [MetricsNode(page).start() for page in pages]
    Path(port_file).write_text("\n".join(s.url for s in servers) + "\n")
    try:
        while True:
            time.sleep(3600)
    finally:
        for s in servers:
            s.stop()


def stop_all(procs: list[subprocess.Popen[Any]]) -> None:
    """Terminate helper processes, killing any that has not gone within 10 s."""
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
