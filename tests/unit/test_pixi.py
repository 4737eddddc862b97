from __future__ import annotations

import pytest

from vllm_matrix.commands import pixi
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError

CELL = Cell("0.8.5", "2.6.0", "12.4", "conda-prefix", "3.12", ("9.0",))
USED = [
    {"name": "CUDA_HOME", "value": "/c/tk", "reason": "r"},
    {"name": "CUDA_PATH", "value": "/c/tk", "reason": "r"},
    {"name": "CUDAToolkit_ROOT", "value": "/c/tk", "reason": "r"},
    {"name": "CUDACXX", "value": "/c/tk/bin/nvcc", "reason": "r"},
    {"name": "PATH", "value": "/c/tk/bin:/c/env/bin", "reason": "r"},
    {"name": "VLLM_PYTHON_EXECUTABLE", "value": "/c/env/bin/python", "reason": "r"},
    {"name": "TORCH_CUDA_ARCH_LIST", "value": "9.0", "reason": "r"},
    {"name": "NVTOOLSEXT_PATH", "value": "/c/fixups/nvtx-home", "reason": "r"},
    {"name": "link:/c/fixups/nvtx-home/lib/libnvToolsExt.so", "value": "/x.so.1", "reason": "r"},
]


def test_snippet_parses_and_mirrors_the_fixups_used() -> None:
    text = pixi.snippet(CELL, USED, max_jobs=2, cmake_min="3.26", max_gcc=13)
    doc = pixi.parse(text)["tool"]["pixi"]
    act = doc["activation"]["env"]
    expected = {f["name"] for f in USED if not f["name"].startswith("link:")} - {"PATH"}
    assert set(act) - {"MAX_JOBS"} == expected
    assert act["CUDA_HOME"] == "$CONDA_PREFIX" and act["CUDACXX"] == "$CONDA_PREFIX/bin/nvcc"
    assert act["NVTOOLSEXT_PATH"] == "$CONDA_PREFIX/targets/x86_64-linux"
    assert act["TORCH_CUDA_ARCH_LIST"] == "9.0" and act["MAX_JOBS"] == "2"
    deps = doc["dependencies"]
    assert deps["cuda-version"] == "12.4.*" and deps["python"] == "3.12.*"
    assert deps["cuda-nvtx-dev"] == "*"  # the run needed nvToolsExt from outside the toolkit
    assert deps["gxx"] == "<14" and deps["cmake"] == ">=3.26"
    assert doc["pypi-dependencies"]["torch"] == "==2.6.0"
    assert "build-vllm" in doc["tasks"]


def test_every_dependency_is_a_checked_conda_forge_name() -> None:
    known = pixi.conda_packages()
    text = pixi.snippet(CELL, USED, max_jobs=None, cmake_min=None, max_gcc=None)
    deps = pixi.parse(text)["tool"]["pixi"]["dependencies"]
    assert set(deps) - {"python"} <= set(known)
    assert all(p.source.startswith("https://github.com/conda-forge/") for p in known.values())


def test_a_torch_variant_comes_from_its_configured_index(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = Cell("0.10.1", "2.7.1+cu128", "12.8", "conda-prefix", "3.12", ("12.0",))
    monkeypatch.delenv("VLLM_MATRIX_TORCH_INDEX_CU128", raising=False)
    with pytest.raises(MatrixError, match="none is configured") as e:
        pixi.snippet(cell, USED, max_jobs=None, cmake_min=None, max_gcc=None)
    assert "VLLM_MATRIX_TORCH_INDEX_CU128" in (e.value.fix or "")
    monkeypatch.setenv("VLLM_MATRIX_TORCH_INDEX_CU128", "http://127.0.0.1:9/whl/cu128")
    doc = pixi.parse(pixi.snippet(cell, USED, max_jobs=None, cmake_min=None, max_gcc=None))
    opts = doc["tool"]["pixi"]["pypi-options"]
    assert opts["extra-index-url"] == ["http://127.0.0.1:9/whl/cu128/"]
    assert doc["tool"]["pixi"]["pypi-dependencies"]["torch"] == "==2.7.1+cu128"


def test_torch_from_a_configured_conda_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = Cell("0.10.1", "2.7.1+cu128", "12.8", "conda-prefix", "3.12", ("12.0",))
    monkeypatch.delenv("VLLM_MATRIX_TORCH_INDEX_CU128", raising=False)  # no index needed
    monkeypatch.setenv(pixi.TORCH_CHANNEL_ENV, "my-channel")
    chan = pixi.torch_channel(None)
    assert chan == ("my-channel", pixi.TORCH_CHANNEL_ENV)
    assert pixi.torch_channel("other") == ("other", "--torch-channel")
    doc = pixi.parse(
        pixi.snippet(cell, USED, max_jobs=None, cmake_min=None, max_gcc=None, channel=chan)
    )["tool"]["pixi"]
    assert doc["workspace"]["channels"] == ["my-channel"]
    assert doc["system-requirements"]["cuda"] == "12"
    assert doc["dependencies"]["pytorch"] == {"version": "==2.7.1", "build": "cuda128*"}
    assert doc["dependencies"]["cuda-version"] == "12.8.*"
    assert "pypi-dependencies" not in doc and "pypi-options" not in doc
    # a bare version takes the cell's CUDA build
    doc = pixi.parse(
        pixi.snippet(CELL, USED, max_jobs=None, cmake_min=None, max_gcc=None, channel=chan)
    )["tool"]["pixi"]
    assert doc["dependencies"]["pytorch"]["build"] == "cuda124*"


def test_a_conda_torch_variant_must_match_the_cells_cuda() -> None:
    cell = Cell("0.10.1", "2.7.1+cu126", "12.8", "conda-prefix", "3.12", ("9.0",))
    with pytest.raises(MatrixError, match=r"CUDA 12\.6 build and the cell's toolkit is CUDA 12\.8"):
        pixi.snippet(
            cell,
            USED,
            max_jobs=None,
            cmake_min=None,
            max_gcc=None,
            channel=("c", "--torch-channel"),
        )
