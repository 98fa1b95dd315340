"""Every module of collectors/ stays out of the UI, and every non-test module stays small."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

MODULES = sorted(f"collectors.{p.stem}" for p in (ROOT / "collectors").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", MODULES)
def test_collector_module_does_not_import_ui(module: str) -> None:
    """Importing any collectors module loads neither textual nor tui."""
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{module} imports the UI: {out.stdout.strip()}"


def test_collector_modules_are_small() -> None:
    """No collectors module grows past ~400 lines (one idea per module)."""
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "collectors").glob("*.py")}
    assert max(sizes.values()) <= 420, sizes
