"""The data layers never import the UI, and modules stay small enough to hold in one's head."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

DATA_LAYERS = ("quotas", "collectors", "sim")
DATA_MODULES = sorted(
    f"{pkg}.{p.stem}" for pkg in DATA_LAYERS for p in (ROOT / pkg).glob("*.py") if p.stem != "__init__"
)


def test_every_data_layer_module_is_checked() -> None:
    """The list below is discovered from the tree, so a new module cannot slip past the check."""
    assert {"quotas.limiter", "quotas.store", "collectors.gpu", "collectors.fleet", "sim.world"} <= set(DATA_MODULES)


@pytest.mark.parametrize("module", DATA_MODULES)
def test_data_layer_does_not_import_ui(module: str) -> None:
    """Importing a data-layer module in a fresh interpreter loads neither textual nor tui."""
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} imports the UI: {out.stdout.strip()}"


def test_modules_are_small() -> None:
    """No Python or Lua module outside tests/ grows past 450 lines (one idea per module)."""
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for pkg in (*DATA_LAYERS, "tui", "bench")
        for pattern in ("*.py", "*.lua")
        for p in (ROOT / pkg).rglob(pattern)
    }
    assert {k: v for k, v in sizes.items() if v > 450} == {}
