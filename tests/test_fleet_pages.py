"""Real dcgm-exporter pages read right (issue 12): MIG, profiling-only pages, blanks, bounds, bad values,
duplicates, model names; and the one metric table shared by parser, agent and simulator."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.dcgm import USED_METRICS, parse_page, parse_page_strict, parse_report
from collectors.metrics import METRICS, READ
from collectors.samples import GpuSample, NodeSample
from collectors.series import dedupe_uuids
from surgewatch.kpis import mig_summary, short_model
from tests.conftest import FIXTURES, L4_CAPTURE

HERE = Path(__file__).parent / "fixtures"
A30 = (FIXTURES / "dcgm-exporter-A30-MIG.prom").read_text() + (HERE / "dcgm-exporter-A30-MIG-fb.prom").read_text()


def page(name: str) -> str:
    return (HERE / name).read_text()


def test_a30_mig_one_row_per_physical_gpu_with_its_instances() -> None:
    """Two A30s, four (and two) 1g.6gb instances: one GPU each, memory summed, power one sample."""
    r = parse_report(A30, "n")
    assert r.warnings == ()
    g0, g1 = r.gpus
    assert (g0.uuid, g0.name, g0.temp_c, g0.sm_clock_mhz) == ("GPU-265c9814-6156-355b-e589-ff2064894f16",
                                                             "NVIDIA A30", 35, 1440)
    assert g0.power_w == 52.636  # one instance's sample of the device value, never a sum
    assert g0.mig is not None and [m.gi_id for m in g0.mig] == [3, 4, 5, 6]
    assert {(m.profile, m.mem_used_mib, m.mem_total_mib) for m in g0.mig} == {("1g.6gb", 3, 6015)}
    assert (g0.mem_used_mib, g0.mem_total_mib) == (12, 4 * 6015)
    assert g1.mig is not None and len(g1.mig) == 2 and g1.power_w == 56.121
    assert mig_summary(g0.mig) == "MIG 4\u00d71g.6gb"


def test_h100_page_with_only_prof_fields_shows_its_gpu() -> None:
    """An H100 whose page carries only DCGM_FI_PROF_GR_ENGINE_ACTIVE per instance is a GPU, util 0 %."""
    (g,) = parse_page(page("dcgm-exporter-H100-MIG-prof-only.prom"), "n")
    assert g.name == "NVIDIA H100 80GB HBM3" and g.util_pct == 0.0
    assert g.mig is not None and [(m.gi_id, m.util_pct) for m in g.mig] == [(7, 0.0), (8, 0.0), (9, 0.0)]
    assert g.mem_used_mib is None  # the instances report no FB fields (dcgm-exporter issue 512)


def test_util_falls_back_to_gr_engine_active_weighted_by_slices() -> None:
    """No GPU_UTIL: the whole-GPU GR_ENGINE_ACTIVE x100 if given, else the instances' slice-weighted mean."""
    lab = 'gpu="0",UUID="GPU-a",modelName="NVIDIA A100-SXM4-80GB"'
    text = (f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{lab},GPU_I_PROFILE="3g.40gb",GPU_I_ID="1"}} 0.9\n'
            f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{lab},GPU_I_PROFILE="1g.10gb",GPU_I_ID="2"}} 0.5\n'
            f'DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{lab},GPU_I_PROFILE="3g.40gb",GPU_I_ID="1"}} 0.5\n'
            f'DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{lab},GPU_I_PROFILE="1g.10gb",GPU_I_ID="2"}} 0.1\n'
            f'DCGM_FI_DEV_FB_USED{{{lab},GPU_I_PROFILE="1g.10gb",GPU_I_ID="2"}} 9940\n'
            f'DCGM_FI_DEV_FB_FREE{{{lab},GPU_I_PROFILE="1g.10gb",GPU_I_ID="2"}} 30\n')
    (g,) = parse_page(text, "n")
    assert g.util_pct is not None and abs(g.util_pct - (90 * 3 + 50) / 4) < 1e-9
    assert g.tensor_active_pct is not None and abs(g.tensor_active_pct - (50 * 3 + 10) / 4) < 1e-9
    (whole,) = parse_page(text + f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{lab}}} 0.25\n", "n")
    assert whole.util_pct == 25.0
    assert g.mig is not None and g.mig[1].mem_used_mib == 9940 and g.mig[1].mem_total_mib == 9970


