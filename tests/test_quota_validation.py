"""The validation table: every hostile or malformed input is refused with exit 2, a message saying what is
accepted, nothing written and no audit entry. Run through the real argparse wiring of surgewatch.cli.quota."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from quotas.keys import DEFAULT_PREFIX
from quotas.model import MAX_LIMIT, QuotaError, format_duration, parse_spec, parse_tier_cap
from sim.valkey import ValkeyProcess
from surgewatch.cli.quota import register

HOSTILE_TIERS = ["fr}ee", "a b", "FREE ", "x" * 33, "frée", "免费", "", "free\n", "{free}", "free:x"]
BAD_SPECS = [
    "-1/1d",
    "1.5/1d",
    f"{MAX_LIMIT + 1}/1d",
    "abc/1d",
    "3/0s",
    "3/40d",
    "3/1x",
    "3",
    "3/",
    "/1d",
    "3/1d/2",
    "3 /1d x",
]
BAD_OPTIONS = [
    ["--tier-cap", "0"], ["--tier-cap", "-5"], ["--tier-cap", "abc"], ["--tier-cap", "1.5"],
    ["--for", "0s"], ["--for", "32d"], ["--for", "2 hours"],
    ["--reason", "two\nlines"], ["--reason", "x" * 501], ["--as", ""], ["--as", "\x1b[31m"],
    ["--expect-version", "-1"],
]


def run(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str]:
    """Parse and run one `surgewatch --redis URL ...` command in process; (exit code, stderr)."""
    p = argparse.ArgumentParser(prog="surgewatch")
    p.add_argument("--redis")
    register(p.add_subparsers(dest="command"))
    try:
        args = p.parse_args(["--redis", url, *argv])
        code = args.func(args, SimpleNamespace(redis_url=args.redis, prefix=DEFAULT_PREFIX, read_only=False))
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def server() -> Iterator[ValkeyProcess]:
    """One Valkey for the whole table (every case writes nothing, which each case checks)."""
    with ValkeyProcess() as v:
        yield v


def snapshot(url: str) -> dict[bytes, bytes | None]:
    """Every key with its DUMP: equal snapshots mean nothing was written."""
    with redis.Redis.from_url(url) as c:
        return {k: c.dump(k) for k in c.keys("*")}


@pytest.fixture(scope="module")
def seeded(server: ValkeyProcess) -> str:
    """The server after `surgewatch init`: the five default tiers exist."""
    import asyncio

    import redis.asyncio as aioredis

    from quotas.store import QuotaStore

    async def init() -> None:
        c = aioredis.Redis.from_url(server.url)
        await QuotaStore(c).init()
        await c.aclose()

    asyncio.run(init())
    return server.url


@pytest.mark.parametrize("tier", HOSTILE_TIERS)
@pytest.mark.parametrize("command", [["set", "{tier}", "3/1d", "--create"], ["pause", "{tier}"], ["history", "{tier}"]])
def test_hostile_tier_names_refused(
    capsys: pytest.CaptureFixture[str], seeded: str, tier: str, command: list[str]
) -> None:
    """A hostile tier name exits 2, explains the naming rule, and writes nothing."""
    before = snapshot(seeded)
    code, err = run(capsys, seeded, "quota", *[tier if a == "{tier}" else a for a in command])
    assert code == 2
    assert "invalid tier name" in err and "lowercase letter first" in err
    assert snapshot(seeded) == before


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_malformed_quota_refused(capsys: pytest.CaptureFixture[str], seeded: str, spec: str) -> None:
    """A malformed LIMIT/WINDOW exits 2, says what is accepted, and writes nothing."""
    before = snapshot(seeded)
    code, err = run(capsys, seeded, "quota", "set", "free", spec)
    assert code == 2
    assert "invalid" in err and any(w in err for w in ("0 to", "between 1s and 31d", "e.g."))
    assert snapshot(seeded) == before


@pytest.mark.parametrize("option", BAD_OPTIONS, ids=lambda o: f"{o[0]}={o[1][:12]!r}")
def test_bad_options_refused(capsys: pytest.CaptureFixture[str], seeded: str, option: list[str]) -> None:
    """A bad cap, duration, reason, actor or expected version exits 2 and writes nothing."""
    before = snapshot(seeded)
    code, err = run(capsys, seeded, "quota", "set", "free", "3/1d", *option)
    assert code == 2 and "invalid" in err
    assert snapshot(seeded) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["quota", "set", "free", "3/1d", "--shadow", "--enforce"],
        ["quota", "history", "--count", "0"],
        ["quota", "history", "--count", "x"],
        ["quota", "set", "nosuch", "3/1d"],
        ["quota", "bogus"],
    ],
)
def test_other_bad_input_exits_2(capsys: pytest.CaptureFixture[str], seeded: str, argv: list[str]) -> None:
    """Conflicting flags, a bad count, an unknown tier without --create: exit 2, nothing written."""
    before = snapshot(seeded)
    code, err = run(capsys, seeded, *argv)
    assert code == 2 and err.strip()
    assert snapshot(seeded) == before


def test_missing_or_bad_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No Redis URL, or a URL of another scheme, exits 2 naming what is accepted (password redacted)."""
    code, err = run(capsys, "", "quota", "list")
    assert code == 2 and "--redis" in err
    code, err = run(capsys, "http://user:hunter2@example:1/", "quota", "list")
    assert code == 2 and "redis://" in err and "hunter2" not in err


@given(st.integers(0, MAX_LIMIT), st.sampled_from([1, 30, 60, 90, 3600, 5400, 86400, 31 * 86400]))
def test_spec_round_trips(limit: int, window_s: int) -> None:
    """Every legal LIMIT/WINDOW written the canonical way parses back to itself."""
    assert parse_spec(f"{limit}/{format_duration(window_s)}") == (limit, window_s)


@given(st.text(max_size=20))
def test_spec_parser_never_crashes(text: str) -> None:
    """Arbitrary text either parses into the legal ranges or raises QuotaError, never anything else."""
    try:
        limit, window_s = parse_spec(text)
    except QuotaError:
        return
    assert 0 <= limit <= MAX_LIMIT and 1 <= window_s <= 31 * 86400


@given(st.one_of(st.text(max_size=12), st.integers(-5, 10**10).map(str)))
def test_tier_cap_parser_never_crashes(text: str) -> None:
    """The tier-cap parser returns None, a cap in range, or raises QuotaError."""
    try:
        cap = parse_tier_cap(text)
    except QuotaError:
        return
    assert cap is None or 1 <= cap <= MAX_LIMIT
