"""The data layers and the core never import the UI, the headless commands run without it, and modules stay
small enough to hold in one's head."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim.valkey import ValkeyProcess
from tests.conftest import ROOT

DATA_LAYERS = ("quotas", "collectors", "sim")
DATA_MODULES = sorted(
    f"{pkg}.{p.stem}" for pkg in DATA_LAYERS for p in (ROOT / pkg).glob("*.py") if p.stem != "__init__"
)
# the core, every module of it (the CLI modules that start a front end import it only inside their handler)
CORE_MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in (ROOT / "surgewatch").rglob("*.py") if p.stem != "__main__"
)


def test_every_data_layer_module_is_checked() -> None:
    """The list below is discovered from the tree, so a new module cannot slip past the check."""
    assert {"quotas.limiter", "quotas.store", "collectors.gpu", "collectors.fleet", "sim.world"} <= set(DATA_MODULES)


@pytest.mark.parametrize("module", DATA_MODULES + CORE_MODULES)
def test_data_layer_does_not_import_ui(module: str) -> None:
    """Importing a data-layer or core module in a fresh interpreter loads neither textual nor tui."""
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} imports the UI: {out.stdout.strip()}"


# runs a `surgewatch` command in this interpreter for a few seconds, then names the UI modules it loaded
_RUN_THEN_LOOK = """
import os, sys, threading, time
from surgewatch.cli import main

def look():
    ui = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "tui"))
    print("UI loaded: " + ",".join(ui), flush=True)
    os._exit(0)

threading.Timer(4.0, look).start()  # guard and record run until stopped: look while they run
main(sys.argv[1:])
look()
"""


@pytest.mark.parametrize("argv", [
    ("snapshot", "--json", "--no-local"),
    ("guard", "--dry-run"),
    ("record", "{tmp}/box.sqlite", "--no-local"),
], ids=["snapshot", "guard", "record"])
def test_headless_commands_run_without_the_ui(argv: tuple[str, ...], valkey: ValkeyProcess, tmp_path: Path) -> None:
    """`snapshot`, `guard` and `record` do their work against a real Redis with Textual never loaded."""
    args = ["--redis", valkey.url, *(a.format(tmp=tmp_path) for a in argv)]
    out = subprocess.run([sys.executable, "-c", _RUN_THEN_LOOK, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    looked = [line for line in out.stdout.splitlines() if line.startswith("UI loaded: ")]
    assert looked == ["UI loaded: "], f"{argv[0]}: {looked or out.stdout + out.stderr}"


def test_modules_are_small() -> None:
    """No Python or Lua module outside tests/ grows past 450 lines (one idea per module)."""
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for pkg in (*DATA_LAYERS, "surgewatch", "tui", "bench")
        for pattern in ("*.py", "*.lua")
        for p in (ROOT / pkg).rglob(pattern)
    }
    assert {k: v for k, v in sizes.items() if v > 450} == {}