def test_dcgm_blanks_are_na_never_numbers() -> None:
    """INT32/INT64/FP64 blanks and the not-found/not-supported values above them are n/a, silently."""
    lab = 'gpu="0",UUID="GPU-a"'
    text = (f"DCGM_FI_DEV_XID_ERRORS{{{lab}}} 9223372036854775808\n"
            f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{lab}}} 9223372036854775794\n"
            f"DCGM_FI_DEV_POWER_MGMT_LIMIT{{{lab}}} 140737488355328.0\n"
            f"DCGM_FI_DEV_POWER_USAGE{{{lab}}} 140737488355330\n"
            f"DCGM_FI_DEV_GPU_TEMP{{{lab}}} {0x7FFFFFF0}\n"
            f"DCGM_FI_DEV_SM_CLOCK{{{lab}}} {0x7FFFFFF2}\n"
            f"DCGM_FI_DEV_FB_USED{{{lab}}} 100\n")
    r = parse_report(text, "n")
    (g,) = r.gpus
    assert (g.xid, g.ecc_uncorrected, g.power_limit_w, g.power_w, g.temp_c, g.sm_clock_mhz) == (None,) * 6
    assert g.mem_used_mib == 100 and r.warnings == ()


def test_out_of_range_values_are_na_and_named_once() -> None:
    """util 1e20 %, power 1e308 W, memory -5 MiB: n/a, one warning each, the rest of the GPU intact."""
    lab = 'gpu="3",UUID="GPU-c"'
    text = (f"DCGM_FI_DEV_GPU_UTIL{{{lab}}} 1e20\nDCGM_FI_DEV_POWER_USAGE{{{lab}}} 1e308\n"
            f"DCGM_FI_DEV_FB_USED{{{lab}}} -5\nDCGM_FI_DEV_GPU_TEMP{{{lab}}} 61\n")
    r = parse_report(text, "n")
    (g,) = r.gpus
    assert (g.util_pct, g.power_w, g.mem_used_mib, g.temp_c) == (None, None, None, 61)
    assert sorted(w.text for w in r.warnings) == [
        "GPU 3: memory used -5 MiB out of range, ignored",
        "GPU 3: power 1e+308 W out of range, ignored",
        "GPU 3: util 1e+20 % out of range, ignored",
    ]


def test_an_unreadable_value_costs_one_field_not_the_node() -> None:
    """dcgm-exporter's `ERROR - FAILED TO CONVERT TO STRING` on a read field: that field n/a, a warning."""
    lab = 'gpu="0",UUID="GPU-a"'
    text = (f"DCGM_FI_DEV_XID_ERRORS{{{lab}}} ERROR - FAILED TO CONVERT TO STRING\n"
            f"DCGM_FI_DEV_GPU_TEMP{{{lab}}} 50\n" + page("dcgm-exporter-convert-error.prom"))
    for parse in (parse_report, lambda t, n: parse_report(t.replace("50\n", "50 1700000000000\n"), n)):
        r = parse(text, "n")
        (g,) = r.gpus
        assert g.temp_c == 50 and g.xid is None
        (w,) = r.warnings
        assert (w.kind, w.field) == ("unparsable", "xid") and "FAILED TO CONVERT" in w.text
    assert parse_page_strict(text, "n") == parse_page(text, "n")


def test_real_convert_error_page_on_unread_fields_is_a_gpu_less_page() -> None:
    """The real page (unread PID fields, one with a broken quote) is not 'down': it has no GPU series."""
    assert parse_report(page("dcgm-exporter-convert-error.prom"), "n").gpus == ()


def test_duplicates_are_refused_not_last_won() -> None:
    """A second series of the same GPU and field with another value: the first is kept, with a warning."""
    text = ('DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",pod="x"} 40\n'
            'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-a",pod="y"} 88\n'
            'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-b"} 70\n'
            'DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a",pod="x"} 100\n'
            'DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a",pod="y"} 100\n')
    r = parse_report(text, "n")
    (g,) = r.gpus
    assert (g.uuid, g.temp_c, g.power_w) == ("GPU-a", 40, 100)
    assert sorted(w.kind for w in r.warnings) == ["duplicate", "duplicate"]


def test_a_gpu_on_two_nodes_is_counted_once_naming_both() -> None:
    g = GpuSample("x", 0, uuid="GPU-same")
    a = NodeSample("http://gpu-07:9400/metrics", "up", None, 1.0, 0.0, 0.0, (g,))
    b = NodeSample("http://gpu-07.lab:9400/metrics", "up", None, 1.0, 0.0, 0.0, (g, GpuSample("x", 1, uuid="GPU-b")))
    x, y = dedupe_uuids((a, b))
    assert len(x.gpus) + len(y.gpus) == 2 and [gg.uuid for gg in y.gpus] == ["GPU-b"]
    assert "gpu-07.lab:9400" in x.warnings[0].text and "gpu-07:9400" in y.warnings[0].text
    assert dedupe_uuids((a,))[0] is a


def test_names_keep_the_model_without_the_vendor_prefix() -> None:
    (v100, *_) = parse_page(page("dcgm-exporter-V100.prom"), "n")
    mixed = {g.index: g for g in parse_page(page("dcgm-exporter-mixed-RTX2000Ada-A30-MIG.prom"), "n")}
    assert short_model(v100.name) == "V100-SXM2-32GB" and v100.name == "Tesla V100-SXM2-32GB"
    assert short_model(mixed[1].name) == "RTX 2000 Ada" and mixed[1].mig is None
    assert mixed[2].mig is not None and mixed[2].temp_c == 45
    assert [short_model(n) for n in ("Tesla T4", "NVIDIA A800-SXM4-80GB", "GRID A100-8C")] == [
        "T4", "A800-SXM4-80GB", "GRID A100-8C"]


