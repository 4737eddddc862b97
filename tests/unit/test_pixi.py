from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from vllm_matrix.commands import pixi
from vllm_matrix.infra import datafiles
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
SCHEMA = json.loads(datafiles.data_path("pixi_manifest.schema.json").read_text())


def _doc(text: str) -> dict[str, object]:
    """The snippet parsed as TOML and held to the schema of Pixi's documented keys."""
    doc = pixi.parse(text)
    jsonschema.validate(doc, SCHEMA)
    return doc


def test_the_schema_refuses_keys_pixi_does_not_document() -> None:
    with pytest.raises(jsonschema.ValidationError):
        # the old spelling (pip's flag), not Pixi's key
        jsonschema.validate(
            {
                "workspace": {"channels": ["c"], "platforms": ["linux-64"]},
                "dependencies": {},
                "tasks": {"t": "x"},
                "pypi-options": {"extra-index-url": ["u"]},
            },
            SCHEMA,
        )


def test_snippet_parses_and_mirrors_the_fixups_used() -> None:
    text = pixi.snippet(CELL, USED, max_jobs=2, cmake_min="3.26", max_gcc=13)
    doc = _doc(text)
    act = doc["activation"]["env"]  # type: ignore[index]
    expected = {f["name"] for f in USED if not f["name"].startswith("link:")} - {"PATH"}
    assert set(act) - {"MAX_JOBS"} == expected
    assert act["CUDA_HOME"] == "$CONDA_PREFIX" and act["CUDACXX"] == "$CONDA_PREFIX/bin/nvcc"
    assert act["NVTOOLSEXT_PATH"] == "$CONDA_PREFIX/targets/x86_64-linux"
    assert act["TORCH_CUDA_ARCH_LIST"] == "9.0" and act["MAX_JOBS"] == "2"
    deps = doc["dependencies"]
    assert deps["cuda-version"] == "12.4.*" and deps["python"] == "3.12.*"  # type: ignore[index]
    assert deps["cuda-nvtx-dev"] == "*"  # type: ignore[index]
    assert deps["gxx"] == "<14" and deps["cmake"] == ">=3.26"  # type: ignore[index]
    assert doc["pypi-dependencies"]["torch"] == "==2.6.0"  # type: ignore[index]
    assert doc["pypi-options"]["no-build-isolation"] is True  # type: ignore[index]
    assert "fixups recorded by a run of the cell" in text


def test_from_facts_alone_no_run_needed(tmp_path: Path) -> None:
    assert pixi.used_fixups(tmp_path, CELL) is None  # no results: no error, no loop
    cell = Cell("0.8.5", "2.7.0+cu128", "12.8", "conda-prefix", "3.12", ("12.0",))
    reqs = [
        pixi.BuildReq("cmake", ">=3.26", "requirements/build.txt:2"),
        pixi.BuildReq("setuptools-scm", ">=8", "requirements/build.txt:6"),
        pixi.BuildReq("torch", "==2.6.0", "requirements/build.txt:7"),
    ]
    text = pixi.snippet(
        cell,
        None,
        max_jobs=None,
        cmake_min="3.26",
        max_gcc=14,
        build_reqs=reqs,
        patches=["cmake-python-executable-env-fallback"],
    )
    doc = _doc(text)
    act = doc["activation"]["env"]  # type: ignore[index]
    assert act["TORCH_CUDA_ARCH_LIST"] == "12.0" and act["CUDA_HOME"] == "$CONDA_PREFIX"
    assert act["NVTOOLSEXT_PATH"] == "$CONDA_PREFIX/targets/x86_64-linux"  # torch 2.7 < 2.8
    pypi = doc["pypi-dependencies"]
    # the release's build requirements: setuptools-scm yes; its torch pin and cmake no
    assert pypi["setuptools-scm"] == ">=8" and "cmake" not in pypi  # type: ignore[operator,index]
    assert pypi["torch"] == "==2.7.0+cu128"  # type: ignore[index]
    assert doc["workspace"]["platforms"] == [  # type: ignore[index]
        {"platform": "linux-64", "cuda": "12.8"}
    ]
    build = doc["tasks"]["build-vllm"]  # type: ignore[index]
    assert "run --env current --vllm 0.8.5 --arch 12.0 --depth build" in build["cmd"]
    for step in ("cmake-python-executable-env-fallback", "use_existing_torch", "MAX_JOBS"):
        assert step in build["description"]
    assert "fixups from facts alone" in text


