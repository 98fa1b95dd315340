"""`surgewatch init` and `surgewatch quota ...` end to end: the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from sim.valkey import ValkeyProcess, free_port
from tests.conftest import ROOT

# the console script installed beside the running interpreter (a venv, tox, nox, a distribution's build), else
# the same entry point through the interpreter: never a path guessed from the checkout
_SCRIPT = Path(sys.executable).parent / "surgewatch"
SURGEWATCH = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "surgewatch.cli"]
QUOTA_KEYS = {"tier", "limit", "window_s", "tier_cap_rps", "paused", "mode", "expires_at", "version", "updated_by",
              "updated_at"}
HANG_GUARD_S = 60  # no run may take this long; how fast it exits is not what these tests assert


def sw(url: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `surgewatch --redis URL ARGV...` and return the finished process."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    e.update(env or {})
    return subprocess.run([*SURGEWATCH, "--redis", url, *argv], capture_output=True, text=True, timeout=HANG_GUARD_S,
                          env=e, cwd=ROOT)


def test_operator_session(valkey: ValkeyProcess) -> None:
    """init, list --json, set, a stale set (exit 3), pause, resume and history --json, as an operator would."""
    url = valkey.url
    r = sw(url, "init")
    assert r.returncode == 0 and "loaded functions library surgewatch" in r.stdout
    assert "tier free: 20/1d created" in r.stdout
    assert "exists, left as is" in sw(url, "init").stdout

    listed = json.loads(sw(url, "quota", "list", "--json").stdout)
    assert [q["tier"] for q in listed] == ["free", "plus", "pro", "team", "enterprise"]  # the console's order
    assert all(set(q) == QUOTA_KEYS | {"state"} and q["state"] == "active" for q in listed)
    free = next(q for q in listed if q["tier"] == "free")
    assert (free["limit"], free["window_s"], free["tier_cap_rps"], free["expires_at"], free["version"]) == (
        20, 86400, None, None, 1)
    assert free["updated_at"].endswith("Z")

    r = sw(url, "quota", "set", "free", "3/1d", "--reason", "surge", "--as", "alice", "--expect-version", "1")
    assert r.returncode == 0, r.stderr
    r = sw(url, "quota", "set", "free", "5/1d", "--as", "bob", "--expect-version", "1")
    assert r.returncode == 3 and "alice" in r.stderr and "version 2" in r.stderr

    r = sw(url, "quota", "set", "free", "3/1d", "--tier-cap", "50", "--shadow", "--as", "carol")
    assert r.returncode == 0, r.stderr
    r = sw(url, "quota", "set", "free", "4/1d", "--as", "carol")  # no flags: cap and mode are kept
    assert r.returncode == 0 and "cap 50/s shadow" in r.stdout
    assert sw(url, "quota", "set", "free", "4/1d", "--tier-cap", "none", "--enforce").returncode == 0
    assert sw(url, "quota", "pause", "free", "--reason", "incident", "--as", "dave").returncode == 0
    q = next(q for q in json.loads(sw(url, "quota", "list", "--json").stdout) if q["tier"] == "free")
    assert (q["limit"], q["tier_cap_rps"], q["mode"], q["paused"], q["version"]) == (4, None, "enforce", True, 6)
    assert sw(url, "quota", "resume", "free", "--as", "dave").returncode == 0

    hist = json.loads(sw(url, "quota", "history", "free", "--count", "3", "--json").stdout)
    assert [h["version"] for h in hist] == [7, 6, 5]
    assert all(set(h) == {"tier", "actor", "at", "version", "old", "new", "reason"} for h in hist)
    assert hist[1]["actor"] == "dave" and hist[1]["reason"] == "incident"
    assert set(hist[0]["old"]) == QUOTA_KEYS and hist[0]["new"]["paused"] is False
    text = sw(url, "quota", "history", "--count", "50").stdout.splitlines()
    assert len(text) == 5 + 6  # five seeds, six changes of free
    assert any("alice" in t and "reason: surge" in t and "free 20/1d" in t for t in text)


def test_create_override_and_actor(valkey: ValkeyProcess) -> None:
    """--create makes a tier, --for 2h expires it two hours after the change, and the default actor is the login
    user with the SSH client address, in the quota and in its audit entry."""
    url = valkey.url
    assert sw(url, "init").returncode == 0
    env = {"SSH_CLIENT": "10.1.2.3 5555 22", "USER": "erin", "LOGNAME": "erin"}
    r = sw(url, "quota", "set", "vip", "10/30s", "--create", "--for", "2h", env=env)
    assert r.returncode == 0, r.stderr
    vip = next(q for q in json.loads(sw(url, "quota", "list", "--json").stdout) if q["tier"] == "vip")
    assert vip["updated_by"] == "erin@10.1.2.3" and vip["window_s"] == 30
    expires, updated = (datetime.fromisoformat(vip[k].replace("Z", "+00:00")) for k in ("expires_at", "updated_at"))
    assert vip["expires_at"].endswith("Z") and abs((expires - updated).total_seconds() - 2 * 3600) <= 1
    (entry,) = json.loads(sw(url, "quota", "history", "vip", "--json").stdout)
    assert entry["actor"] == "erin@10.1.2.3" and entry["new"]["expires_at"] == vip["expires_at"]
    assert sw(url, "quota", "set", "vip", "11/30s", "--create", "--expect-version", "0").returncode == 3


def test_pause_and_resume_keep_an_overrides_expiry(valkey: ValkeyProcess) -> None:
    """`quota pause` and `quota resume` of a tier under a --for 2h override keep its limit and its end exactly."""
    url = valkey.url
    assert sw(url, "init").returncode == 0
    assert sw(url, "quota", "set", "free", "1/1d", "--for", "2h", "--as", "t").returncode == 0

    def free() -> dict[str, object]:
        return next(q for q in json.loads(sw(url, "quota", "list", "--json").stdout) if q["tier"] == "free")

    o = free()
    assert isinstance(o["expires_at"], str) and o["limit"] == 1
    for op, paused in (("pause", True), ("resume", False)):
        r = sw(url, "quota", op, "free", "--as", "t")
        assert r.returncode == 0, r.stderr
        q = free()
        assert (q["paused"], q["limit"], q["expires_at"]) == (paused, 1, o["expires_at"]), op
    hist = json.loads(sw(url, "quota", "history", "free", "--count", "2", "--json").stdout)
    assert [(h["new"]["paused"], h["new"]["expires_at"]) for h in hist] == [(False, o["expires_at"]),
                                                                             (True, o["expires_at"])]


def test_unreachable_exits_4_and_redacts(tmp_path: object) -> None:
    """A closed port exits 4 (unreachable, not a hang) and the message never shows the password."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    r = sw(url, "quota", "list")
    assert r.returncode == 4
    assert "unreachable" in r.stderr and "hunter2" not in r.stderr + r.stdout


