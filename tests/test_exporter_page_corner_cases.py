"""dcgm-exporter pages at their corners: intruding UUIDs, repeated series, missing labels and both parsing paths,
on real pages (first written for surviving mutants of collectors/dcgm.py and series.py: tests/README.md)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from collectors.dcgm import _LABELS_CACHE, PageError, filter_page, gpus_from_series, parse_report
from collectors.nodes import redact_url
from collectors.samples import GpuSample, MigInstance, NodeSample, NodeWarning
from collectors.series import Series, dedupe_uuids
from tests.conftest import L4_CAPTURE
from tests.test_fleet_pages import A30, page

L4 = L4_CAPTURE.read_text()
L4_UUID = "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c"
L4_LABELS = (f'gpu="0",UUID="{L4_UUID}",pci_bus_id="00000000:31:00.0",device="nvidia0",modelName="NVIDIA L4",'
             'Hostname="i-030791dc5a37cd257",DCGM_FI_DRIVER_VERSION="580.105.08"')
CONVERT_ERROR = "ERROR - FAILED TO CONVERT TO STRING"
# a proxy's answer in place of the exporter's page
BAD_GATEWAY = ("<html><body>502 Bad Gateway: the upstream server sent an invalid response while handling this"
               " request</body></html>\n")


@pytest.fixture(autouse=True)
def cold_label_cache() -> None:
    """Each test reads its pages as a console just started does: mutmut runs tests in processes forked from
    one that has already parsed pages, whose label cache would hide a broken label parser."""
    _LABELS_CACHE.clear()


def strict_only(text: str) -> str:
    """The same page with a tab between labels and value: valid Prometheus text the fast path hands over."""
    return text.replace("} ", "}\t")


def test_a_second_gpu_under_one_index_is_refused_with_one_whole_warning() -> None:
    """The L4 page plus another UUID claiming GPU 0: the L4 stays as it was, one warning names the intruder."""
    r = parse_report(L4 + 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-other"} 70\n', "n")
    assert r.gpus == parse_report(L4, "n").gpus
    assert r.warnings == (
        NodeWarning(0, "uuid", "duplicate", "GPU 0: a second GPU (GPU-other) under its index, ignored"),)


def test_a_field_read_twice_with_another_value_keeps_the_first_and_says_so() -> None:
    """The L4 page with its temperature again at 88 C from another pod and its SM clock again at 210 MHz: the
    first temperature is kept with one warning; the same clock twice is one reading, silently."""
    extra = (f'DCGM_FI_DEV_GPU_TEMP{{{L4_LABELS},pod="sidecar"}} 88\n'
             f'DCGM_FI_DEV_SM_CLOCK{{{L4_LABELS},pod="sidecar"}} 210\n')
    r = parse_report(L4 + extra, "n")
    assert r.gpus == parse_report(L4, "n").gpus and r.gpus[0].temp_c == 31
    assert r.warnings == (
        NodeWarning(0, "temp_c", "duplicate", "GPU 0: two temperature series (31 and 88 C), kept the first"),)


def test_a_used_series_without_a_gpu_label_is_skipped() -> None:
    """A temperature series that names no GPU index (only a UUID) belongs to no GPU: the page reads as before."""
    r = parse_report(L4 + f'DCGM_FI_DEV_GPU_TEMP{{UUID="{L4_UUID}"}} 99\n', "n")
    assert r == parse_report(L4, "n")


def test_mig_instances_without_a_profile_label_have_an_empty_profile() -> None:
    """The two-A30 MIG page with its GPU_I_PROFILE labels gone: instances are still read, profile ''."""
    r = parse_report(re.sub(r'GPU_I_PROFILE="[^"]*",', "", A30), "n")
    assert r.warnings == ()
    g0, g1 = r.gpus
    assert g0.mig == tuple(MigInstance(gi, "", 3.0, 6015.0) for gi in (3, 4, 5, 6))
    assert g1.mig == tuple(MigInstance(gi, "", 3.0, 6015.0) for gi in (3, 4))
    assert (g0.mem_used_mib, g0.mem_total_mib) == (12.0, 4 * 6015.0)


def test_an_instance_with_its_own_util_shows_it_over_its_engine_activity() -> None:
    """The H100 MIG page plus GPU_UTIL 30 % for instance 7 (whose engine ratio reads 0): 7 shows 30 %, the GPU
    the slice-weighted mean of 30, 0 and 0."""
    line = page("dcgm-exporter-H100-MIG-prof-only.prom").splitlines()[2]
    assert 'GPU_I_ID="7"' in line
    util = line.replace("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_GPU_UTIL").replace("} 0.000000", "} 30")
    (g,) = parse_report(page("dcgm-exporter-H100-MIG-prof-only.prom") + util + "\n", "n").gpus
    assert g.mig is not None and [(m.gi_id, m.util_pct) for m in g.mig] == [(7, 30.0), (8, 0.0), (9, 0.0)]
    assert g.util_pct == 10.0


def test_series_from_prometheus_become_gpus_of_their_node() -> None:
    """Triples as a Prometheus query answers them: one GPU of that node, with its UUID, model and temperature."""
    series: list[Series] = [
        ("DCGM_FI_DEV_GPU_TEMP", {"gpu": "1", "UUID": "GPU-b", "modelName": "NVIDIA L4"}, 44.0),
        ("DCGM_FI_DEV_POWER_USAGE", {"gpu": "1", "UUID": "GPU-b", "modelName": "NVIDIA L4"}, 27.5),
    ]
    assert gpus_from_series("gpu-07:9400", series) == (
        GpuSample("gpu-07:9400", 1, uuid="GPU-b", name="NVIDIA L4", temp_c=44.0, power_w=27.5),)


def test_a_gpu_on_two_nodes_is_warned_on_both_naming_each_host() -> None:
    """One exporter scraped as two nodes (the first with a login whose user is an e-mail address, redacted):
    the shared GPU counts once, on the first node, after that node's GPU without a UUID; each node's warning
    names the other by host:port alone, with the GPU index it has there."""
    first_url = redact_url("http://ops@example.com:s3cret@gpu-07:9400/metrics")
    assert first_url == "http://ops@example.com:***@gpu-07:9400/metrics"
    second_url = "http://gpu-07.lab:9400/metrics"
    a = NodeSample(first_url, "up", None, 1.0, 0.0, 0.0,
                   (GpuSample(first_url, 0), GpuSample(first_url, 1, uuid="GPU-same")))
    b = NodeSample(second_url, "up", None, 1.0, 0.0, 0.0,
                   (GpuSample(second_url, 0, uuid="GPU-same"), GpuSample(second_url, 1, uuid="GPU-b")))
    x, y = dedupe_uuids((a, b))
    assert x.gpus == a.gpus
    assert x.warnings == (NodeWarning(1, "uuid", "uuid", "GPU 1 (GPU-same) is also reported by gpu-07.lab:9400"),)
    assert y.gpus == (GpuSample(second_url, 1, uuid="GPU-b"),)
    assert y.warnings == (
        NodeWarning(0, "uuid", "uuid", "GPU 0 (GPU-same) is also on gpu-07:9400: counted once, there"),)


def test_a_page_the_fast_path_hands_over_reads_the_same_on_the_strict_path() -> None:
    """The L4 page with tabs before its values, and one power value dcgm-exporter could not convert: the same
    GPU (power n/a) and one warning quoting the value as served."""
    broken, n = re.subn(r"^(DCGM_FI_DEV_POWER_USAGE\{[^}]*\}) \S+$", rf"\1 {CONVERT_ERROR}", L4, flags=re.M)
    assert n == 1
    r = parse_report(strict_only(broken), "n")
    (want,) = parse_report(L4, "n").gpus
    assert want.power_w is not None
    assert r.gpus == (replace(want, power_w=None),)
    assert r.warnings == (NodeWarning(0, "power_w", "unparsable", f"GPU 0: power unreadable ('{CONVERT_ERROR}'), n/a"),)


def test_the_strict_path_reads_braces_inside_a_label_value() -> None:
    """A model name holding `{` and `}`, on a page the fast path hands over, with an unconvertible power value:
    the GPU keeps its name and temperature, power n/a with its warning."""
    lab = 'gpu="0",UUID="GPU-a",modelName="GRID {A100}-4C"'
    text = f"DCGM_FI_DEV_GPU_TEMP{{{lab}}}\t40\nDCGM_FI_DEV_POWER_USAGE{{{lab}}} {CONVERT_ERROR}\n"
    r = parse_report(text, "n")
    assert r.gpus == (GpuSample("n", 0, uuid="GPU-a", name="GRID {A100}-4C", temp_c=40.0),)
    assert r.warnings == (NodeWarning(0, "power_w", "unparsable", f"GPU 0: power unreadable ('{CONVERT_ERROR}'), n/a"),)


def test_a_value_glued_to_its_labels_that_is_no_number_costs_its_field() -> None:
    """`...}ERROR - FAILED ...` with no space: the parser refuses the line, the value is no number, so it costs
    the power field (a warning), never the page; a glued number (`}40`) is read as the parser reads it."""
    lab = 'gpu="0",UUID="GPU-a"'
    r = parse_report(f"DCGM_FI_DEV_GPU_TEMP{{{lab}}}40\nDCGM_FI_DEV_POWER_USAGE{{{lab}}}{CONVERT_ERROR}\n", "n")
    assert r.gpus == (GpuSample("n", 0, uuid="GPU-a", temp_c=40.0),)
    assert [(w.gpu, w.field, w.kind) for w in r.warnings] == [(0, "power_w", "unparsable")]
    glued = parse_report(f"DCGM_FI_DEV_GPU_TEMP{{{lab}}} 40\nDCGM_FI_DEV_POWER_USAGE{{{lab}}}27\n", "n")
    assert glued == parse_report(f"DCGM_FI_DEV_GPU_TEMP{{{lab}}} 40\nDCGM_FI_DEV_POWER_USAGE{{{lab}}} 27\n", "n")
    assert glued.gpus == (GpuSample("n", 0, uuid="GPU-a", temp_c=40.0, power_w=27.0),)


def test_a_label_less_series_the_parser_refuses_makes_the_page_not_prometheus() -> None:
    """A used series with no labels and a value of words, on a page the fast path hands over: not Prometheus
    text, with the parser's own complaint."""
    text = strict_only(L4) + "DCGM_FI_DEV_POWER_USAGE not a number\n"
    with pytest.raises(PageError) as e:
        parse_report(text, "n")
    assert str(e.value) == "not Prometheus text (could not convert string to float: 'not')"


