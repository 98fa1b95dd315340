"""The fast /metrics path agrees with prometheus-client's parser; node lists and URL redaction."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.dcgm import USED_METRICS, parse_page, parse_page_strict
from collectors.nodes import NodeListError, parse_nodes, redact_url
from tests.conftest import L4_CAPTURE

SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # typed: mypy infers a bare tuple literal here as tuple[str]
label_value = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=SURROGATES, exclude_characters="\x00"),
                      max_size=12)
value = st.one_of(st.integers(-10**6, 10**9).map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
                  st.sampled_from(["NaN", "+Inf", "-Inf", "1e3", "0.000000"]))


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def pages(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 30))):
        name = draw(st.sampled_from([*USED_METRICS, "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_DEV_FB_USED_PERCENT"]))
        gpu = draw(st.integers(0, 3))
        extra = draw(label_value)
        order = draw(st.booleans())
        labs = [f'gpu="{gpu}"', f'UUID="GPU-{gpu}"', f'modelName="{_esc(extra)}"', f'pci_bus_id="{_esc(extra)}"']
        if order:
            labs.reverse()
        ts = draw(st.sampled_from(["", " 1700000000000"]))
        lines.append(f"{name}{{{','.join(labs)}}} {draw(value)}{ts}")
        if draw(st.booleans()):
            lines.append(f"# HELP {name} some help")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, derandomize=True)
@given(pages())
def test_fast_path_equals_prometheus_client_parser(page: str) -> None:
    """Any page of used series, escaped labels, timestamps and odd values parses the same both ways."""
    assert parse_page(page, "n") == parse_page_strict(page, "n")


def test_fast_path_equals_strict_on_the_l4_capture() -> None:
    """The real capture gives the same GPUs on both paths."""
    text = L4_CAPTURE.read_text()
    assert parse_page(text, "n") == parse_page_strict(text, "n") != ()


def test_parse_nodes_forms(tmp_path: Path) -> None:
    """Comma lists, @FILE with comments, default /metrics path, duplicates dropped."""
    assert parse_nodes("http://a:9400, https://b/m ,,http://a:9400/metrics") == ["http://a:9400/metrics", "https://b/m"]
    f = tmp_path / "n.txt"
    f.write_text("# fleet\nhttp://x:1/metrics  # one\n\nhttp://y:2\n")
    assert parse_nodes(f"@{f}") == ["http://x:1/metrics", "http://y:2/metrics"]
    assert parse_nodes(None) == [] and parse_nodes(["http://z"]) == ["http://z/metrics"]


@pytest.mark.parametrize("bad", ["ftp://x", "x:9400", "http://", "http://h:99999", "@/nonexistent/file"])
def test_parse_nodes_refuses_bad_entries(bad: str) -> None:
    """Non-http URLs, missing hosts, bad ports and unreadable files are refused with a message."""
    with pytest.raises(NodeListError):
        parse_nodes(bad)


def test_a_node_list_naming_no_node_is_refused(tmp_path: Path) -> None:
    """`--nodes ''`, a blank list and a comments-only @FILE say they name no node; an unset value is no list."""
    f = tmp_path / "comments.txt"
    f.write_text("# the fleet moved to Prometheus\n\n   # nothing here\n")
    for value, where in (("", "--nodes"), (" , ,", "--nodes"), (f"@{f}", f"node list {f}")):
        with pytest.raises(NodeListError, match="names no node") as e:
            parse_nodes(value)
        assert str(e.value).startswith(where)
    assert parse_nodes(None) == [] and parse_nodes([]) == []


def test_redact_url_hides_passwords() -> None:
    """Passwords never survive redaction; URLs without credentials are unchanged."""
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("http://admin:pw@[::1]:9090/x") == "http://admin:***@[::1]:9090/x"
    assert redact_url("http://h:9400/metrics") == "http://h:9400/metrics"
    assert "s3cret" not in (redact_url("http://u:s3cret@h:bad/") or "")