def test_an_unset_torch_index_is_a_placeholder_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cell = Cell("0.10.1", "2.7.1+cu128", "12.8", "conda-prefix", "3.12", ("12.0",))
    monkeypatch.delenv("VLLM_MATRIX_TORCH_INDEX_CU128", raising=False)
    doc = _doc(pixi.snippet(cell, USED, max_jobs=None, cmake_min=None, max_gcc=None))
    assert doc["pypi-options"]["extra-index-urls"] == [  # type: ignore[index]
        "<VLLM_MATRIX_TORCH_INDEX_CU128>"
    ]
    monkeypatch.setenv("VLLM_MATRIX_TORCH_INDEX_CU128", "http://127.0.0.1:9/whl/cu128")
    doc = _doc(pixi.snippet(cell, USED, max_jobs=None, cmake_min=None, max_gcc=None))
    opts = doc["pypi-options"]
    assert opts["extra-index-urls"] == ["http://127.0.0.1:9/whl/cu128/"]  # type: ignore[index]
    assert doc["pypi-dependencies"]["torch"] == "==2.7.1+cu128"  # type: ignore[index]


def test_conda_forge_torch_is_pinned_only_to_builds_that_exist() -> None:
    chan = ("conda-forge", "--torch-channel")
    # the user's cell: torch 2.6.0 with CUDA 12.4; conda-forge built 2.6.0 for CUDA 12.6 only
    with pytest.raises(MatrixError, match=r"has CUDA builds cuda126 only") as e:
        pixi.snippet(CELL, USED, max_jobs=None, cmake_min=None, max_gcc=None, channel=chan)
    assert "pytorch-cpu-feedstock" in e.value.message and "torch 2.6.0+cu126" in (e.value.fix or "")
    cell = Cell("0.8.5", "2.6.0", "12.6", "conda-prefix", "3.12", ("9.0",))
    doc = _doc(pixi.snippet(cell, USED, max_jobs=None, cmake_min=None, max_gcc=None, channel=chan))
    deps = doc["dependencies"]
    assert deps["pytorch"] == {"version": "==2.6.0", "build": "cuda126*"}  # type: ignore[index]
    assert deps["cuda-version"] == "12.6.*"  # type: ignore[index]
    assert "torch" not in doc["pypi-dependencies"]  # type: ignore[operator]
    assert "index-url" not in doc["pypi-options"]  # type: ignore[operator]


def test_other_channels_and_unrecorded_releases_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pixi.TORCH_CHANNEL_ENV, "my-channel")
    chan = pixi.torch_channel(None)
    assert chan == ("my-channel", pixi.TORCH_CHANNEL_ENV)
    assert pixi.torch_channel("other") == ("other", "--torch-channel")
    with pytest.raises(MatrixError, match="no knowledge of the pytorch builds of channel"):
        pixi.snippet(CELL, USED, max_jobs=None, cmake_min=None, max_gcc=None, channel=chan)
    old = Cell("0.4.2", "2.3.0", "12.4", "conda-prefix", "3.11", ("8.0",))
    with pytest.raises(MatrixError, match=r"no record of conda-forge's pytorch 2\.3\.0"):
        pixi.snippet(
            old, USED, max_jobs=None, cmake_min=None, max_gcc=None, channel=("conda-forge", "x")
        )


def test_every_dependency_is_a_checked_conda_forge_name() -> None:
    known = pixi.conda_packages()
    text = pixi.snippet(CELL, USED, max_jobs=None, cmake_min=None, max_gcc=None)
    deps = pixi.parse(text)["dependencies"]
    assert set(deps) - {"python"} <= set(known)
    assert all(p.source.startswith("https://github.com/conda-forge/") for p in known.values())
    builds = pixi.conda_torch_builds()
    assert builds["2.6.0"][0] == ("12.6",) and all(s for _, s in builds.values())


def test_build_requirements_follow_includes_and_markers(tmp_path: Path) -> None:
    (tmp_path / "requirements" / "build").mkdir(parents=True)
    (tmp_path / "requirements" / "common.txt").write_text("regex\n")
    (tmp_path / "requirements" / "build" / "cuda.txt").write_text(
        "# build\n-r ../common.txt\nsetuptools-scm>=8\ntorch==2.11.0\n"
        "never-here ; python_version < '3'\n"
    )
    got = pixi.build_requirements(tmp_path)
    assert [(r.name, r.spec, r.where) for r in got] == [
        ("regex", "*", "requirements/common.txt:1"),
        ("setuptools-scm", ">=8", "requirements/build/cuda.txt:3"),
        ("torch", "==2.11.0", "requirements/build/cuda.txt:4"),
    ]
    only_pyproject = tmp_path / "old"
    only_pyproject.mkdir()
    (only_pyproject / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["ninja", "setuptools >= 49.4.0", "torch == 2.3.0"]\n'
    )
    names = [r.name for r in pixi.build_requirements(only_pyproject)]
    assert names == ["ninja", "setuptools", "torch"]
