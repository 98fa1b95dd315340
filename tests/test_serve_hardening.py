"""`surgewatch serve` under a flood, as an attacker or a bad night would bring it: hundreds of real idle and
slow-header sockets on loopback (bounded in count and time), a burst of refused requests, a lowered
`ulimit -n`, then SIGTERM; the real CLI as a process, a real Valkey and a real /metrics node."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from sim.valkey import ValkeyProcess
from tests.serve_fixtures import PAGE, TOKEN, Serve, surgewatch, until
from tui.serve_guard import BACKLOG
from tui.testing import MetricsNode, multiply_page

FLOOD = 300  # sockets at once: more than the 256 descriptors the process is given
FD_LIMIT = 256


@pytest.fixture
def world(valkey: ValkeyProcess) -> Iterator[tuple[ValkeyProcess, MetricsNode]]:
    """A Valkey with the default tiers and one node of 4 GPUs on loopback."""
    assert surgewatch("--redis", valkey.url, "init").returncode == 0
    with MetricsNode(multiply_page(PAGE, 4)) as node:
        yield valkey, node


def health(serve: Serve) -> dict[str, Any]:
    req = urllib.request.Request(serve.url + "health", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.loads(r.read()))


def state_now(serve: Serve) -> str | None:
    """/health's state, or None while even that request gets no answer."""
    try:
        return str(health(serve)["state"])
    except OSError:
        return None


@contextlib.contextmanager
def flood(port: int, count: int = FLOOD) -> Iterator[list[socket.socket]]:
    """`count` connection attempts: half never send a byte, half send a request line and one header, then
    stall. Those the server's full backlog refuses are left out (a refusal is not a hang)."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                continue
            socks.append(s)
            if i % 2:
                with contextlib.suppress(OSError):  # ... and the rest of the headers never come
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_server(s: socket.socket) -> bool:
    """True once the server closed `s` (EOF or reset); never blocks."""
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        return s.recv(4096) == b""
    except OSError:
        return True


def test_hundreds_of_idle_and_slow_header_sockets_neither_block_a_login_nor_stay_open(world: Any) -> None:
    """300 stalled sockets under `ulimit -n 256`: /health answers, every one is closed by the server, scrapes go on."""
    valkey, node = world
    serve = Serve(valkey.url, node.url, "--client-timeout", "2", token_env=True, fd_limit=FD_LIMIT).start()
    try:
        with flood(serve.port) as socks:
            assert len(socks) > FD_LIMIT  # every one accepted (by the kernel at least), none refused
            seen = health(serve)  # a fresh connection, while the stalled ones are open
            assert seen["state"] == "ok" and seen["connections"]["open"] <= seen["connections"]["max"] < FD_LIMIT
            open_socks = list(socks)

            def all_closed() -> bool:
                open_socks[:] = [s for s in open_socks if not closed_by_server(s)]
                return not open_socks

            until(all_closed, f"the server closing {FLOOD} stalled sockets", timeout_s=30)
        hits = node.hits
        until(lambda: node.hits > hits + 1, "the node scraped again after the flood")
        assert health(serve)["state"] == "ok"
    finally:
        serve.stop()
    assert "Too many open files" not in serve.logs and "Traceback" not in serve.logs
    assert len(serve.logs) < 50_000


def test_sigterm_stops_serve_with_hundreds_of_idle_sockets_open(world: Any) -> None:
    """300 connected sockets that never speak, then SIGTERM: serve exits by itself, with status 0."""
    valkey, node = world
    serve = Serve(valkey.url, node.url, "--client-timeout", "120", token_env=True, fd_limit=FD_LIMIT).start()
    assert serve.proc is not None
    try:
        with flood(serve.port):
            assert health(serve)["viewers"] == 0  # it answers, the stalled sockets held
            serve.proc.send_signal(signal.SIGTERM)
            try:
                returncode = serve.proc.wait(timeout=20)  # a hang guard, not a timing
            except subprocess.TimeoutExpired:
                pytest.fail("serve did not stop after SIGTERM with the stalled sockets open")
            assert returncode == 0
    finally:
        serve.stop()


def test_a_flood_of_refused_requests_adds_a_bounded_number_of_log_lines(world: Any) -> None:
    """2,000 unauthenticated requests: a few dozen access lines, then one line counting those left out."""
    valkey, node = world
    serve = Serve(valkey.url, node.url, token_env=True).start()
    try:
        t0 = time.monotonic()
        for _ in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
            for _ in range(100):
                conn.request("GET", "/%1B]2;x")  # an escape sequence in the path: logged visible, never raw
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 401
            conn.close()
        elapsed_s = time.monotonic() - t0
    finally:
        serve.stop()
    lines = [ln for ln in serve.logs.splitlines() if "surgewatch.serve.access" in ln]
    windows = int(elapsed_s // 10) + 2  # the rate is 50 lines per 10 s window
    assert len(lines) <= 50 * windows < 2000, (len(lines), elapsed_s)
    assert "lines left out" in serve.logs and "\x1b" not in serve.logs


def test_help_warns_that_a_token_flag_shows_in_ps_and_bad_limits_are_refused() -> None:
    """`serve --help` names SURGEWATCH_SERVE_TOKEN and `ps`; a bad --client-timeout or --max-connections: exit 2."""
    r = surgewatch("serve", "--help")
    assert r.returncode == 0 and "SURGEWATCH_SERVE_TOKEN" in r.stdout and "`ps`" in r.stdout
    r = surgewatch("serve", "--client-timeout", "0")
    assert r.returncode == 2 and "--client-timeout" in r.stderr
    r = surgewatch("serve", "--max-connections", "1")
    assert r.returncode == 2 and "--max-connections" in r.stderr


def test_a_port_already_taken_is_one_line_and_exit_1_not_a_traceback_or_an_address_that_does_not_serve() -> None:
    """`serve --port` on a port another program holds: "cannot listen", exit 1, and no "wall console on" line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = surgewatch("serve", "--port", str(taken.getsockname()[1]))
    assert r.returncode == 1 and "cannot listen on 127.0.0.1" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "wall console on" not in r.stderr, r.stderr


