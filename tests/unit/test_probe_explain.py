"""probe explain: a unit's compile flags and where each comes from."""

from __future__ import annotations

from pathlib import Path

from probe_trees import (
    make_facts,
    make_tree,
    toolkit,
    torch_env,
)

from vllm_matrix.stages import probe
from vllm_matrix.stages.probe import explain


def test_flags_and_their_sources(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    tv = torch_env(tmp_path / "env")
    tk = toolkit(tmp_path / "cuda")
    facts = make_facts()
    gm = probe.Unit("csrc/quantization/gptq_marlin/gptq_marlin.cu", "t", "cuda")
    fl = probe.flags(gm, tree, tk, tv, ("9.0",), facts)
    assert fl[0] == "-forward-unknown-to-host-compiler" and fl[-2:] == ["-x", "cu"]
    for want in (
        "-DTORCH_EXTENSION_NAME=_C",
        "-DPy_LIMITED_API=3",
        "-D_C_EXPORTS",
        "-DUSE_C10D_GLOO",
        "-DENABLE_FP8",
        "-DENABLE_SCALED_MM_SM90=1",
        "-D_GLIBCXX_USE_CXX11_ABI=0",
        "-DONNX_NAMESPACE=onnx_c2",
        "--expt-extended-lambda",
        f"-I{tree / 'csrc'}",
        "-Xcompiler=-fPIC",
    ):
        assert want in fl, want
    # CUDA >= 12: get_torch_gpu_compiler_flags drops torch's no-half flags
    assert "-D__CUDA_NO_HALF_OPERATORS__" not in fl
    i = fl.index("-gencode")
    assert fl[i : i + 4] == [
        "-gencode",
        "arch=compute_90,code=sm_90",
        "-gencode",
        "arch=compute_90,code=compute_90",
    ]
    cxx = probe.flags(
        probe.Unit("csrc/torch_bindings.cpp", "t", "cxx"), tree, tk, tv, ("9.0",), facts
    )
    assert "-std=gnu++17" in cxx and "-fPIC" in cxx and "-DENABLE_FP8" not in cxx
    assert "-gencode" not in cxx and str(tk.root / "include") in cxx
    explained = probe.explain_flags(gm, tree, tk, tv, ("9.0",), facts)
    assert all(origin for _, origin in explained)
    abi = next(o for f, o in explained if f == "-D_GLIBCXX_USE_CXX11_ABI=0")
    assert abi.startswith("torch TorchConfig.cmake")


def test_lowest_gencode() -> None:
    fl = [
        "-gencode",
        "arch=compute_90a,code=sm_90a",
        "-gencode",
        "arch=compute_80,code=sm_80",
        "-gencode",
        "arch=compute_80,code=compute_80",
    ]
    assert explain.lowest_gencode(fl) == ["-gencode", "arch=compute_80,code=sm_80"]
