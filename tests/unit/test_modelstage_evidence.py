"""The model stage's judging on CPU: the kernel-use evidence (ops counted, trace kernels found
in the built libraries, the CUTLASS log line) and which side a worker's failure lands on.
The evidence fixture is the FP8 runs' evidence of issue 24's H100 run (eager, compile)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import need_program

from vllm_matrix.infra.errors import CommandError
from vllm_matrix.infra.results import ERROR, FAIL
from vllm_matrix.stages.model import modelstage
from vllm_matrix.workers import model_worker

HERE = Path(__file__).parent
RUN = json.loads((HERE / "device" / "model-evidence-h100-issue24.json").read_text())
LIBS = ["/x/vllm/_C.abi3.so", "/x/vllm/_C_stable_libtorch.abi3.so"]
CUTLASS = (
    "void cutlass::device_kernel<vllm::cutlass_3x_gemm_sm90_fp8<cutlass::float_e4m3_t, "
    "cutlass::bfloat16_t, vllm::c3x::ScaledEpilogue> >(vllm::c3x::Params)"
)


def _eager() -> dict[str, Any]:
    return copy.deepcopy(RUN["eager"])


def test_the_h100_run_fails_for_want_of_a_stable_libtorch_kernel() -> None:
    """What the run judged: ops and log line there, no trace kernel found in the second
    library (the CUTLASS GEMM's name was not found in its cuobjdump list)."""
    found, said = modelstage.judge_evidence(_eager(), LIBS)
    assert [f.message for f in found] == [
        "eager: no kernel of the trace is in _C_stable_libtorch.abi3.so"
    ]
    assert found[0].level == "fail"
    assert "100 calls into the built ops" in said and "CUTLASS FP8 chosen (log)" in said
    assert "cutlass_scaled_mm 32" in said and "static_scaled_fp8_quant 32" in said


def test_complete_evidence_passes() -> None:
    doc = _eager()
    doc["evidence"]["kernels_by_library"]["_C_stable_libtorch.abi3.so"] = {CUTLASS: 32}
    found, _ = modelstage.judge_evidence(doc, LIBS)
    assert found == []


def test_compile_mode_missing_kernels_only_warn() -> None:
    """CUDA graphs replay without CPU op events (0 calls seen): compile mode's gaps warn."""
    found, said = modelstage.judge_evidence(copy.deepcopy(RUN["compile"]), LIBS)
    assert {f.level for f in found} == {"warn"} and len(found) == 2
    assert said.startswith("compile: 0 calls")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda e: e["ops_called"].pop("_C::cutlass_scaled_mm"),
            "no call into _C::cutlass_scaled_mm",
        ),
        (
            lambda e: e.__setitem__("log_lines", []),
            "did not log choosing CutlassFP8ScaledMMLinearKernel",
        ),
        (
            lambda e: e["library_ops"]["_C_stable_libtorch.abi3.so"].remove(
                "_C::cutlass_scaled_mm"
            ),
            "_C::cutlass_scaled_mm is not registered by the built libraries",
        ),
        (lambda e: e.__setitem__("error", "RuntimeError: boom"), "profiling failed"),
    ],
)
def test_each_missing_piece_of_evidence_fails(change: Any, message: str) -> None:
    doc = _eager()
    doc["evidence"]["kernels_by_library"]["_C_stable_libtorch.abi3.so"] = {CUTLASS: 32}
    change(doc["evidence"])
    found, _ = modelstage.judge_evidence(doc, LIBS)
    assert any(message in f.message and f.level == "fail" for f in found), found


def test_kernel_matched_by_qualified_identifiers() -> None:
    ids = model_worker._idents(CUTLASS)
    assert "vllm::cutlass_3x_gemm_sm90_fp8" in ids and "cutlass::device_kernel" in ids
    other = model_worker._idents("void at::native::vectorized_elementwise_kernel<4>(int)")
    assert not ids <= other


def _failure(tail: str, rc: int) -> CommandError:
    return CommandError("the worker failed", returncode=rc, tail=tail)


def test_a_missing_runtime_package_is_error_with_the_fix(tmp_path: Path) -> None:
    tail = (
        "error: cannot start the model worker: ModuleNotFoundError: No module named "
        "'pydantic'\nmissing module: pydantic\n"
    )
    res = modelstage.worker_failure(
        _failure(tail, modelstage.EXIT_NO_VLLM), 1.0, tmp_path / "m.log", "eager mode"
    )
    assert res.status == ERROR
    assert "install vLLM's runtime package 'pydantic'" in res.findings[0].fix


def test_the_tool_not_importable_there_is_error(tmp_path: Path) -> None:
    tail = (
        "/usr/bin/python3: Error while finding module specification for "
        "'vllm_matrix.stages.model.modelstage' "
        "(ModuleNotFoundError: No module named 'vllm_matrix')\n"
    )
    res = modelstage.worker_failure(_failure(tail, 1), 1.0, tmp_path / "m.log", "eager mode")
    assert res.status == ERROR and "vllm_matrix is not importable" in res.summary
    assert "PYTHONPATH" in res.findings[0].fix