def test_a_proxy_error_page_is_not_prometheus_with_the_parser_complaint_cut_at_80() -> None:
    """A 502 page from a proxy: PageError whose detail is the parser's message, spaces kept, cut at 80."""
    with pytest.raises(PageError) as e:
        parse_report(BAD_GATEWAY, "n")
    detail = "invalid metric name:<html><body>502 Bad Gateway: the upstream server sent an inv"
    assert len(detail) == 80 and str(e.value) == f"not Prometheus text ({detail})"


def test_a_gpu_less_page_of_unread_dcgm_fields_is_read_line_by_line() -> None:
    """The real convert-error page (only fields surgewatch does not read, one label with a missing quote) under
    a HELP line is a GPU-less page; an unread field line followed by a proxy's HTML is not Prometheus."""
    text = "# HELP DCGM_FI_DEV_COMPUTE_PIDS Compute PIDs.\n" + page("dcgm-exporter-convert-error.prom")
    assert parse_report(text, "n") == parse_report("", "n") == parse_report("# nothing\n", "n")
    assert parse_report(text, "n").gpus == () and parse_report(text, "n").warnings == ()
    with pytest.raises(PageError, match=r"^not Prometheus text \(invalid metric name:<html>"):
        parse_report('DCGM_FI_DEV_COMPUTE_PIDS{gpu="1"} 0\n' + BAD_GATEWAY, "n")


