"""`surgewatch serve` as a user meets it: the real CLI as a process on a loopback port, Debian's Chromium
through Playwright, a real Valkey and real loopback /metrics nodes. Shared by the tests/test_serve_*.py."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from sim.valkey import port_open

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PAGE = (Path(__file__).parent / "fixtures" / "dcgm-exporter-V100.prom").read_text()
TOKEN = "wall-sekret-42"
TOKEN_ENV = "SURGEWATCH_SERVE_TOKEN"


def require_chromium() -> None:
    """Debian's Chromium is required (`apt-get install chromium`, as .ci/run does): fail, never skip."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def surgewatch(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "surgewatch.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def until(cond: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    """Poll `cond` until true: a hang guard, never a timed assertion."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.05)


class Serve:
    """`surgewatch --redis URL --nodes URL serve --port P` as a process; restartable on its port.

    The token goes on the command line (`--token`, the older way) unless `token_env`: then in
    SURGEWATCH_SERVE_TOKEN, as --help advises; `no_token`: none at all (loopback only). `fd_limit`
    starts it under `ulimit -n`."""

    def __init__(self, redis_url: str, node_url: str, *extra: str, token_env: bool = False, no_token: bool = False,
                 fd_limit: int | None = None) -> None:
        self.port = free_port()
        flag = [] if token_env or no_token else ["--token", TOKEN]
        self.cmd = [sys.executable, "-m", "surgewatch.cli", "--redis", redis_url, "--nodes", node_url, "serve",
                    "--port", str(self.port), "--size", "160x48", *flag, *extra]
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        self.env = {**env, "SURGEWATCH_NODE_INTERVAL": "1", **({TOKEN_ENV: TOKEN} if token_env else {})}
        self.fd_limit = fd_limit
        self.proc: subprocess.Popen[str] | None = None
        self.logs = ""
        self._log_file: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _limit(self) -> None:
        if self.fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    def start(self) -> Serve:
        # a file, as a service's log is: a pipe nobody reads would stall the server once it is full
        self._log_file = tempfile.TemporaryFile("w+")  # noqa: SIM115  # lives until stop(), across calls
        self.proc = subprocess.Popen(self.cmd, stdout=self._log_file, stderr=subprocess.STDOUT, text=True,
                                     env=self.env, preexec_fn=self._limit if self.fd_limit else None)
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # hang guard: kill it so the test fails, not the suite
                self.proc.kill()
                self.proc.wait(timeout=20)
            self.proc = None
        if self._log_file is not None:
            self._log_file.seek(0)
            self.logs += self._log_file.read()
            self._log_file.close()
            self._log_file = None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser: Any, url: str, **context: Any) -> tuple[Any, list[str]]:
    """A fresh context (no cookie) on `url`, every request it makes recorded."""
    # CSP stays on for real browsers; Playwright's own evaluate needs it relaxed in its context
    page = browser.new_context(bypass_csp=True, **context).new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    return page, requests


SCREEN_TEXT = ("Array.from(document.querySelectorAll('#screen svg text')).map(t => t.textContent).join('')"
               ".replace(/\\u00a0/g, ' ')")


def screen(page: Any) -> str:
    return str(page.evaluate(f"() => {SCREEN_TEXT}"))


def wait_text(page: Any, *words: str, timeout_ms: int = 30000) -> str:
    page.wait_for_function(f"words => {{ const t = {SCREEN_TEXT}; return words.every(w => t.includes(w)); }}",
                           arg=list(words), timeout=timeout_ms)
    return screen(page)
