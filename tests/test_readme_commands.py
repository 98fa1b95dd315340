"""Every `surgewatch ...` command the README shows is accepted by the real parser, and works when the README is
pasted in order into a fresh shell (the first command activates the virtual environment the others use)."""

from __future__ import annotations

import re
import shlex

import pytest

from surgewatch.cli import build_parser
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
SHELL_BREAKS = ("&&", "||", ";", "|", ">", ">>", "<", "2>", "&")


def code_lines(text: str) -> list[str]:
    """The lines of fenced and indented code blocks: what a reader pastes."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            out.append(line.strip())
    return out


def commands(text: str) -> list[list[str]]:
    """Each `surgewatch` invocation in the code blocks, as argv (up to the next shell operator)."""
    found = []
    for line in code_lines(text):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # not shell (JSON, TOML)
        start = None
        for i, w in enumerate(words):
            if w.endswith("surgewatch") and (i == 0 or words[i - 1] in SHELL_BREAKS) and start is None:
                start = i
            elif start is not None and w in SHELL_BREAKS:
                found.append(words[start:i])
                start = None
        if start is not None:
            found.append(words[start:])
    return found


README_COMMANDS = commands(README)


def test_the_readme_shows_commands() -> None:
    """The extraction finds the README's commands (a broken extractor must not pass everything vacuously)."""
    assert len(README_COMMANDS) >= 30
    assert ["surgewatch", "demo"] in README_COMMANDS


@pytest.mark.parametrize("argv", README_COMMANDS, ids=lambda argv: " ".join(argv)[:80])
def test_each_readme_command_parses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The command's options and arguments are all accepted by `surgewatch`'s parser."""
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as e:
        pytest.fail(f"`{shlex.join(argv)}` is refused (exit {e.code}): {capsys.readouterr().err.strip()}")


def test_the_commands_run_in_order_in_one_shell() -> None:
    """The first command activates .venv and installs; every command after it is a bare `surgewatch` (no
    `.venv/bin/` prefix that a later, bare one would contradict)."""
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    install = next(line for line in first_block.splitlines() if "surgewatch demo" in line)
    assert re.search(r"\. \.venv/bin/activate && .*pip install .*&& surgewatch demo", install), install
    assert "tests/check" in first_block.split(install, 1)[1]  # the second command runs the checks
    assert all(argv[0] == "surgewatch" for argv in README_COMMANDS), [a[0] for a in README_COMMANDS]


def svg_lines(svg: str) -> list[str]:
    """The terminal lines of a Textual SVG screenshot: its text runs grouped by row, left to right."""
    import html

    rows: dict[float, list[tuple[float, str]]] = {}
    for attrs, text in re.findall(r"<text([^>]*)>([^<]*)</text>", svg):
        x, y = re.search(r'\bx="([\d.]+)"', attrs), re.search(r'\by="([\d.]+)"', attrs)
        if x and y:
            rows.setdefault(float(y.group(1)), []).append((float(x.group(1)), html.unescape(text).replace("\xa0", " ")))
    return ["".join(t for _, t in sorted(runs)) for _, runs in sorted(rows.items())]


def test_the_readme_picture_is_the_current_screen() -> None:
    """docs/demo.svg (made by `surgewatch demo --screenshot docs/demo.svg`) shows today's console: the footer
    starting q Quit, ? Help, e Edit quota; tiers in quota order; the fleet's throttling as one ongoing incident."""
    assert "surgewatch demo --screenshot docs/demo.svg" in README
    lines = svg_lines((ROOT / "docs" / "demo.svg").read_text())
    assert lines[-1].strip().startswith("q Quit  ? Help  e Edit quota"), lines[-1]
    tier_rows = [m.group(1) for line in lines for m in [re.search(r"│(free|plus|pro|team|enterprise) active", line)]
                 if m]
    assert tier_rows == ["free", "plus", "pro", "team", "enterprise"], tier_rows
    assert sum("▶ ongoing" in line and "throttling:" in line for line in lines) == 1