def test_filter_page_drops_an_unused_first_label_with_its_comma() -> None:
    """A series whose first label is one surgewatch does not keep: the filtered line starts at `{gpu=`."""
    text = 'DCGM_FI_DEV_GPU_TEMP{Hostname="node-3",gpu="0",pci_bus_id="x",UUID="GPU-a"} 40\nDCGM_FI_DEV_CPU 1\n'
    assert filter_page(text) == 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 40\n'


def test_a_long_unreadable_value_is_quoted_on_one_line_cut_at_40() -> None:
    """An exporter's error text, spaced out and longer than a status column, in the power field: the warning
    quotes it with its runs of spaces collapsed, cut at 40 characters."""
    text = ('DCGM_FI_DEV_GPU_TEMP{gpu="2",UUID="GPU-c"} 50\n'
            'DCGM_FI_DEV_POWER_USAGE{gpu="2",UUID="GPU-c"} ERROR  -   FAILED TO CONVERT TO STRING: NOT SUPPORTED\n')
    r = parse_report(text, "n")
    assert r.gpus == (GpuSample("n", 2, uuid="GPU-c", temp_c=50.0),)
    assert r.warnings == (NodeWarning(2, "power_w", "unparsable",
                                      "GPU 2: power unreadable ('ERROR - FAILED TO CONVERT TO STRING: NOT'), n/a"),)


