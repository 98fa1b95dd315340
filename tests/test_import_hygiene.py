"""The data layers never import the UI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

DATA_MODULES = [
    "quotas.model", "quotas.keys", "quotas.store", "quotas.limiter", "quotas.cli",
    "collectors.samples", "collectors.runner", "collectors.gpu", "collectors.host",
    "collectors.traffic", "collectors.fleet", "collectors.agent", "collectors.snapshot", "collectors.cli",
    "sim.valkey", "sim.fleet", "sim.traffic", "sim.world",
]


@pytest.mark.parametrize("module", DATA_MODULES)
def test_data_layer_does_not_import_ui(module: str) -> None:
    """Importing a data-layer module loads neither textual nor tui."""
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} imports the UI: {out.stdout.strip()}"