def test_page_without_model_name_and_a100_7g() -> None:
    g0, g1 = parse_page(page("gpu-monitoring-tools-no-modelName.prom"), "n")
    assert g0.name is None and g0.dram_active_pct == 0.0 and (g1.power_w, g1.temp_c) == (167.362, 56)
    (a100,) = parse_page(page("dcgm-exporter-A100-80GB-MIG-7g.prom"), "n")
    assert a100.mig is not None and a100.mig[0].profile == "7g.79gb" and a100.mig[0].slices == 7


def test_one_metric_table_for_parser_agent_and_simulator() -> None:
    from collectors.agent import GPU_METRICS
    from sim.exporter import _METRICS

    names = {m.name for m in METRICS}
    assert set(USED_METRICS) == set(READ) <= names
    assert {n for n, _, _ in GPU_METRICS} <= names and {m.name for m in _METRICS} <= names
    assert {m.name: m.type for m in METRICS}["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"] == "counter"


def test_nan_a_temperature_below_freezing_and_a_gpu_label_not_an_index_are_named() -> None:
    """On the real L4 capture: a NaN temperature, -5 °C and `gpu="zero"` each cost their value with a warning
    that says so; nothing is dropped in silence, on both parsing paths."""
    page = L4_CAPTURE.read_text()
    temp = next(ln for ln in page.splitlines() if ln.startswith("DCGM_FI_DEV_GPU_TEMP{"))
    power = next(ln for ln in page.splitlines() if ln.startswith("DCGM_FI_DEV_POWER_USAGE{"))
    for bad, words in ((" NaN", "GPU 0: temperature is NaN (no reading), n/a"),
                       (" -5", "GPU 0: temperature -5 C out of range, ignored")):
        text = page.replace(temp, temp.rsplit(" ", 1)[0] + bad)
        r = parse_report(text, "n")
        (g,) = r.gpus
        assert g.temp_c is None and words in [w.text for w in r.warnings]
        assert parse_page_strict(text, "n") == r.gpus
    zero = power.replace('gpu="0"', 'gpu="zero"')
    r = parse_report(page.replace(power, power + "\n" + zero), "n")
    assert r.gpus[0].power_w is not None
    (w,) = [w for w in r.warnings if w.field == "gpu"]
    assert w.kind == "unparsable" and 'gpu="zero"' in w.text and "power" in w.text


# ----- Hypothesis: both parsing paths agree, and nothing implausible ever reaches a GPU
_BAD = ["NaN", "+Inf", "-Inf", "1e308", "-5", "1e20", "9223372036854775808", "140737488355328.0",
        str(0x7FFFFFF0), "ERROR - FAILED TO CONVERT TO STRING", "0x1F"]
values = st.one_of(st.integers(-10, 10**6).map(str), st.floats(-1e9, 1e9, allow_nan=False).map(repr),
                   st.sampled_from(_BAD))


@st.composite
def messy_pages(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 40))):
        name = draw(st.sampled_from(USED_METRICS))
        gpu = draw(st.integers(0, 2))
        labs = [f'gpu="{gpu}"', f'UUID="GPU-{gpu}"']
        if draw(st.booleans()):
            profile = draw(st.sampled_from(["1g.10gb", "3g.40gb"]))
            labs.append(f'GPU_I_ID="{draw(st.integers(1, 3))}",GPU_I_PROFILE="{profile}"')
        line = f"{name}{{{','.join(labs)}}} {draw(values)}"
        lines.append(line)
        if draw(st.integers(0, 4)) == 0:
            lines.append(line.rsplit(" ", 1)[0] + " " + draw(values))  # a duplicate, maybe another value
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(messy_pages())
def test_messy_pages_parse_alike_and_stay_within_bounds(text: str) -> None:
    """Blanks, out-of-range, unparsable values and duplicates: same GPUs on both paths, all in range."""
    fast = parse_report(text, "n")
    assert fast.gpus == parse_page_strict(text, "n")
    for g in fast.gpus:
        for v in (g.util_pct, g.mem_util_pct, g.fan_pct, g.tensor_active_pct, g.dram_active_pct):
            assert v is None or 0 <= v <= 100
        assert g.power_w is None or 0 <= g.power_w <= 5000
        assert g.temp_c is None or 0 <= g.temp_c <= 150
        assert g.mem_used_mib is None or 0 <= g.mem_used_mib <= 3 * 1024 * 1024  # 3 instances of <= 1 TiB
        assert g.xid is None or 0 < g.xid < 2**31
        for m in g.mig or ():
            assert m.util_pct is None or 0 <= m.util_pct <= 100
    kinds = {w.kind for w in fast.warnings}
    assert kinds <= {"range", "unparsable", "duplicate"}