def test_a_page_with_fb_total_takes_the_total_as_served() -> None:
    """A custom counters list with DCGM_FI_DEV_FB_TOTAL and no FB_FREE: the total is the served one."""
    lab = 'gpu="0",UUID="GPU-a",modelName="NVIDIA L4"'
    text = f"DCGM_FI_DEV_FB_USED{{{lab}}} 1200\nDCGM_FI_DEV_FB_TOTAL{{{lab}}} 23034\n"
    assert parse_report(text, "n").gpus == (
        GpuSample("n", 0, uuid="GPU-a", name="NVIDIA L4", mem_used_mib=1200.0, mem_total_mib=23034.0),)


def test_a_busy_gpu_shows_gpu_util_not_its_engine_activity() -> None:
    """The L4 page under load (GPU_UTIL 71 %, graphics engine active 0.42): util is GPU_UTIL's 71 %."""
    busy = re.sub(r"^(DCGM_FI_DEV_GPU_UTIL\{[^}]*\}) 0$", r"\1 71", L4, flags=re.M)
    busy = re.sub(r"^(DCGM_FI_PROF_GR_ENGINE_ACTIVE\{[^}]*\}) 0\.000000$", r"\1 0.42", busy, flags=re.M)
    assert busy.count(" 71\n") == busy.count(" 0.42\n") == 1
    (g,) = parse_report(busy, "n").gpus
    assert g.util_pct == 71.0


def test_the_management_power_limit_wins_over_the_enforced_one() -> None:
    """The V100 page (management limit 300 W on GPUs 2 and 3) plus an enforced limit of 250 W on GPU 2 and on
    GPU 0 (which has no management limit): GPU 2 shows 300 W, GPU 0 250 W."""
    extra = ('DCGM_FI_DEV_ENFORCED_POWER_LIMIT{gpu="2",UUID="GPU-a9079f15-493e-6c1c-c78c-73ec2b840cba"} 250\n'
             'DCGM_FI_DEV_ENFORCED_POWER_LIMIT{gpu="0",UUID="GPU-a6158b59-2c1e-1e63-0068-9178c4298abd"} 250\n')
    r = parse_report(page("dcgm-exporter-V100.prom") + extra, "n")
    assert [(g.index, g.power_limit_w) for g in r.gpus] == [(0, 250.0), (1, None), (2, 300.0), (3, 300.0)]
    assert r.warnings == ()


def test_a_mig_gpu_keeps_a_ratio_reported_for_the_whole_gpu() -> None:
    """The A100 as one 7g.79gb instance plus a tensor-pipe ratio of 0.25 for the whole GPU (no GPU_I_ID): the
    GPU shows 25 %, not the (absent) instances' mean."""
    lab = 'gpu="0",UUID="GPU-06357e72-c3ee-614b-775f-a89e18e8cc08",modelName="NVIDIA A100 80GB PCIe"'
    text = page("dcgm-exporter-A100-80GB-MIG-7g.prom") + f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{lab}}} 0.25\n"
    (g,) = parse_report(text, "n").gpus
    assert g.mig == (MigInstance(0, "7g.79gb"),)
    assert (g.tensor_active_pct, g.dram_active_pct, g.sm_clock_mhz) == (25.0, None, 1410.0)


def test_remapped_rows_are_read_from_either_count_alone() -> None:
    """The L4 page with only its uncorrectable remapped-rows count (2), then with only its correctable one (3):
    remapped rows 2 of which 2 uncorrectable, then 3 with the uncorrectable part unknown."""
    def without(kind: str, text: str) -> str:
        return re.sub(rf"^DCGM_FI_DEV_{kind}_REMAPPED_ROWS\{{.*\n", "", text, flags=re.M)

    def count(kind: str, n: int, text: str) -> str:
        return re.sub(rf"^(DCGM_FI_DEV_{kind}_REMAPPED_ROWS\{{[^}}]*\}}) 0$", rf"\g<1> {n}", text, flags=re.M)

    (unc,) = parse_report(count("UNCORRECTABLE", 2, without("CORRECTABLE", L4)), "n").gpus
    assert (unc.remapped_rows, unc.remapped_rows_uncorrectable) == (2, 2)
    (cor,) = parse_report(count("CORRECTABLE", 3, without("UNCORRECTABLE", L4)), "n").gpus
    assert (cor.remapped_rows, cor.remapped_rows_uncorrectable) == (3, None)


