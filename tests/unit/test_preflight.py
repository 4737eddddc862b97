from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vllm_matrix.infra.config import Cell
from vllm_matrix.knowledge import toolchains
from vllm_matrix.stages import preflight
from vllm_matrix.stages.facts import ArchRule, Gap, ModelOptFacts, SourceFacts

K = toolchains.load()
HOST = preflight.Host(gcc_major=12, system_cuda={}, conda_prefix=None)


def facts(
    torch: str = "2.6.0",
    python: tuple[str, ...] = ("3.9", "3.10", "3.11", "3.12"),
    archs: tuple[ArchRule, ...] | None = None,
    modelopt: int | None = 89,
) -> SourceFacts:
    return SourceFacts(
        vllm="0.8.5",
        torch=torch,
        torch_evidence="CMakeLists.txt:49",
        cutlass="v3.9.0",
        external=(),
        cuda_archs=archs
        or (ArchRule(None, ("7.0", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0"), 34),),
        python=python,
        requires_python=">=3.9",
        cmake="3.26",
        modelopt=ModelOptFacts(
            modelopt is not None,
            modelopt,
            "vllm/model_executor/layers/quantization/modelopt.py:54" if modelopt else None,
        ),
    )


def cell(
    arch: str = "9.0",
    torch: str = "2.6.0",
    cuda: str = "12.4",
    python: str = "3.12",
    provider: str = "debian",
) -> Cell:
    return Cell("0.8.5", torch, cuda, provider, python, (arch,))


def rules(found: list[preflight.Finding], level: str) -> set[str]:
    return {f.rule for f in found if f.level == level}


def tree(tmp_path: Path, code: str = "") -> Path:
    (tmp_path / "csrc").mkdir(exist_ok=True)
    (tmp_path / "csrc" / "k.cu").write_text(code)
    return tmp_path


def test_seed_target_goes(tmp_path: Path) -> None:
    found = preflight.check(cell(), facts(), K, tree(tmp_path), HOST)
    assert preflight.status_of(found) == "pass", found


def test_sm120_refused_for_both_reasons(tmp_path: Path) -> None:
    found = preflight.check(
        cell("12.0"),
        facts(),
        K,
        tree(tmp_path),
        HOST,
        {"0.9.2": "2.7.1", "0.10.2": "2.8.0", "0.11.0": "2.8.0"},
    )
    assert rules(found, "fail") == {"nvcc-arch", "torch-arch"}
    nv = next(f for f in found if f.rule == "nvcc-arch")
    assert "nvcc 12.4 cannot target sm_120" in nv.message
    # the oldest torch build with sm_120 code is a variant: 2.7.0+cu128 (documented)
    assert "CUDA ≥ 12.8" in nv.fix and "torch ≥ 2.7.0+cu128" in nv.fix
    assert "vLLM ≥ 0.9.2" in nv.fix
    # the fix names the releases that build for it with their own pin (0.10.1's recipe)
    assert "0.9.2 with torch 2.7.1+cu128 and CUDA ≥ 12.8" in nv.fix
    # vLLM 0.8.x lists 12.0 unconditionally: nvcc itself fails
    assert "lists 12.0 in CUDA_SUPPORTED_ARCHS" in nv.message and "nvcc itself fails" in nv.message
    assert "its archs end at compute_90" in nv.message
    t = next(f for f in found if f.rule == "torch-arch")
    assert "sm_90" in t.message and "no PTX" in t.message
    assert preflight.status_of(found) == "predicted-fail"


def test_api_scan_quotes_file_and_line(tmp_path: Path) -> None:
    code = "int x;\nauto p = t.data_ptr<at::Float8_e8m0fnu>();\n"
    found = preflight.check(cell(), facts(torch="2.7.1"), K, tree(tmp_path, code), HOST)
    api = next(f for f in found if f.rule == "api-Float8_e8m0fnu")
    assert api.level == "fail" and api.evidence == ("csrc/k.cu:2",)
    assert "torch 2.7.0" in api.message and "csrc/k.cu:2" in api.message
    assert "torch-pin" in rules(found, "warn")  # 2.6.0 vs pinned 2.7.1 only warns
    ok = preflight.check(cell(torch="2.7.1"), facts(torch="2.7.1"), K, tree(tmp_path, code), HOST)
    assert not rules(ok, "fail")


def test_python_outside_cmake_list(tmp_path: Path) -> None:
    found = preflight.check(cell(python="3.13"), facts(), K, tree(tmp_path), HOST)
    assert "python-cmake" in rules(found, "fail")


def test_cuda_major_mismatch_and_minor_warning(tmp_path: Path) -> None:
    found = preflight.check(cell(cuda="13.0", provider="pypi"), facts(), K, tree(tmp_path), HOST)
    assert "cuda-major" in rules(found, "fail")
    found = preflight.check(
        cell(torch="2.7.1", cuda="12.4"), facts(torch="2.7.1"), K, tree(tmp_path), HOST
    )
    assert "cuda-minor" in rules(found, "warn") and not rules(found, "fail")


def test_vllm_arch_list_depends_on_nvcc(tmp_path: Path) -> None:
    archs = (ArchRule("12.8", ("9.0", "10.0", "12.0"), 86), ArchRule(None, ("8.0", "9.0"), 88))
    found = preflight.check(
        cell("10.0", torch="2.8.0", cuda="12.4"),
        facts("2.8.0", archs=archs),
        K,
        tree(tmp_path),
        HOST,
    )
    assert "vllm-arch" in rules(found, "fail")
    va = next(f for f in found if f.rule == "vllm-arch")
    assert va.evidence == ("CMakeLists.txt:88", "CMakeLists.txt:86")
    # vLLM >= 0.9 gates the arch on the nvcc version: dropped silently, not an nvcc error
    assert "gated on nvcc ≥ 12.8" in va.message and "dropped silently" in va.message


def test_host_gcc_too_new(tmp_path: Path) -> None:
    host = preflight.Host(gcc_major=14, system_cuda={}, conda_prefix=None)
    found = preflight.check(cell(), facts(), K, tree(tmp_path), host)
    assert "host-gcc" in rules(found, "fail")


def test_unobtainable_toolkit_limits_the_depth_not_the_verdict(tmp_path: Path) -> None:
    """A toolkit this machine lacks is no verdict: every rule still answers, and the
    finding says what it means for the evidence ("not compiled here: ...")."""
    found = preflight.check(
        cell("12.0", "2.8.0", "12.8", provider="system"), facts("2.8.0"), K, tree(tmp_path), HOST
    )
    here = [f for f in found if f.rule == "toolkit-obtainable"]
    assert [f.level for f in here] == ["info"] and not rules(found, "fail")
    assert here[0].message.startswith("not compiled here: no system CUDA 12.8")
    assert preflight.status_of(found) == "pass"
    assert {"nvcc-arch", "torch-arch"} <= rules(found, "info")
    host = preflight.Host(12, {"12.8": Path("/opt/cuda-12.8")}, None)
    found = preflight.check(
        cell("12.0", "2.8.0", "12.8", provider="system"), facts("2.8.0"), K, tree(tmp_path), host
    )
    assert preflight.status_of(found) == "pass"
    found = preflight.check(cell(cuda="12.6"), facts(), K, tree(tmp_path), HOST)
    assert "provider debian cannot supply CUDA 12.6" in " ".join(f.message for f in found)


def test_modelopt_column() -> None:
    assert preflight.modelopt_column(cell(), facts()) == (
        "yes (sm89+)",
        "vllm/model_executor/layers/quantization/modelopt.py:54",
    )
    assert preflight.modelopt_column(cell("8.0"), facts())[0] == "no: sm80 < sm89"
    assert preflight.modelopt_column(cell(), facts(modelopt=None))[0] == "no (not in this vLLM)"


def test_nvcc_13_names_the_side_that_excludes_sm70(tmp_path: Path) -> None:
    found = preflight.check(
        cell("7.0", torch="2.9.0", cuda="13.0", provider="pypi"),
        facts("2.9.0"),
        K,
        tree(tmp_path),
        HOST,
    )
    nv = next(f for f in found if f.rule == "nvcc-arch" and f.level == "fail")
    assert "its archs start at compute_75" in nv.message and "end at" not in nv.message
    assert "CUDA ≤ 12.9" in nv.fix  # the newest nvcc that still targets it


def test_variant_facts_are_used_and_marked_documented(tmp_path: Path) -> None:
    pins = {"0.8.5": "2.6.0", "0.9.0": "2.7.0", "0.10.1": "2.7.1"}
    f = facts("2.7.1")
    found = preflight.check(
        cell("12.0", torch="2.7.1+cu128", cuda="12.8", provider="system"),
        f,
        K,
        tree(tmp_path),
        HOST,
        pins,
    )
    assert not rules(found, "fail"), [x for x in found if x.level == "fail"]
    tf = next(x for x in found if x.rule == "torch-facts")
    assert tf.level == "warn" and "documented, not measured here" in tf.message
    assert "2.7.1+cu128" in tf.message and "C++11 ABI" in tf.message
    # the bare version is PyPI's +cu126: no sm_120 code, and the fix names the variant path
    bare = preflight.check(
        cell("12.0", torch="2.7.1", cuda="12.8", provider="system"),
        f,
        K,
        tree(tmp_path),
        HOST,
        pins,
    )
    t = next(x for x in bare if x.rule == "torch-arch" and x.level == "fail")
    assert "2.7.1+cu126" in t.message and "torch ≥ 2.7.0+cu128" in t.fix
    assert "vLLM 0.8.5 itself builds for it with its pinned torch as 2.7.1+cu128" not in t.fix
    measured = next(x for x in bare if x.rule == "torch-facts")
    assert measured.level == "info" and "measured" in measured.message


def test_torch_2_7_with_cuda_12_9_nvtx_rule(tmp_path: Path) -> None:
    c = cell("12.0", torch="2.7.1+cu128", cuda="12.9", provider="system")
    found = preflight.check(c, facts("2.7.1"), K, tree(tmp_path), HOST)
    nvtx = next(x for x in found if x.rule == "torch-nvtx")
    assert nvtx.level == "warn" and "the nvtx fixup rescues it" in nvtx.message
    assert "https://github.com/pytorch/pytorch/issues/155196" in nvtx.evidence
    conda = Cell("0.8.5", "2.7.1+cu128", "12.9", "conda-prefix", "3.12", ("12.0",))
    found = preflight.check(conda, facts("2.7.1"), K, tree(tmp_path), HOST)
    assert "torch-nvtx" in rules(found, "fail")
    ok = preflight.check(
        cell("12.0", torch="2.8.0", cuda="12.9", provider="system"),
        facts("2.8.0"),
        K,
        tree(tmp_path),
        HOST,
    )
    assert not any(x.rule == "torch-nvtx" for x in ok)
    ok = preflight.check(
        cell("9.0", torch="2.7.1", cuda="12.8", provider="system"),
        facts("2.7.1"),
        K,
        tree(tmp_path),
        HOST,
    )
    assert not any(x.rule == "torch-nvtx" for x in ok)


def test_a_gap_is_a_warning_naming_file_line_and_what_rests_on_it(tmp_path: Path) -> None:
    where = "vllm/model_executor/layers/quantization/__init__.py:1"
    gap = Gap(where, "cannot be parsed: SyntaxError", "the ModelOpt FP8 column")
    f = replace(facts(), gaps=(gap,))
    found = preflight.check(cell(), f, K, tree(tmp_path), HOST)
    (w,) = [x for x in found if x.rule == "unreadable"]
    assert w.level == "warn" and w.evidence == (where,)
    assert f"{where}: could not read cannot be parsed" in w.message
    assert "the ModelOpt FP8 column rests on it and is not judged" in w.message
    assert preflight.status_of(found) == "warn"  # the verdict stands, with what it lacks
    assert preflight.modelopt_column(cell(), f) == (f"unknown: {where} could not be read", where)


def test_the_prediction_check_says_whether_the_probe_agrees() -> None:
    from vllm_matrix.infra.results import Finding, StageResult, Status

    rule = Finding("api-float8-e8m0", "fail", "needs torch 2.7", "use torch 2.7")
    predicted = StageResult("preflight", Status.PREDICTED_FAIL, 0.0, "1 rule", (rule,))
    agrees = preflight.prediction_check(predicted, Status.FAIL)
    assert agrees is not None and agrees.level == "info" and "agrees" in agrees.message
    assert agrees.evidence == ("api-float8-e8m0",)
    differs = preflight.prediction_check(predicted, Status.PASS)
    assert differs is not None and differs.level == "warn" and "check the rule" in differs.fix
    assert preflight.prediction_check(replace(predicted, status=Status.PASS), Status.PASS) is None
    assert preflight.prediction_check(None, Status.FAIL) is None
