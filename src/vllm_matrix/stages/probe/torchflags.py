"""What torch's CMake package and cpp_extension hand a CUDA extension build."""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.infra import proc
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.probe.files import read_text


@dataclass(frozen=True)
class TorchFlags:
    """What torch's CMake package and cpp_extension hand a CUDA extension build."""

    version: str  # without the local label
    common_nvcc: tuple[str, ...]  # torch.utils.cpp_extension.COMMON_NVCC_FLAGS
    cuda_flags: tuple[str, ...]  # Caffe2/public/cuda.cmake additions to CMAKE_CUDA_FLAGS
    cxx_flags: tuple[str, ...]  # TorchConfig.cmake TORCH_CXX_FLAGS (INTERFACE_COMPILE_OPTIONS)
    definitions: tuple[str, ...]  # Caffe2Targets.cmake INTERFACE_COMPILE_DEFINITIONS
    includes: tuple[str, ...]  # TorchConfig.cmake TORCH_INCLUDE_DIRS
    cmake_prefix: str
    python_include: str | None


# torch's documented defaults, used where a file cannot be read (unit tests, odd wheels).
DEFAULT_COMMON_NVCC = (
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
)


@functools.lru_cache(maxsize=16)
def torch_flags(tv: TorchEnv) -> TorchFlags:
    td = tv.torch_dir
    common: tuple[str, ...] = DEFAULT_COMMON_NVCC
    try:
        mod = ast.parse(read_text(td / "utils" / "cpp_extension.py"))
        for node in mod.body:
            if (
                isinstance(node, ast.Assign)
                and any(
                    isinstance(t, ast.Name) and t.id == "COMMON_NVCC_FLAGS" for t in node.targets
                )
                and isinstance(node.value, ast.List)
            ):
                common = tuple(
                    e.value
                    for e in node.value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    except SyntaxError:
        pass
    cuda_cmake = read_text(td / "share" / "cmake" / "Caffe2" / "public" / "cuda.cmake")
    cuda_flags: list[str] = []
    m = re.search(r'"-DONNX_NAMESPACE=(onnx_c2)"', cuda_cmake)
    if m:  # else-branch default: ONNX_NAMESPACE is not set for an extension build
        cuda_flags.append(f"-DONNX_NAMESPACE={m.group(1)}")
    m = re.search(r"foreach\(diag\s+([^)]*)\)", cuda_cmake)
    if m and "-Xcudafe" in cuda_cmake:
        diags = ",".join(f"--diag_suppress={d}" for d in m.group(1).split())
        cuda_flags += ["-Xcudafe", diags]
    for flag in ("--expt-relaxed-constexpr", "--expt-extended-lambda"):
        if re.search(r'list\(APPEND CUDA_NVCC_FLAGS "' + re.escape(flag) + '"\\)', cuda_cmake):
            cuda_flags.append(flag)
    torch_config = read_text(td / "share" / "cmake" / "Torch" / "TorchConfig.cmake")
    m = re.search(r'set\(TORCH_CXX_FLAGS "([^"]*)"\)', torch_config)
    cxx = tuple(m.group(1).split()) if m else ()
    targets = read_text(td / "share" / "cmake" / "Caffe2" / "Caffe2Targets.cmake")
    defs: list[str] = []
    for tm in re.finditer(r'INTERFACE_COMPILE_DEFINITIONS "([^"$]*)"', targets):
        defs += [d for d in tm.group(1).split(";") if d]
    return TorchFlags(
        tv.torch_version.split("+")[0],
        common,
        tuple(cuda_flags),
        cxx,
        tuple(sorted(set(defs))),
        (str(td / "include"), str(td / "include" / "torch" / "csrc" / "api" / "include")),
        str(td / "share" / "cmake"),
        _python_include(tv.python_exe),
    )


@functools.lru_cache(maxsize=16)
def _python_include(exe: Path) -> str | None:
    """The include dir CMake's FindPython reports for VLLM_PYTHON_EXECUTABLE."""
    if not exe.exists():
        return None
    try:
        out = proc.run(
            [exe, "-c", "import sysconfig;print(sysconfig.get_paths()['include'])"],
            check=False,
            timeout=60,
        )
    except MatrixError:
        return None
    lines = out.output.strip().splitlines()
    return lines[-1] if out.returncode == 0 and lines else None
