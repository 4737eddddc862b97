"""probe on real cells: real vLLM sdists, Debian's CUDA 12.4, real torch headers, real nvcc.

Not heavy (about 2-4 min together on 2 cores): unit choice and flags on the real trees
(no compiler), PyPI's nvidia-cutlass against the trees' pins (a 5 MB download, cached), and
the deciding unit of the Float8_e8m0fnu question compiled to the front end against torch
2.6.0 (fails, quoting nvcc's line) and torch 2.7.1 (passes).

Heavy (``-m heavy``; 3-12 min per cell on a shared 2-core machine, the two full
compiles about 5 and 15 min, the CUTLASS unit about 3 min): the three whole cells at depth
auto, gptq_marlin.cu fully compiled for sm_90 to measure what stopping at the front end
saves, and a CUTLASS unit compiled with PyPI's CUTLASS.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import StageResult
from vllm_matrix.knowledge import probe_units, toolchains
from vllm_matrix.sources import externals
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import env, facts, patches, probe, toolkit
from vllm_matrix.stages.env import fixups
from vllm_matrix.stages.preflight import apiscan

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]

GPTQ_MARLIN = "csrc/quantization/gptq_marlin/gptq_marlin.cu"
FLOAT8_LINE = 'gptq_marlin.cu(911): error: namespace "at" has no member "Float8_e8m0fnu"'


def inputs(vllm: str, torch: str) -> dict[str, Any]:
    tree = source.get_tree(vllm)
    tk = toolkit.provide("debian", "12.4")
    tv = env.provide("3.12", torch, "headers")
    cell = Cell(vllm, torch, "12.4", "debian", "3.12", ("9.0",))
    return {
        "cell": cell,
        "tree": tree.root,
        "facts": facts.read_facts(tree.root, vllm),
        "tk": tk,
        "tv": tv,
        "fx": fixups.compute(tk, tv, cell.arch),
    }


def probe_cell(c: dict[str, Any], work: Path, **kw: Any) -> StageResult:
    return probe.run_probe(c["cell"], c["tree"], c["facts"], c["tk"], c["tv"], c["fx"], work, **kw)


# ---------------------------------------------------------------- no compiler


def test_probe_reads_the_patched_tree_as_cmake_does(tmp_path: Path) -> None:
    """The c2x patch (patches/series.toml), seen through the probe's CMake model: a 9.0a
    list selects no scaled_mm_c2x unit on the patched tree, as real cmake says
    (test_patches_releases); 9.0a;12.0a still does, and the unpatched tree does for 9.0a."""
    t = source.get_tree("0.20.0")
    f = facts.read_facts(t.root, "0.20.0")
    chosen = patches.select(patches.load_series(), "0.20.0")
    work = patches.copy_tree(t.root, tmp_path / "w", private=patches.touched(chosen))
    patches.apply_all(work, chosen, version="0.20.0")

    def c2x(root: Path, archs: tuple[str, ...]) -> list[tuple[str, ...]]:
        units = probe.select_units(root, f, archs, "13.0.88", [])
        return [u.archs for u in units if u.path.endswith("/scaled_mm_c2x.cu")]

    assert c2x(t.root, ("9.0a",)) == [("sm_89", "compute_89")]
    assert c2x(work, ("9.0a",)) == []
    assert c2x(work, ("9.0a", "12.0a")) == [("sm_89", "compute_89")]


def test_unit_choice_on_real_trees() -> None:
    api = toolchains.load().api
    t = source.get_tree("0.10.1")
    f = facts.read_facts(t.root, "0.10.1")
    units = probe.select_units(t.root, f, ("9.0",), "12.4.131", apiscan.scan(t.root, api))
    by = {u.path: u for u in units}
    assert units[0].path == "csrc/torch_bindings.cpp"
    assert "API scan: Float8_e8m0fnu" in by[GPTQ_MARLIN].why
    assert "API scan: Float8_e8m0fnu" in by["csrc/moe/marlin_moe_wna16/ops.cu"].why
    # read from CMakeLists.txt: MARLIN_ARCHS "8.0;8.7;9.0+PTX" against sm_90
    assert by[GPTQ_MARLIN].family == "MARLIN_ARCHS/MARLIN_SRCS"
    assert by[GPTQ_MARLIN].archs == ("sm_90", "compute_90")
    cutlass = {u.path: u for u in units if u.needs == ("cutlass",)}
    # scaled_mm_c2x: "7.5;8.0;8.7;8.9+PTX" against 9.0 gives 8.9+PTX (PTX crosses majors);
    # machete_pytorch.cu is appended to _C after its family's gencode call: nvcc's default
    assert {u.archs for u in cutlass.values()} == {("sm_90a",), ("sm_89", "compute_89"), ()}
    assert cutlass["csrc/quantization/machete/machete_pytorch.cu"].family == "target _C"
    fams = {u.family for u in units}
    assert {"CUDA_ARCHS/VLLM_EXT_SRC", "CUDA_ARCHS/VLLM_MOE_EXT_SRC", "SCALED_MM_ARCHS"} <= fams

    t = source.get_tree("0.8.5")
    f = facts.read_facts(t.root, "0.8.5")
    assert apiscan.scan(t.root, api) == []
    units = probe.select_units(t.root, f, ("9.0",), "12.4.131", [])
    by = {u.path: u for u in units}
    marlin = [u for u in units if u.family == "MARLIN_ARCHS/MARLIN_SRCS"]
    assert marlin and marlin[0].archs == ("sm_90",)  # 0.8.5: "8.0;8.6;8.7;8.9;9.0;..."
    # scaled_mm_c3x_sm90.cu only declares the CUTLASS kernels: probed without CUTLASS
    assert by["csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm90.cu"].needs == ()


def test_real_flags_follow_torch() -> None:
    for torch, abi in (("2.6.0", "0"), ("2.7.1", "1")):
        c = inputs("0.10.1", torch)
        unit = probe.Unit(GPTQ_MARLIN, "test", "cuda")
        fl = probe.flags(unit, c["tree"], c["tk"], c["tv"], ("9.0",), c["facts"])
        assert f"-D_GLIBCXX_USE_CXX11_ABI={abi}" in fl
        for want in (
            "-DENABLE_SCALED_MM_SM90=1",
            "-DENABLE_FP8",
            "-DTORCH_EXTENSION_NAME=_C",
            "--expt-extended-lambda",
            "-DUSE_C10D_NCCL",
        ):
            assert want in fl, want
        i = fl.index("-gencode")
        assert fl[i : i + 4] == [
            "-gencode",
            "arch=compute_90,code=sm_90",
            "-gencode",
            "arch=compute_90,code=compute_90",
        ]


# ---------------------------------------------------------------- front end, one unit


def test_float8_unit_fails_against_torch_2_6(tmp_path: Path) -> None:
    r = probe_cell(inputs("0.10.1", "2.6.0"), tmp_path, depth="front-end", only=[GPTQ_MARLIN])
    assert r.status == "fail"
    assert "gptq_marlin.cu (Float8_e8m0fnu)" in r.summary
    (u,) = r.details["units"]
    assert u["depth"] == "front-end" and u["first_error"].endswith(FLOAT8_LINE)
    assert [s["phase"] for s in u["steps"]] == ["host-preprocess", "front-end"]
    (f,) = [f for f in r.findings if f.level == "fail"]
    assert f.rule == "signature:torch_lacks_float8_e8m0fnu" and FLOAT8_LINE in f.message


def test_float8_unit_passes_against_torch_2_7_1(tmp_path: Path) -> None:
    r = probe_cell(inputs("0.10.1", "2.7.1"), tmp_path, depth="front-end", only=[GPTQ_MARLIN])
    assert r.status == "pass", r.summary
    (u,) = r.details["units"]
    assert u["status"] == "pass" and u["depth"] == "front-end"
    # every step that ran records its compiler's CPU (wait4); a cached one ran nothing
    assert all(s["cpu_seconds"] > 0 or s.get("cached") for s in u["steps"]), u["steps"]


# ---------------------------------------------------------------- front ends in one TU

ACTIVATION = "csrc/quantization/activation_kernels.cu"
MOE_ALIGN = "csrc/moe/moe_align_sum_kernels.cu"


def test_units_share_one_front_end_against_torch_2_7_1(tmp_path: Path) -> None:
    # two targets (_C, _moe_C: TORCH_EXTENSION_NAME differs, #defined per unit) and two
    # families, one cudafe++ run; its pass is each unit's
    only = [GPTQ_MARLIN, ACTIVATION, MOE_ALIGN]
    c = inputs("0.10.1", "2.7.1")
    r = probe_cell(c, tmp_path, depth="front-end", only=only, front_end_cache=False)
    assert r.status == "pass", r.summary
    assert r.summary.endswith("front ends of 3 units checked in 1 shared translation unit")
    units = r.details["units"]
    assert sorted(u["path"] for u in units) == sorted(only)
    for u in units:
        assert u["status"] == "pass" and u["depth"] == "front-end"
        assert u["front_end_group"]["units"] == 3, u
        # the shared run's own CPU (wait4 of gcc -E and cudafe++, one core each): at most its
        # wall, whatever else runs; each unit holds all of it (as front_end_s) and a third
        # of it in cpu_s, which add up to the probe's units_cpu_seconds
        assert 5.0 < u["front_end_cpu_s"] <= u["front_end_s"] + 1.0, u
    assert r.details["units_cpu_seconds"] == pytest.approx(sum(u["cpu_s"] for u in units), abs=0.2)
    assert r.details["units_cpu_seconds"] == pytest.approx(units[0]["front_end_cpu_s"], abs=0.2)
    lines = Path(units[0]["front_end_group"]["log"]).read_text().splitlines()
    (i,) = [i for i, ln in enumerate(lines) if ln.startswith("$ cudafe++")]  # one run
    assert lines[-1].startswith("# exit 0") and not [ln for ln in lines[i + 1 :] if "error" in ln]


def test_a_failing_shared_front_end_falls_back_to_each_unit(tmp_path: Path) -> None:
    # no API hits, so nothing predicts the failure: the shared file fails on
    # Float8_e8m0fnu, then each unit runs alone and gets its own verdict and first error
    c = inputs("0.10.1", "2.6.0")
    r = probe_cell(
        c,
        tmp_path,
        depth="front-end",
        only=[GPTQ_MARLIN, ACTIVATION],
        api_hits=[],
        front_end_cache=False,
    )
    assert r.status == "fail"
    assert r.summary == "2 units, front-end, 1 failed: gptq_marlin.cu (Float8_e8m0fnu)"
    units = {u["path"]: u for u in r.details["units"]}
    gm, act = units[GPTQ_MARLIN], units[ACTIVATION]
    assert gm["first_error"].endswith(FLOAT8_LINE) and gm["front_end_group"] is None
    assert [s["phase"] for s in gm["steps"]] == ["host-preprocess", "front-end"]
    assert act["status"] == "pass" and act["front_end_group"] is None
    assert all("one translation unit with 2 units failed" in u["note"] for u in units.values())
    # the failed shared attempt's CPU is shared out: more than each unit's own front end
    assert all(u["cpu_s"] > u["front_end_cpu_s"] + 1.0 > 1.0 for u in units.values()), units
    (f,) = [f for f in r.findings if f.level == "fail"]
    assert f.rule == "signature:torch_lacks_float8_e8m0fnu" and FLOAT8_LINE in f.message


# ---------------------------------------------------------------- whole cells (heavy)


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("vllm", "torch", "status"),
    [("0.10.1", "2.6.0", "fail"), ("0.8.5", "2.6.0", "pass"), ("0.10.1", "2.7.1", "pass")],
)
def test_whole_cell(tmp_path: Path, vllm: str, torch: str, status: str) -> None:
    t0 = time.monotonic()
    r = probe_cell(inputs(vllm, torch), tmp_path, depth="auto")
    wall = time.monotonic() - t0
    print(
        json.dumps(
            {
                "cell": f"{vllm}/{torch}",
                "wall_s": round(wall, 1),
                "summary": r.summary,
                "cpu_s": r.details["cpu_seconds"],
                "load": r.details["loadavg_at_start"],
                "units": [
                    (u["path"], u["status"], u["depth"], u["seconds"]) for u in r.details["units"]
                ],
            }
        )
    )
    assert r.status == status, r.summary
    if status == "fail":
        assert any(FLOAT8_LINE in f.message for f in r.findings)
    probed = [u for u in r.details["units"] if u["status"] in ("pass", "fail")]
    assert probed and all(u["log"] for u in probed)
    assert all(
        u["status"] == "not-probed" and "cutlass" in u["needs"]
        for u in r.details["units"]
        if u not in probed
    )


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("vllm", "torch", "at_least"),
    # measured: 0.10.1 (kernels moved to generated files) 3.2x; 0.8.5 (all Marlin
    # instantiations in this unit) >= 11.7x, cicc still running when stopped at 15 min
    [("0.10.1", "2.7.1", 2.0), ("0.8.5", "2.6.0", 8.0)],
)
def test_full_compile_costs_what_the_front_end_saves(
    tmp_path: Path, vllm: str, torch: str, at_least: float
) -> None:
    """gptq_marlin.cu fully compiled for sm_90 where it compiles, stopped at 15 min: the
    whole unit against its front end."""
    c = inputs(vllm, torch)
    r = probe_cell(c, tmp_path, depth="codegen", only=[GPTQ_MARLIN], timeout_s=15 * 60)
    (u,) = r.details["units"]
    print(json.dumps({k: u[k] for k in ("status", "seconds", "front_end_s", "codegen_s", "steps")}))
    assert u["status"] in ("pass", "timeout")
    assert u["front_end_s"] > 0 and u["seconds"] > at_least * u["front_end_s"]


# ---------------------------------------------------------------- CUTLASS from PyPI


def test_pypi_cutlass_matches_only_its_own_pin() -> None:
    know = probe_units.load_knowledge()
    t = source.get_tree("0.8.4")  # CUTLASS v3.8.0: PyPI has nvidia-cutlass 3.8.0.0
    f = facts.read_facts(t.root, "0.8.4")
    d = externals.external_dir(f, "cutlass", know, fetch=True)
    assert d.path is not None and (d.path / "include" / "cutlass" / "cutlass.h").is_file()
    assert "sha256:" in d.origin and "version.h: 3.8.0" in d.origin
    unit = probe.Unit("csrc/quantization/cutlass_w8a8/scaled_mm_c2x.cu", "test", "cuda")
    c = inputs("0.8.4", "2.6.0")
    fl = probe.flags(unit, c["tree"], c["tk"], c["tv"], ("9.0",), c["facts"])
    assert f"-I{d.path / 'include'}" in fl and f"-I{d.path / 'tools' / 'util' / 'include'}" in fl
    for vllm in ("0.8.5", "0.10.1"):  # v3.9.0, v4.0.0: not on PyPI
        t = source.get_tree(vllm)
        miss = externals.external_dir(facts.read_facts(t.root, vllm), "cutlass", know, fetch=True)
        # never from PyPI; a tree `inv prefetch` put in the sources cache may supply it
        if miss.path is None:
            assert "VLLM_CUTLASS_SRC_DIR" in miss.origin
        else:
            assert miss.origin.startswith("prefetched:")


@pytest.mark.heavy
def test_a_cutlass_unit_compiles_with_pypi_cutlass(tmp_path: Path) -> None:
    c = inputs("0.8.4", "2.6.0")
    r = probe_cell(
        c, tmp_path, depth="front-end", only=["csrc/quantization/cutlass_w8a8/scaled_mm_c2x.cu"]
    )
    (u,) = r.details["units"]
    assert r.status == "pass" and u["status"] == "pass" and u["needs"] == ["cutlass"]