def test_values_prometheus_client_refuses_are_unreadable_on_both_paths() -> None:
    """`1_000` (Python reads it, Prometheus does not) and a value followed by a word for a timestamp are
    unreadable, with their warnings, on the fast path and on the strict one."""
    text = ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 50\n'
            'DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a"} 1_000\n'
            'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a"} 40 later\n')
    for served in (text, strict_only(text)):
        r = parse_report(served, "n")
        assert r.gpus == (GpuSample("n", 0, uuid="GPU-a", temp_c=50.0),)
        assert r.warnings == (NodeWarning(0, "power_w", "unparsable", "GPU 0: power unreadable ('1_000'), n/a"),
                              NodeWarning(0, "util_pct", "unparsable", "GPU 0: util unreadable ('40 later'), n/a"))


def test_the_fast_path_reads_a_timestamped_page_and_refuses_a_third_word() -> None:
    """Timestamped values are read on the fast path, which (unlike prometheus-client's parser, which takes
    `1410 1700000000000 1` as 1410) refuses a third word after the timestamp: SM clock unreadable."""
    text = ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a"} 50 1700000000000\n'
            'DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-a"} 1410 1700000000000 1\n')
    r = parse_report(text, "n")
    assert r.gpus == (GpuSample("n", 0, uuid="GPU-a", temp_c=50.0),)
    assert r.warnings == (
        NodeWarning(0, "sm_clock_mhz", "unparsable", "GPU 0: SM clock unreadable ('1410 1700000000000 1'), n/a"),)


@pytest.mark.parametrize("spaces", [" ", "   "], ids=["one-space", "three-spaces"])
def test_a_used_series_with_neither_labels_nor_a_value_makes_the_page_not_prometheus(spaces: str) -> None:
    """A line cut after a used metric's name (and one or three spaces), below a good series: not Prometheus."""
    text = f'DCGM_FI_DEV_GPU_TEMP{{gpu="0",UUID="GPU-a"}} 50\nDCGM_FI_DEV_POWER_USAGE{spaces}\n'
    with pytest.raises(PageError) as e:
        parse_report(text, "n")
    assert str(e.value) == "not Prometheus text (Invalid value: 'DCGM_FI_DEV_POWER_USAGE')"


def test_the_fast_path_reads_braces_inside_a_label_value() -> None:
    """A model name holding `{` and `}` on a plain page: read on the fast path (which, unlike the parser,
    refuses a third word after a timestamp), name and temperature kept."""
    lab = 'gpu="0",UUID="GPU-a",modelName="GRID {A100} 4C"'
    text = f"DCGM_FI_DEV_GPU_TEMP{{{lab}}} 40\nDCGM_FI_DEV_SM_CLOCK{{{lab}}} 1410 1700000000000 1\n"
    r = parse_report(text, "n")
    assert r.gpus == (GpuSample("n", 0, uuid="GPU-a", name="GRID {A100} 4C", temp_c=40.0),)
    assert r.warnings == (
        NodeWarning(0, "sm_clock_mhz", "unparsable", "GPU 0: SM clock unreadable ('1410 1700000000000 1'), n/a"),)


def test_label_less_dcgm_series_are_skipped_without_stopping_the_fast_path() -> None:
    """A node-level DCGM_FI_DEV_COUNT and a label-less XID count ahead of the GPU's series: both skipped (no GPU
    index), the GPU read on the fast path (its SM clock with a third word after the timestamp unreadable)."""
    lab = 'gpu="0",UUID="GPU-a"'
    text = ("DCGM_FI_DEV_COUNT 1\nDCGM_FI_DEV_XID_ERRORS 0\n"
            f"DCGM_FI_DEV_GPU_TEMP{{{lab}}} 40\nDCGM_FI_DEV_SM_CLOCK{{{lab}}} 1410 1700000000000 1\n")
    r = parse_report(text, "n")
    assert r.gpus == (GpuSample("n", 0, uuid="GPU-a", temp_c=40.0),)
    assert r.warnings == (
        NodeWarning(0, "sm_clock_mhz", "unparsable", "GPU 0: SM clock unreadable ('1410 1700000000000 1'), n/a"),)
