"""The demo never leaves a server behind: killed with SIGKILL, or its terminal closed (SIGHUP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sim.valkey import free_port, port_open
from tests.conftest import ROOT


def valkey_children(pid: int) -> list[int]:
    """PIDs of valkey-server processes whose parent is `pid` (read from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if int(fields[1]) == pid and comm.startswith("valkey"):
            out.append(int(entry))
    return out


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no longer serves


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_killed_demo_leaves_no_server(sig: signal.Signals) -> None:
    """A headless demo killed by `sig` takes its embedded Valkey with it: the port closes, no process is left."""
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "surgewatch.cli", "demo", "--headless", "--duration", "600", "--redis-port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # as in a terminal's session: a test run under nohup would hand the demo a SIGHUP it ignores
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    try:
        assert demo.stdout is not None
        demo.stdout.readline()  # the first simulated second: Valkey is up and seeded
        assert port_open(port)
        (server,) = valkey_children(demo.pid)
        demo.send_signal(sig)
        demo.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (gone(server) and not port_open(port)):
            time.sleep(0.05)
        assert gone(server), f"valkey-server {server} outlived the demo"
        assert not port_open(port)
    finally:
        if demo.poll() is None:
            demo.kill()
