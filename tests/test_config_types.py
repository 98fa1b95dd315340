"""Bad settings from a flag, a variable or surgewatch.toml: exit 2 with one escaped, bounded line, never a
traceback, never a password, nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quotas.model import QuotaError
from quotas.redis_url import OPTIONS, parse_target
from sim.valkey import ValkeyProcess
from surgewatch.cli import main
from surgewatch.settings import ConfigError, parse_bool, resolve
from tests.conftest import ROOT

BINARY = b"\xff\xfe\x00garbage\x80"


def write_toml(tmp_path: Path, text: str | bytes) -> dict[str, str]:
    path = tmp_path / "surgewatch" / "surgewatch.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return {"XDG_CONFIG_HOME": str(tmp_path)}


def sw(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real command line, with only `env` (and PATH/HOME) around it."""
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(ROOT), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "surgewatch.cli", *args], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """main(argv) exits 2 with one line on stderr and nothing on stdout; that line."""
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("command", [["snapshot", "--json", "--no-local"], ["quota", "list"], ["init"],
                                     ["guard", "--dry-run"], ["rls", "--port", "0"]])
def test_a_binary_config_file_is_refused_naming_it_by_every_command(tmp_path: Path, command: list[str]) -> None:
    """A surgewatch.toml that is not UTF-8 (XDG path or SURGEWATCH_CONFIG): exit 2 naming the file, no traceback."""
    env = write_toml(tmp_path, BINARY)
    out = sw("--redis", "redis://127.0.0.1:1/0", *command, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "surgewatch.toml" in out.stderr and "not UTF-8" in out.stderr
    named = tmp_path / "named.toml"
    named.write_bytes(BINARY)
    out = sw("--redis", "redis://127.0.0.1:1/0", *command, env={"SURGEWATCH_CONFIG": str(named)})
    assert out.returncode == 2 and "named.toml" in out.stderr and "not UTF-8" in out.stderr


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("prometheus = 5", "prometheus must be a string (a URL), not 5"),
        ("servers = 5", "servers must be a list of strings"),
        ("nodes = [1]", "nodes must be a list of strings"),
        ("redis_url = 5", "redis_url must be a string (a Redis URL), not 5"),
        ("interval_s = true", "interval_s must be a number of seconds, not true"),
        ("node_interval_s = '5'", "node_interval_s must be a number of seconds, not a string"),
        ("prefix = 5", "prefix must be a string"),
        ("redis_cluster = 'yes'", "redis_cluster must be true or false, not a string"),
        ("redis_cluster = 1", "redis_cluster must be true or false, not 1"),
        ("prometheus_lookback = false", "prometheus_lookback must be"),
        ("guard = 3", "guard must be a table"),
        ("rls = []", "rls must be a table"),
    ],
)
def test_a_file_value_of_the_wrong_type_is_refused_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    """Each top-level key of surgewatch.toml has one type: anything else exits 2 naming the key, never a traceback."""
    env = write_toml(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        resolve(env=env)
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    assert words in refused(capsys, "snapshot", "--json", "--no-local")


def test_file_values_of_the_right_type_are_taken(tmp_path: Path) -> None:
    """Numbers, strings, booleans and lists where the keys mean them are read as before."""
    env = write_toml(tmp_path, 'redis_cluster = true\nprefix = "sw:"\ninterval_s = 2\nprometheus_lookback = 600\n'
                               'prometheus = "http://prom:9090"\nnodes = ["http://n1:9400/metrics"]\n')
    s = resolve(env=env)
    assert s.redis_cluster and s.prefix == "sw:" and s.interval_s == 2.0 and s.prometheus_lookback_s == 600
    assert s.prometheus == "http://prom:9090" and s.nodes == ("http://n1:9400/metrics",)


@pytest.mark.parametrize(("value", "on"), [("1", True), ("yes", True), ("TRUE", True), (" on ", True),
                                           ("0", False), ("no", False), ("False", False), ("OFF", False)])
def test_redis_cluster_variable_takes_true_and_false_words(value: str, on: bool) -> None:
    """SURGEWATCH_REDIS_CLUSTER: 1/true/yes/on or 0/false/no/off in any case; it wins over the file."""
    assert resolve(env={"SURGEWATCH_REDIS_CLUSTER": value}, file={"redis_cluster": not on}).redis_cluster is on
    assert resolve(redis_cluster=True, env={"SURGEWATCH_REDIS_CLUSTER": value}, file={}).redis_cluster


@pytest.mark.parametrize("value", ["2", "abc", "nan", "y", "enabled"])
def test_any_other_redis_cluster_word_is_refused(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """SURGEWATCH_REDIS_CLUSTER=2 (or abc, nan) exits 2 naming the variable, not silently off."""
    with pytest.raises(ConfigError, match="SURGEWATCH_REDIS_CLUSTER"):
        parse_bool(value, "SURGEWATCH_REDIS_CLUSTER")
    monkeypatch.setenv("SURGEWATCH_REDIS_CLUSTER", value)
    assert "invalid SURGEWATCH_REDIS_CLUSTER" in refused(capsys, "snapshot", "--json", "--no-local")


def test_a_config_file_named_but_missing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SURGEWATCH_CONFIG naming no file exits 2 ("not found"); the default XDG path missing stays fine."""
    missing = tmp_path / "nonexist.toml"
    with pytest.raises(ConfigError, match=r"nonexist\.toml.*not found"):
        resolve(env={"SURGEWATCH_CONFIG": str(missing)})
    assert resolve(env={"XDG_CONFIG_HOME": str(tmp_path)}).redis_url is None
    monkeypatch.setenv("SURGEWATCH_CONFIG", str(missing))
    assert "not found" in refused(capsys, "quota", "list")


@pytest.mark.parametrize("prefix", ["sw\x1b[31m:", "sw\t:", "sw\x7f", "a\u202e:", "sw :", "{sw}:", "x" * 500])
def test_a_key_prefix_that_is_not_printable_is_refused_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], prefix: str
) -> None:
    """SURGEWATCH_PREFIX or `prefix` with ESC or another control character exits 2; the message shows it escaped."""
    with pytest.raises(ConfigError, match=r"invalid key prefix .*\(SURGEWATCH_PREFIX\)"):
        resolve(env={"SURGEWATCH_PREFIX": prefix}, file={})
    with pytest.raises(ConfigError, match=r"prefix in surgewatch.toml"):
        resolve(env={}, file={"prefix": prefix})
    monkeypatch.setenv("SURGEWATCH_PREFIX", prefix)
    err = refused(capsys, "quota", "list")
    assert "\x1b" not in err and "\u202e" not in err and len(err) < 400
    assert resolve(env={"SURGEWATCH_PREFIX": "team-a:sw:"}, file={}).prefix == "team-a:sw:"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://h:1/0?foo=bar", "unknown option 'foo' (known: client_name, db,"),
        ("redis://h:1/0?ssl_cert_reqs=none", "'ssl_cert_reqs' is for rediss:// only"),
        ("redis://:hunter2@h:1/0?socket_timeout=abc", "socket_timeout='abc': a number of seconds"),
        ("redis://h:1/0?socket_keepalive=off", "true or false"),
        ("redis://h:1/0?db=1&db=2", "given twice"),
        ("unix:///tmp/r.sock?socket_keepalive=1", "for redis:// or rediss:// only"),
        ("redis://a:7000,b:7000?db=3", "a cluster has only database 0"),
        ("redis+sentinel://s:26379/mymaster?foo=bar", "takes no query options"),
        ("redis://:hunter2@h:1/0\x1b[31m", "a control character ('\\x1b')"),
    ],
)
def test_a_redis_url_option_redis_py_would_choke_on_is_refused_at_once(
    capsys: pytest.CaptureFixture[str], url: str, words: str
) -> None:
    """An unknown or ill-typed ?option exits 2 naming it at settings time, not a TypeError at connect."""
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        resolve(redis=url, env={}, file={})
    err = refused(capsys, "--redis", url, "snapshot", "--json", "--no-local")
    assert words in err and "hunter2" not in err and "\x1b" not in err


def test_every_accepted_redis_url_option_builds_a_client() -> None:
    """The options parse_target takes are ones redis-py's connection classes accept (no TypeError building
    a single-server connection, a TLS one, or a cluster client)."""
    from redis.asyncio import Redis

    from quotas.connect import cluster_client

    plain = ("redis://h:1/0?socket_timeout=2&socket_connect_timeout=1.5&health_check_interval=0&max_connections=4"
             "&client_name=ops&socket_keepalive=true&db=2")
    tls = "rediss://h:1/0?ssl_cert_reqs=none&ssl_check_hostname=false&ssl_ca_certs=/x&ssl_certfile=/y&ssl_keyfile=/z"
    assert {k for u in (plain, tls) for k, _ in [kv.split("=") for kv in u.split("?")[1].split("&")]} == set(OPTIONS)
    for url in (plain, tls, "unix:///tmp/r.sock?db=1&socket_timeout=2&client_name=x"):
        assert parse_target(url).kind == "single"
        Redis.from_url(url).connection_pool.make_connection()
    cluster = parse_target(plain.replace("/0?", "?").replace("&db=2", "") + ",h2:2")
    cluster_client(cluster.nodes, socket_timeout=1)


@pytest.mark.parametrize("flag", ["--redis", "--prometheus", "--nodes"])
def test_a_very_long_url_is_refused_fast_with_a_bounded_echo(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    """A 100k-character port is refused in well under a second, the message quoting at most 200 characters."""
    scheme = "redis" if flag == "--redis" else "http"
    for n in (10_000, 100_000):
        started = time.monotonic()
        err = refused(capsys, flag, f"{scheme}://h:{'1' * n}/0", "snapshot", "--json", "--no-local")
        assert time.monotonic() - started < 5  # quadratic parsing took > 20 s at 100k
        assert len(err) < 800 and f"({n + len(scheme) + 7} characters)" in err


def test_a_node_file_of_one_huge_line_is_refused_with_a_bounded_echo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--nodes @FILE` whose one line is 50 MB: exit 2 quoting 200 characters of it, not the 50 MB."""
    big = tmp_path / "nodes.txt"
    big.write_text("x" * 50_000_000 + "\n# a comment \x1b[31m may say anything\nhttp://n1:9400/metrics\n")
    err = refused(capsys, "--nodes", f"@{big}", "snapshot", "--json", "--no-local")
    assert "50000000 characters" in err and len(err) < 500
    big.write_text("http://n1:9400/metrics  # the first GPU node \x1b[31m\n")
    assert resolve(nodes=f"@{big}", env={}, file={}).nodes == ("http://n1:9400/metrics",)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--prometheus", "http://127.0.0.1:99999"], "'http://127.0.0.1:99999' (--prometheus): the port is not"),
        (["--prometheus", "http://ops:hunter2@h:0"], "port 0"),
        (["--prometheus", "ftp://h:1"], "accepted schemes http, https"),
        (["--prometheus", ""], "--prometheus is empty"),
        (["--prometheus-lookback", ""], "--prometheus-lookback is empty"),
        (["--redis", ""], "--redis is empty"),
        (["--nodes", ""], "--nodes names no node"),
        (["--servers", ""], "--servers names no server"),
        (["--prometheus", "http://h:1/\x1b[31m"], "'http://h:1/\\x1b[31m' (--prometheus): a control character"),
        (["--nodes", "http://h:1/\x1b[31m"], "a control character"),
        (["--servers", "@/tmp/\x1b[31mnone"], "/tmp/\\x1b[31mnone"),
    ],
)
def test_a_bad_or_empty_url_flag_is_refused_naming_why(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    """--prometheus with a bad port names the port; an empty --prometheus/--redis/--nodes is refused alike;
    control characters are refused and shown escaped; no password shown."""
    err = refused(capsys, *argv, "snapshot", "--json", "--no-local")
    assert words in err and "hunter2" not in err and "\x1b" not in err


def test_a_bad_setting_changes_nothing(valkey: ValkeyProcess, tmp_path: Path) -> None:
    """A write command under a bad setting exits 2 before touching Redis: no key appears."""
    import redis

    for env in ({"SURGEWATCH_REDIS_CLUSTER": "maybe"}, write_toml(tmp_path, BINARY),
                {"SURGEWATCH_PREFIX": "sw\x1b:"}, {"SURGEWATCH_CONFIG": str(tmp_path / "gone.toml")}):
        out = sw("--redis", valkey.url, "quota", "set", "free", "3/1d", "--create", "--as", "op", env=env)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    with redis.Redis.from_url(valkey.url) as r:
        assert r.keys("*") == []


def test_parse_target_refuses_a_long_url_in_linear_time() -> None:
    """parse_target itself: a 1 MB URL or a 10k-character node is refused in milliseconds, quoting 200 characters."""
    for url in ("redis://h:" + "1" * 1_000_000, "redis://h:" + "9" * 10_000 + "/0", "redis://a:1," + "b" * 5000):
        started = time.monotonic()
        with pytest.raises(QuotaError) as e:
            parse_target(url)
        assert time.monotonic() - started < 1 and len(str(e.value)) < 800