def test_vllm_failing_to_serve_is_fail_with_its_first_error(tmp_path: Path) -> None:
    tail = (
        "INFO 12-07 09:46:30 [llm.py:1] loading\n"
        "ERROR 12-07 09:46:31 [core.py:2] EngineCore failed to start.\n"
        "Traceback (most recent call last):\n"
        "TypeError: Distribution.files.<locals>.make_file() takes from 1 to 3 positional "
        "arguments but 6 were given\n"
    )
    res = modelstage.worker_failure(_failure(tail, 1), 1.0, tmp_path / "m.log", "eager mode")
    assert res.status == FAIL
    assert (
        res.findings[0].message
        == "eager mode: ERROR 12-07 09:46:31 [core.py:2] EngineCore failed to start."
    )


def test_map_kernels_by_name_then_by_identifiers() -> None:
    owned = {
        # as c++filt prints them
        "_C.abi3.so": {"void vllm::rms_norm_kernel<c10::BFloat16, 8, 2>(c10::BFloat16*)"},
        "_C_stable_libtorch.abi3.so": {
            "void cutlass::device_kernel<vllm::cutlass_3x_gemm_sm90_fp8<cutlass::float_e4m3_t, "
            "cutlass::bfloat16_t, vllm::c3x::ScaledEpilogue, cute::tuple<cute::C<64l> > > >"
            "(vllm::c3x::Params)"
        },
    }
    kernels = {
        "void vllm::rms_norm_kernel<c10::BFloat16, 8, 2>(c10::BFloat16*)": 4,
        CUTLASS: 32,  # spelled differently (no cute::C<64l>): found by identifiers
        "void at::native::vectorized_elementwise_kernel<4>(int)": 8,
    }
    mapped, other, by_idents = model_worker.map_kernels(kernels, owned)
    # The identifiers come from the names as printed: "void cutlass::" stays two words.
    assert "cutlass::device_kernel" in model_worker._idents(
        next(iter(owned["_C_stable_libtorch.abi3.so"]))
    )
    assert mapped["_C.abi3.so"] == {
        "void vllm::rms_norm_kernel<c10::BFloat16, 8, 2>(c10::BFloat16*)": 4
    }
    assert mapped["_C_stable_libtorch.abi3.so"] == {CUTLASS: 32} and by_idents == [CUTLASS]
    assert other == {"void at::native::vectorized_elementwise_kernel<4>(int)": 8}


DEVICE = Path(__file__).parent / "device"


def test_long_kernel_names_come_from_the_host_symbols() -> None:
    """cuobjdump --list-text shortens a long kernel name to '_Z11long-1' (real output,
    nvcc 12.4): the shortened name is dropped, and nm's host symbol gives the whole one."""
    listed = model_worker.device_functions(
        (DEVICE / "long-kernel-name.nvcc12.4.list-text.txt").read_text()
    )
    assert listed == ["_Z12short_kernelPi"]
    hosts = model_worker.host_kernel_symbols(
        (DEVICE / "long-kernel-name.nvcc12.4.nm.txt").read_text()
    )
    long_ones = [n for n in hosts if n.startswith("_Z11long_kernel")]
    assert len(long_ones) == 1 and len(long_ones[0]) == 493
    assert "_Z12short_kernelPi" in hosts
    assert not any("__device_stub__" in n or "__wrapper__" in n for n in hosts)


def test_issue24_cutlass_gemm_found_by_its_whole_name() -> None:
    """The 32 CUTLASS GEMM launches issue 24's H100 trace could not place: with the whole
    mangled names of vLLM 0.20.0's scaled_mm_sm90_fp8 (as issue 12 compiled it, read from
    its SASS dump) demangled by c++filt, both kernels of that trace match exactly."""
    need_program("c++filt", "binutils")
    sass = (DEVICE / "scaled_mm_sm90_fp8.sm90a.sass-mma.txt").read_text()
    mangled = sorted(set(re.findall(r"Function : (\S+)", sass)))
    nm_text = "\n".join(f"{i:016x} W {name}" for i, name in enumerate(mangled))
    owned = {
        "_C_stable_libtorch.abi3.so": model_worker._demangle(
            model_worker.host_kernel_symbols(nm_text)
        )
    }
    evidence = json.loads((DEVICE / "model-evidence-h100-issue24.json").read_text())
    trace = {
        k: v
        for k, v in evidence["eager"]["evidence"]["kernels_elsewhere"].items()
        if "cutlass_3x_gemm_sm90_fp8" in k
    }
    assert sum(trace.values()) == 32
    mapped, other, by_idents = model_worker.map_kernels(trace, owned)
    assert mapped["_C_stable_libtorch.abi3.so"] == trace
    assert other == {} and by_idents == []
