"""probe units: which units the probe selects, and their names."""

from __future__ import annotations

import os
from pathlib import Path

from probe_trees import (
    hits,
    make_facts,
    make_tree,
)

from vllm_matrix.stages import probe


def test_select_units(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    units = probe.select_units(tree, make_facts(), ("9.0",), "12.4.131", hits(tree))
    by = {u.path: u for u in units}
    assert units[0].path == "csrc/torch_bindings.cpp" and units[0].kind == "cxx"
    gm = by["csrc/quantization/gptq_marlin/gptq_marlin.cu"]
    assert "Float8_e8m0fnu" in gm.why and gm.gated and gm.archs == ("sm_90", "compute_90")
    # the header hit (marlin.cuh) is covered by a unit including it: gptq_marlin.cu already
    assert "csrc/quantization/gptq_marlin/gptq_marlin_repack.cu" not in by
    # the all-arch family gets a CUDA representative (the .cpp bindings do not count):
    # the one with the most in-tree headers and no external needs
    assert by["csrc/layernorm_kernels.cu"].why.startswith("representative of family CUDA_ARCHS")
    assert by["csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm90.cu"].archs == ("sm_90a",)
    assert all(u.needs == () for u in units)


def test_unit_names_are_flat() -> None:
    assert probe.Unit("csrc/a/b.cu", "", "cuda").name == "csrc__a__b.cu"
    assert os.sep not in probe.Unit("csrc/a/b.cu", "", "cuda").name
