"""The address a listener is told to use (`serve`, `rls`, `agent --host`): refused when it is not one, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

BAD = [("", "an IP address or a host name"), ("256.1.1.1", "not an IP address"),
       ("\x1b[31mhost", "an IP address or a host name"), ("[::1", "not an IP address")]


@pytest.mark.parametrize("command", [["serve", "--token", "t"], ["rls"], ["agent"]])
@pytest.mark.parametrize(("host", "why"), BAD)
def test_an_address_that_is_none_is_refused_before_listening_anywhere(command: list[str], host: str, why: str) -> None:
    """An empty --host (asyncio's "every interface", logged as the address typed), a bad IP or an escape: exit 2."""
    out = subprocess.run([sys.executable, "-m", "surgewatch.cli", "--redis", "redis://127.0.0.1:1/0", *command,
                          "--host", host], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid --host" in out.stderr and why in out.stderr, out.stderr
    assert "\x1b" not in out.stderr and out.stdout == ""


def test_a_domain_with_an_escape_is_refused_by_the_rate_limit_service() -> None:
    """`rls --domain` is echoed in its start line: a control character in it is refused, exit 2."""
    out = subprocess.run([sys.executable, "-m", "surgewatch.cli", "--redis", "redis://127.0.0.1:1/0", "rls",
                          "--domain", "\x1b[31mimages"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "invalid --domain" in out.stderr and "\x1b" not in out.stderr
