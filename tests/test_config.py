"""Settings resolution: flags, then environment, then surgewatch.toml; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from surgewatch.cli import main
from surgewatch.settings import ConfigError, config_path, resolve


def write_toml(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "surgewatch" / "surgewatch.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return {"XDG_CONFIG_HOME": str(tmp_path)}


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    """A --redis flag wins over SURGEWATCH_REDIS_URL, which wins over REDIS_URL and the file."""
    env = write_toml(tmp_path, 'redis_url = "redis://file:1/0"\nnodes = ["http://n1:9400/metrics"]\n')
    assert resolve(env=env).redis_url == "redis://file:1/0"
    assert resolve(env=env).nodes == ("http://n1:9400/metrics",)
    assert resolve(env={**env, "REDIS_URL": "redis://plain:1/0"}).redis_url == "redis://plain:1/0"
    both = {**env, "REDIS_URL": "redis://plain:1/0", "SURGEWATCH_REDIS_URL": "redis://sw:1/0"}
    assert resolve(env=both).redis_url == "redis://sw:1/0"
    assert resolve(redis="redis://flag:1/0", env=both).redis_url == "redis://flag:1/0"


def test_config_path_follows_xdg(tmp_path: Path) -> None:
    """The file is surgewatch.toml in the XDG config folder, or SURGEWATCH_CONFIG."""
    assert config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/surgewatch/surgewatch.toml")
    assert config_path({"SURGEWATCH_CONFIG": "/y/sw.toml"}) == Path("/y/sw.toml")


def test_thresholds_and_intervals_from_file(tmp_path: Path) -> None:
    """Thresholds and intervals come from the file when no flag sets them."""
    env = write_toml(tmp_path, "interval_s = 2.5\n[thresholds]\ntemp_hot_c = 75\n")
    s = resolve(env=env)
    assert s.interval_s == 2.5 and s.thresholds == {"temp_hot_c": 75.0}
    assert resolve(interval=0.5, env=env).interval_s == 0.5


def test_password_never_in_repr() -> None:
    """The settings' repr (what a log or traceback shows) hides the Redis password."""
    s = resolve(redis="redis://user:hunter2@db:6379/0", env={}, file={})
    assert "hunter2" not in repr(s)
    assert s.redis_url_shown == "redis://user:***@db:6379/0"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("interval_s = 'fast'", "interval"),
        ("nodes = ['ftp://x']", "node URL"),
        ("thresholds = 3", "thresholds"),
        ("=", "cannot read"),
    ],
)
def test_bad_file_is_a_clear_error(tmp_path: Path, text: str, why: str) -> None:
    """A malformed config file is refused with a message naming the setting."""
    env = write_toml(tmp_path, text)
    with pytest.raises(ConfigError, match=why):
        resolve(env=env)


def test_cli_bad_config_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI turns a bad setting into exit 2 with the message on stderr."""
    monkeypatch.setenv("SURGEWATCH_INTERVAL", "soon")
    assert main(["quota", "list"]) == 2
    assert "invalid interval" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "5000", "soon"])
def test_a_node_interval_that_would_scrape_on_every_poll_or_never_is_refused(value: str) -> None:
    """SURGEWATCH_NODE_INTERVAL (and node_interval_s) must be 0.1 to 3600 seconds: NaN would never scrape."""
    with pytest.raises(ConfigError, match="invalid node_interval_s"):
        resolve(env={"SURGEWATCH_NODE_INTERVAL": value}, file={})
    assert resolve(env={"SURGEWATCH_NODE_INTERVAL": "2.5"}, file={}).node_interval_s == 2.5


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('temp_hot_c = "hot"', "temp_hot_c = 'hot'"),
        ("e2e_p99_slo_s = nan", "e2e_p99_slo_s = nan"),  # an SLO no latency ever breaches
        ("ttft_p99_slo_s = inf", "ttft_p99_slo_s = inf"),
        ("temp_hot_c = -5", "temp_hot_c = -5"),
        ("kv_cache_warn_pct = true", "kv_cache_warn_pct = True"),
        ("temp_hoot_c = 70", "unknown threshold"),
    ],
)
def test_a_threshold_that_is_not_a_finite_number_or_not_a_threshold_is_refused_by_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, why: str
) -> None:
    """A bad [thresholds] value exits 2 naming it, for a snapshot as for the console (never a traceback)."""
    env = write_toml(tmp_path, f"[thresholds]\n{text}\n")
    with pytest.raises(ConfigError, match=why.replace("(", r"\(")):
        resolve(env=env)
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    assert main(["snapshot", "--json"]) == 2
    assert why in capsys.readouterr().err


def test_a_misspelt_setting_in_the_file_is_refused_naming_it(tmp_path: Path) -> None:
    """`node_interval = 30` (for node_interval_s) is refused, not ignored with the default kept."""
    env = write_toml(tmp_path, "node_interval = 30\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*'node_interval'.*node_interval_s"):
        resolve(env=env)
    ok = write_toml(tmp_path / "ok", 'prefix = "sw:"\nnode_interval_s = 30\n[guard]\nmode = "propose"\n[rls]\n')
    assert resolve(env=ok).node_interval_s == 30
