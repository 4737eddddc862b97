"""The audit's SASS census with a real cuobjdump (Debian's CUDA 12.4): a cubin without a
kernel is "no MMA", a cuobjdump without nvdisasm beside it is the tool's error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import skip_or_fail

from vllm_matrix.infra import proc
from vllm_matrix.infra.errors import NotAvailable, ToolError
from vllm_matrix.stages import audit, toolkit

pytestmark = pytest.mark.integration

SOURCES = {
    "host_only.cu": "void host_only(int *x) { if (x) *x = 1; }\n",
    "kernel.cu": "__global__ void twice(float *x) { x[threadIdx.x] *= 2.f; }\n",
}


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    try:
        tk = toolkit.provide("debian", "12.4")
    except NotAvailable as exc:
        skip_or_fail(f"debian 12.4 not available here: {exc}")
    work = tmp_path_factory.mktemp("audit")
    out = {}
    for name, text in SOURCES.items():
        (work / name).write_text(text)
        out[name] = work / f"{name}.o"
        gencode = ["-gencode", "arch=compute_90a,code=sm_90a"]
        proc.run([tk.nvcc, "-c", *gencode, work / name, "-o", out[name]], cwd=work)
    return tk.root / "bin" / "cuobjdump", out


def test_a_cubin_without_kernels_is_no_mma(objects: tuple[Path, dict[str, Path]]) -> None:
    cuobjdump, obj = objects
    assert audit.text_section_arches(obj["host_only.cu"], str(cuobjdump)) == set()
    assert audit.sass_census(obj["host_only.cu"], str(cuobjdump)) == {"9.0a": {}}
    assert audit.text_section_arches(obj["kernel.cu"], str(cuobjdump)) == {"9.0a"}
    assert audit.sass_census(obj["kernel.cu"], str(cuobjdump)) == {"9.0a": {}}  # no MMA in it


def test_without_nvdisasm_a_kernel_is_an_error(
    objects: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    cuobjdump, obj = objects
    alone = tmp_path / "cuobjdump"  # cuobjdump looks for nvdisasm beside itself, then PATH
    shutil.copy(cuobjdump, alone)
    if shutil.which("nvdisasm"):
        skip_or_fail("an nvdisasm on PATH would be found", machine=True)
    with pytest.raises(ToolError, match=r"no instructions for 9\.0a in kernel\.cu\.o"):
        audit.sass_census(obj["kernel.cu"], str(alone))
    assert audit.sass_census(obj["host_only.cu"], str(alone)) == {"9.0a": {}}
