"""A benchmark that could not measure says so and fails: it never meets a target with a missing figure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_console_bench_fails_an_empty_measurement() -> None:
    """A console that was never running (0 % CPU, no RSS, no fleet on screen) is NOT MEASURED, not "met"."""
    console = bench_module("console")
    ok, line = console.targets_line("exporter", console.Measured(0.0, 0.0, showed=False))
    assert not ok
    assert "NOT MEASURED" in line and " met" not in line


def test_console_bench_fails_a_screen_without_the_fleet() -> None:
    """A console that ran but never showed the fleet measured an idle screen: not a measurement."""
    console = bench_module("console")
    ok, line = console.targets_line("exporter", console.Measured(0.4, 80.0, showed=False))
    assert not ok and "NOT MEASURED" in line


def test_console_bench_meets_targets_only_with_a_measurement() -> None:
    """A real figure within the targets is met."""
    console = bench_module("console")
    ok, line = console.targets_line("exporter", console.Measured(2.5, 90.0, showed=True))
    assert ok and line.count(": met") == 2
