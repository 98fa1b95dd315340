"""Global options are accepted before and after every subcommand, and mean the same in both positions."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from surgewatch.cli import _GLOBAL_OPTIONS, build_parser


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], argparse.ArgumentParser]
]:
    """Every runnable command path (`quota set`, `snapshot`, ...) with its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from leaf_commands(child, (*path, name))


def positionals(parser: argparse.ArgumentParser) -> list[str]:
    """A placeholder for each required positional argument (parsing only: nothing is run)."""
    return ["x" for a in parser._actions if not a.option_strings and a.nargs is None and a.dest != "help"]


def global_cases() -> list[tuple[tuple[str, ...], list[str], str, object]]:
    cases = []
    for path, parser in leaf_commands(build_parser()):
        for flags, kwargs in _GLOBAL_OPTIONS:
            flag = flags[0]
            action = parser._option_string_actions.get(flag)
            if action is not None and action.dest != flag.lstrip("-").replace("-", "_"):
                continue  # the command gives the flag its own meaning (demo --nodes N): not a global there
            value: object = True if kwargs.get("action") == "store_true" else ("2.5" if flag == "--interval" else "v")
            option = [flag] if value is True else [flag, str(value)]
            cases.append((path, option, flag.lstrip("-").replace("-", "_"), value))
    return cases


@pytest.mark.parametrize(("path", "option", "dest", "value"), global_cases(),
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_global_option_after_the_command_works_like_before(
    path: tuple[str, ...], option: list[str], dest: str, value: object
) -> None:
    """`surgewatch CMD ... --opt V` parses to the same value as `surgewatch --opt V CMD ...`."""
    parser = build_parser()
    leaf = dict(leaf_commands(parser))[path]
    tail = [*path, *positionals(leaf)]
    before = parser.parse_args([*option, *tail])
    after = parser.parse_args([*tail, *option])
    expected = 2.5 if dest == "interval" else value
    assert getattr(before, dest) == expected
    assert getattr(after, dest) == expected


def test_quota_set_takes_redis_after_the_tier() -> None:
    """The issue's own case: `quota set free 3/1d --redis URL` reaches the store with that URL."""
    args = build_parser().parse_args(["quota", "set", "free", "3/1d", "--redis", "redis://h:1/0", "--reason", "r"])
    assert (args.redis, args.tier, args.spec, args.reason) == ("redis://h:1/0", "free", "3/1d", "r")


def test_a_global_not_repeated_after_keeps_its_value_from_before() -> None:
    """The copies after the command never reset what was given before it."""
    args = build_parser().parse_args(["--redis", "redis://h:1/0", "--read-only", "quota", "list"])
    assert (args.redis, args.read_only) == ("redis://h:1/0", True)


def test_commands_own_options_keep_their_meaning() -> None:
    """demo's --nodes is a count of simulated nodes, snapshot's --redis its own: neither becomes the global."""
    demo = build_parser().parse_args(["demo", "--nodes", "4"])
    assert (demo.demo_nodes, demo.nodes) == (4, None)
    snap = build_parser().parse_args(["snapshot", "--redis", "redis://h:1/0", "--nodes", "http://n/metrics"])
    assert (snap.redis, snap.nodes) == ("redis://h:1/0", "http://n/metrics")


def test_init_help_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    """`init --help` says what init does, not only its usage line."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["init", "--help"])
    assert "seed" in capsys.readouterr().out.split("options:")[0]
