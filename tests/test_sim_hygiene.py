"""The simulated world is a data layer: it never imports the UI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("module", ["sim.gpu_model", "sim.fleet", "sim.traffic", "sim.exporter", "sim.world", "sim.runner"])
def test_sim_module_does_not_import_ui(module: str) -> None:
    """Importing a sim module loads neither textual nor tui."""
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} imports the UI: {out.stdout.strip()}"