class _HttpAtRedisAddress(socketserver.BaseRequestHandler):
    """What a mistyped port often reaches: a web server, answering a Redis command with HTTP's 400."""

    def handle(self) -> None:
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nServer: \x1b[31mweb\r\n\r\n")
        self.request.recv(16)  # keep the connection open until the client gives up on it


def test_a_web_server_at_the_redis_address_exits_4_naming_the_protocol_not_a_traceback() -> None:
    """--redis pointing at an HTTP server: exit 4, "does not speak the Redis protocol", no traceback or password."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HttpAtRedisAddress) as web:
        web.daemon_threads = True
        threading.Thread(target=web.serve_forever, daemon=True).start()
        try:
            r = sw(f"redis://:hunter2@127.0.0.1:{web.server_address[1]}/0", "quota", "list")
        finally:
            web.shutdown()
    assert r.returncode == 4, r.stderr
    assert "does not speak the Redis protocol" in r.stderr and "Traceback" not in r.stderr
    assert "hunter2" not in r.stderr + r.stdout and "\x1b" not in r.stderr


def test_hung_server_exits_4(valkey: ValkeyProcess) -> None:
    """A server that accepts but never answers (SIGSTOP) still gets exit 4: the CLI ends by its own deadline."""
    pid = valkey.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        r = sw(valkey.url, "quota", "set", "free", "3/1d")
        assert r.returncode == 4, r.stderr
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.parametrize("argv", [["quota", "set", "fr}ee", "3/1d"], ["quota", "set", "free", "3/40d"],
                                  ["quota", "set", "free", "3/1d", "--tier-cap", ""],
                                  ["quota", "set", "free", "3/1d", "--tier-cap", "  "]])
def test_bad_input_exit_2_through_console_script(valkey: ValkeyProcess, argv: list[str]) -> None:
    """Bad input through the real console script exits 2 and leaves no audit entry."""
    assert sw(valkey.url, "init").returncode == 0
    r = sw(valkey.url, *argv)
    assert r.returncode == 2 and "invalid" in r.stderr
    assert len(json.loads(sw(valkey.url, "quota", "history", "--count", "100", "--json").stdout)) == 5


def test_broken_tier_warned_in_list(valkey: ValkeyProcess) -> None:
    """A tier with junk in Redis is listed as BROKEN by `quota list` (exit 1, why on stderr), and `quota set` repairs
    it; `quota history --json` then shows the broken value the repair replaced as `old`."""
    import redis

    assert sw(valkey.url, "init").returncode == 0
    with redis.Redis.from_url(valkey.url) as c:
        c.hset("surgewatch:{free}:quota", "window_s", "forever")
    r = sw(valkey.url, "quota", "list")
    assert r.returncode == 1 and "tier free is BROKEN" in r.stderr and "window_s" in r.stderr
    (row,) = [line for line in r.stdout.splitlines() if line.startswith("free ")]
    assert row.split()[:3] == ["free", "BROKEN", "-"]
    listed = json.loads(sw(valkey.url, "quota", "list", "--json").stdout)
    assert [(q["tier"], q["state"]) for q in listed][-1] == ("free", "broken")
    assert "window_s" in listed[-1]["quota_error"]
    assert sw(valkey.url, "quota", "pause", "free").returncode == 1
    assert sw(valkey.url, "quota", "set", "free", "3/1d").returncode == 0
    r = sw(valkey.url, "quota", "list")
    assert r.returncode == 0 and "BROKEN" not in r.stdout and "free" in r.stdout
    (repair,) = json.loads(sw(valkey.url, "quota", "history", "free", "--count", "1", "--json").stdout)
    assert repair["old"]["broken"] == "window_s=forever" and repair["old"]["raw"]["window_s"] == "forever"
    assert "(broken: window_s=forever) -> free 3/1d" in sw(valkey.url, "quota", "history", "free").stdout


def test_a_tier_name_with_escape_codes_in_the_registry_never_reaches_the_terminal_raw(valkey: ValkeyProcess) -> None:
    """A registry member written by redis-cli with ESC and BEL: list and export name it on stderr, escaped."""
    import redis

    assert sw(valkey.url, "init").returncode == 0
    with redis.Redis.from_url(valkey.url) as c:
        c.sadd("surgewatch:tiers", "\x1b[31mevil\a")
    for argv in (["quota", "list"], ["quota", "list", "--json"], ["quota", "export"]):
        r = sw(valkey.url, *argv)
        assert r.returncode == 1 and ("BROKEN" in r.stderr or "not exported" in r.stderr), (argv, r.stderr)
        assert "\x1b" not in r.stdout + r.stderr and "\a" not in r.stdout + r.stderr, argv


def test_refused_login_exits_1_without_the_password() -> None:
    """A wrong password is not an outage: exit 1 (not 4, retrying will not help), a clear message, no password."""
    import redis

    with ValkeyProcess() as server:
        with redis.Redis.from_url(server.url) as c:
            c.config_set("requirepass", "right-one")
        r = sw(server.url.replace("redis://", "redis://:wrong-one@"), "quota", "list")
        assert r.returncode == 1 and "refused the login" in r.stderr, r.stderr
        assert "wrong-one" not in r.stderr + r.stdout and "right-one" not in r.stderr + r.stdout
        r = sw(server.url, "quota", "list")
        assert r.returncode == 1 and "requires a password" in r.stderr, r.stderr


def test_out_of_memory_set_exits_1_and_writes_nothing(valkey: ValkeyProcess) -> None:
    """`quota set` on a server out of memory says so, exits 1, and leaves the quota and the audit as they were."""
    import redis

    assert sw(valkey.url, "init").returncode == 0
    with redis.Redis.from_url(valkey.url) as c:
        c.config_set("maxmemory-policy", "noeviction")
        c.config_set("maxmemory", "1")
        try:
            r = sw(valkey.url, "quota", "set", "free", "3/1d", "--reason", "surge")
        finally:
            c.config_set("maxmemory", "0")
    assert r.returncode == 1 and "out of memory" in r.stderr, r.stderr
    free = next(q for q in json.loads(sw(valkey.url, "quota", "list", "--json").stdout) if q["tier"] == "free")
    assert free["version"] == 1 and free["limit"] != 3
    assert len(json.loads(sw(valkey.url, "quota", "history", "--count", "100", "--json").stdout)) == 5


def test_setting_a_quota_to_its_current_value_says_unchanged_and_writes_nothing(valkey: ValkeyProcess) -> None:
    """`quota set free 3/1d` twice: the second says unchanged (exit 0), no new version and no audit entry; a
    different cap or the end of an override is a change."""
    assert sw(valkey.url, "init").returncode == 0
    assert sw(valkey.url, "quota", "set", "free", "3/1d").returncode == 0
    r = sw(valkey.url, "quota", "set", "free", "3/1d")
    assert r.returncode == 0 and r.stdout.startswith("unchanged free 3/1d") and "v2" in r.stdout
    assert len(json.loads(sw(valkey.url, "quota", "history", "free", "--json").stdout)) == 2
    assert "v3" in sw(valkey.url, "quota", "set", "free", "3/1d", "--tier-cap", "9").stdout
    assert "v4" in sw(valkey.url, "quota", "set", "free", "5/1d", "--for", "1h").stdout
    assert "v5" in sw(valkey.url, "quota", "set", "free", "5/1d").stdout  # the override made permanent: a change


def test_quota_list_sorts_as_the_console_and_writes_windows_as_written(valkey: ValkeyProcess) -> None:
    """`quota list` orders tiers by quota size like the console's tier panel (TierOrder), and writes `50/1d`."""
    from quotas.model import QuotaSpec, quota_size
    from tui.widgets.tiers import TierOrder

    assert sw(valkey.url, "init").returncode == 0
    assert sw(valkey.url, "quota", "set", "aaa", "50/1d", "--create").returncode == 0
    table = sw(valkey.url, "quota", "list").stdout.splitlines()[1:]
    listed = [q["tier"] for q in json.loads(sw(valkey.url, "quota", "list", "--json").stdout)]
    assert [line.split()[0] for line in table] == listed
    quotas = {q["tier"]: QuotaSpec(q["limit"], q["window_s"]) for q in json.loads(
        sw(valkey.url, "quota", "list", "--json").stdout)}
    assert listed == TierOrder().sort(quotas, quotas)  # type: ignore[arg-type]  # a spec has limit and window_s
    assert listed.index("aaa") == 1 and quota_size(quotas["aaa"]) > quota_size(quotas["free"])  # type: ignore[arg-type]
    assert any(line.split()[:3] == ["aaa", "active", "50/1d"] for line in table)


def test_output_cut_short_by_its_reader_is_no_traceback() -> None:
    """`surgewatch guard --print-policy | head -0`: the reader is gone before the first write; exit 1, no traceback."""
    proc = subprocess.Popen([*SURGEWATCH, "guard", "--print-policy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command has started: its first write meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait(HANG_GUARD_S) == 1 and "Traceback" not in err and "BrokenPipe" not in err, err
