"""Torch pins neutralised on fixture trees (vLLM 0.4 requirement files, requirements/,
pyproject.toml)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from vllm_matrix.stages.compile import pins
from vllm_matrix.stages.compile.pins import PinChange, neutralise_pins

# ------------------------------------------------------------------ pins

REQ_CUDA_042 = """\
# Common dependencies
-r requirements-common.txt

# Dependencies for NVIDIA GPUs
ray >= 2.9
nvidia-ml-py # for pynvml package
vllm-nccl-cu12>=2.18,<2.19  # for downloading nccl library
torch == 2.3.0
xformers == 0.0.26.post1  # Requires PyTorch 2.3.0
"""
REQ_COMMON = """\
cmake >= 3.21
outlines == 0.0.34 # Requires torch >= 2.1.0
uvicorn[standard]
torch-memory-saver
"""
REQ_CUDA_085 = """\
-r common.txt
numba == 0.61.2; python_version > '3.9'
ray[cgraph]>=2.43.0, !=2.44.* # Ray Compiled Graph
torch==2.6.0
torchaudio==2.6.0
# These must be updated alongside torch
torchvision==0.21.0 # Required for phi3v processor.
xformers==0.0.29.post2; platform_system == 'Linux' and platform_machine == 'x86_64'
"""
PYPROJECT_MULTI = """\
[build-system]
# Should be mirrored in requirements-build.txt
requires = [
    "cmake>=3.26",
    "ninja",
    "packaging",
    "setuptools>=61",
    "setuptools-scm>=8.0",
    "torch == 2.6.0",  # the pin
    "wheel",
    "jinja2",
]
build-backend = "setuptools.build_meta"

[project]
name = "vllm"
dynamic = ["version", "dependencies"]

[tool.ruff]
line-length = 80
"""
PYPROJECT_INLINE = """\
[build-system]
requires = ["cmake>=3.21", "Torch==2.3.0", 'uvicorn[standard]', "wheel"]

[project]
name = "x"
dependencies = ["torchvision>=0.18", "numpy"]
"""


def tree_of(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_pins_removed_from_0_4_style_requirement_files(tmp_path: Path) -> None:
    t = tree_of(
        tmp_path,
        {
            "requirements-cuda.txt": REQ_CUDA_042,
            "requirements-common.txt": REQ_COMMON,
            "pyproject.toml": PYPROJECT_INLINE,
        },
    )
    changes = neutralise_pins(t)
    assert PinChange("requirements-cuda.txt", 8, "torch == 2.3.0") in changes
    assert {c.removed for c in changes} == {
        "torch == 2.3.0",
        "xformers == 0.0.26.post1  # Requires PyTorch 2.3.0",
        "Torch==2.3.0",
        "torchvision>=0.18",
    }
    cuda = (t / "requirements-cuda.txt").read_text()
    assert "torch" not in cuda and "xformers" not in cuda and "vllm-nccl-cu12" in cuda
    # only the named projects go (use_existing_torch.py would also drop outlines)
    assert (t / "requirements-common.txt").read_text() == REQ_COMMON
    data = tomllib.loads((t / "pyproject.toml").read_text())
    assert data["build-system"]["requires"] == ["cmake>=3.21", "uvicorn[standard]", "wheel"]
    assert data["project"]["dependencies"] == ["numpy"]


def test_pins_removed_from_requirements_dir_and_multiline_pyproject(tmp_path: Path) -> None:
    t = tree_of(
        tmp_path,
        {"requirements/cuda.txt": REQ_CUDA_085, "pyproject.toml": PYPROJECT_MULTI},
    )
    changes = neutralise_pins(t)
    assert [(c.file, c.line) for c in changes] == [
        ("requirements/cuda.txt", 4),
        ("requirements/cuda.txt", 5),
        ("requirements/cuda.txt", 7),
        ("requirements/cuda.txt", 8),
        ("pyproject.toml", 9),
    ]
    text = (t / "pyproject.toml").read_text()
    # the whole line (with its comment) went, every other byte stayed
    assert text == PYPROJECT_MULTI.replace('    "torch == 2.6.0",  # the pin\n', "")
    cuda = (t / "requirements/cuda.txt").read_text()
    assert cuda.splitlines() == [
        "-r common.txt",
        "numba == 0.61.2; python_version > '3.9'",
        "ray[cgraph]>=2.43.0, !=2.44.* # Ray Compiled Graph",
        "# These must be updated alongside torch",
    ]


def test_pin_neutralising_is_idempotent(tmp_path: Path) -> None:
    t = tree_of(tmp_path, {"requirements-cuda.txt": REQ_CUDA_042})
    assert neutralise_pins(t)
    before = (t / "requirements-cuda.txt").stat().st_mtime_ns
    assert neutralise_pins(t) == ()
    assert (t / "requirements-cuda.txt").stat().st_mtime_ns == before


def test_requirement_name() -> None:
    assert pins.requirement_name("Torch_Audio >= 2") == "torch-audio"
    assert pins.requirement_name("# torch") is None
    assert pins.requirement_name("-r requirements-common.txt") is None
    assert pins.requirement_name("xformers; platform_system == 'Linux'") == "xformers"