def test_running_out_of_descriptors_is_a_named_state_and_one_log_line(world: Any) -> None:
    """Under `ulimit -n 36`, a backlog of sockets met at once: /health names Errno 24, the log says it once."""
    valkey, node = world
    serve = Serve(valkey.url, node.url, token_env=True, fd_limit=36).start()
    assert serve.proc is not None
    try:
        health(serve)  # up, collecting
        serve.proc.send_signal(signal.SIGSTOP)  # a stalled moment: the kernel queues a full backlog meanwhile
        try:
            with flood(serve.port, BACKLOG + 1):
                serve.proc.send_signal(signal.SIGCONT)  # ... and asyncio accepts the whole backlog in one go
                until(lambda: state_now(serve) not in (None, "ok"), "serve naming the exhaustion")
        finally:
            serve.proc.send_signal(signal.SIGCONT)
        seen = health(serve)  # the flood gone, the state still said (it is held a while)
        assert seen["state"] == "out of file descriptors (Errno 24)", seen
    finally:
        serve.stop()
    assert serve.logs.count("out of file descriptors") == 1 and "Traceback" not in serve.logs


def test_without_a_token_only_a_request_for_a_loopback_name_gets_the_wall(world: Any) -> None:
    """No token, on loopback: Host 127.0.0.1 or localhost is served; a rebound name (evil.example) gets 421."""
    valkey, node = world
    serve = Serve(valkey.url, node.url, no_token=True).start()

    def status(host: str, path: str = "/") -> int:
        conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
        conn.request("GET", path, headers={"Host": f"{host}:{serve.port}", "Origin": f"http://{host}:{serve.port}"})
        code = conn.getresponse().status
        conn.close()
        return code

    try:
        assert status("127.0.0.1") == 200 and status("localhost") == 200 and status("127.0.0.1", "/health") == 200
        assert status("evil.example") == 421 and status("evil.example", "/ws") == 421
        assert status("evil.example", "/health") == 421
    finally:
        serve.stop()
