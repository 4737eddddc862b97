"""The tree's CMake, evaluated for one (nvcc, arches, torch) configuration: its BuildModel."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

from vllm_matrix.cmake.evaluate import CMake
from vllm_matrix.cmake.model import CUDA_SUFFIXES, BuildModel, Family, Target
from vllm_matrix.cmake.values import split_list
from vllm_matrix.knowledge import probe_units
from vllm_matrix.knowledge.probe_units import ProbeKnowledge
from vllm_matrix.stages.env.fixups import torch_arch_list
from vllm_matrix.stages.probe.torchflags import DEFAULT_COMMON_NVCC, TorchFlags

BUILD_TYPE = "RelWithDebInfo"  # vLLM setup.py: "Debug" if --debug else "RelWithDebInfo"


def _torch_gencode(archs: Sequence[str]) -> list[str]:
    """torch's cuda.cmake (torch_cuda_get_nvcc_gencode_flag) for TORCH_CUDA_ARCH_LIST."""
    out = []
    for a in torch_arch_list(tuple(archs)).split(";"):
        if not a:
            continue
        ptx = a.endswith("+PTX")
        num = a.removesuffix("+PTX").replace(".", "")
        out.append(f"-gencode arch=compute_{num},code=sm_{num}")
        if ptx:
            out.append(f"-gencode arch=compute_{num},code=compute_{num}")
    return out


def _cmake_arch(arch: str) -> str:
    """A CUDA_ARCHITECTURES entry as vLLM writes arches: "80-real" -> "8.0", "90a" -> "9.0a"."""
    num = arch.split("-", 1)[0]
    suffix = "a" if num.endswith("a") else ""
    num = num.removesuffix("a")
    return f"{num[:-1]}.{num[-1]}{suffix}" if len(num) >= 2 else num


def build_model(
    tree: Path,
    nvcc_version: str,
    archs: tuple[str, ...],
    tflags: TorchFlags | None = None,
    python: str | None = None,
    fetch_dirs: dict[str, Path] | None = None,
    know: ProbeKnowledge | None = None,
) -> BuildModel:
    """Evaluate the tree's CMakeLists.txt for CUDA with ``nvcc_version`` and ``archs``."""
    return _build_model_cached(
        tree.resolve(),
        nvcc_version,
        archs,
        tflags,
        python,
        tuple(sorted((fetch_dirs or {}).items())),
        know or probe_units.load_knowledge(),
    )


@functools.lru_cache(maxsize=32)
def _build_model_cached(
    tree: Path,
    nvcc_version: str,
    archs: tuple[str, ...],
    tflags: TorchFlags | None,
    python: str | None,
    fetch_items: tuple[tuple[str, Path], ...],
    know: ProbeKnowledge,
) -> BuildModel:
    fetch_dirs = dict(fetch_items)
    mm = ".".join(nvcc_version.split(".")[:2])
    # CMAKE_CUDA_FLAGS as torch's cuda.cmake leaves it: ONNX_NAMESPACE, the -gencode of
    # TORCH_CUDA_ARCH_LIST, -Xcudafe --diag_suppress=..., --expt-* (in that order).
    tcf = tflags.cuda_flags if tflags else ()
    onnx = [f for f in tcf if f.startswith("-DONNX")]
    torch_cuda_flags = " ".join(onnx + _torch_gencode(archs) + [f for f in tcf if f not in onnx])
    src = str(tree)
    presets = {
        "CMAKE_SOURCE_DIR": src,
        "CMAKE_CURRENT_SOURCE_DIR": src,
        "PROJECT_SOURCE_DIR": src,
        "CMAKE_CURRENT_LIST_DIR": src,
        "CMAKE_BINARY_DIR": str(tree / "build"),  # never written: nothing is generated
        "CMAKE_CURRENT_BINARY_DIR": str(tree / "build"),
        "CMAKE_BUILD_TYPE": BUILD_TYPE,
        "CMAKE_SYSTEM_NAME": "Linux",
        "CMAKE_SYSTEM_PROCESSOR": "x86_64",
        "UNIX": "1",
        "LINUX": "1",
        # find_package(Torch) -> torch's FindCUDA / enable_language(CUDA):
        "CUDA_FOUND": "TRUE",
        "CUDA_VERSION": mm,
        "CUDAToolkit_VERSION": nvcc_version,
        "CMAKE_CUDA_COMPILER_VERSION": nvcc_version,
        "CMAKE_CUDA_COMPILER_ID": "NVIDIA",
        "CMAKE_CUDA_FLAGS": torch_cuda_flags,
        "Torch_FOUND": "TRUE",
        "TORCH_FOUND": "TRUE",
        "Python_FOUND": "TRUE",
        "VLLM_PYTHON_EXECUTABLE": "python3",
        "Python_EXECUTABLE": "python3",
    }
    if tflags is not None:
        presets["Torch_VERSION"] = tflags.version
        presets["TORCH_INCLUDE_DIRS"] = ";".join(tflags.includes)
    if python:
        presets["Python_VERSION_MAJOR"], presets["Python_VERSION_MINOR"] = python.split(".")[:2]
    env = {}
    externals = {e.name: e for e in know.externals}
    for name, d in fetch_dirs.items():
        spec = externals.get(name)
        if name == "cutlass" or spec is not None:
            env[f"VLLM_{name.upper()}_SRC_DIR"] = str(d)

    def run_python(expr: str) -> str:
        if "COMMON_NVCC_FLAGS" in expr:
            return ";".join(tflags.common_nvcc if tflags else DEFAULT_COMMON_NVCC)
        if "cmake_prefix_path" in expr:
            return tflags.cmake_prefix if tflags else ""
        cm.notes.append(f"run_python not evaluated (headers-only torch env): {expr[:120]}")
        return ""

    cm = CMake(
        tree,
        presets,
        env,
        run_python,
        fetch_dirs,
        {e.name: dict(e.cmake_vars) for e in know.externals},
    )
    cm.run_file(tree / "CMakeLists.txt")
    targets = []
    for t in cm.targets.values():
        definitions = list(t.definitions)
        targets.append(
            Target(
                t.name,
                tuple(dict.fromkeys(t.sources)),
                tuple(t.options),
                tuple(definitions),
                tuple(dict.fromkeys(i for i in t.includes if i)),
                t.sabi,
                t.where,
                definition_where=tuple(t.definition_where.items()),
                cuda_architectures=tuple(t.cuda_architectures),
            )
        )
    cuda_archs = tuple(split_list(cm.get("CUDA_ARCHS") or ""))
    if cm.get("CUDA_ARCHS") is None:
        # Before 0.6.2 there is no CUDA_ARCHS: override_gpu_arches filters torch's -gencode
        # by CUDA_SUPPORTED_ARCHS into VLLM_GPU_ARCHES, which each target gets as its
        # CUDA_ARCHITECTURES ("80-real"); those are the arches the tree builds.
        cuda_archs = tuple(
            dict.fromkeys(_cmake_arch(a) for t in targets for a in t.cuda_architectures)
        )
    # Sources no set_gencode_flags_for_srcs names (every source before 0.6.2, where the
    # target's CUDA_ARCHITECTURES holds the arches; a few later ones, which then build for
    # nvcc's default arch): one family per target.
    families = list(cm.families)
    in_family = {s for f in families for s in f.sources}
    for tgt in targets:
        rest = tuple(s for s in tgt.sources if s.endswith(CUDA_SUFFIXES) and s not in in_family)
        if rest:
            archs = tuple(tgt.cuda_architectures) or tuple(
                re.findall(r"code=(?:sm|compute)_(\d+a?)", cm.get("CMAKE_CUDA_FLAGS") or "")
            )
            families.append(Family(f"target {tgt.name}", "", archs, rest, tgt.where))
    return BuildModel(
        cuda_archs=cuda_archs,
        families=tuple(families),
        targets=tuple(targets),
        source_options={k: tuple(v) for k, v in cm.src_options.items()},
        source_props=dict(cm.src_props),
        cuda_flags=cm.get("CMAKE_CUDA_FLAGS") or "",
        cxx_flags=cm.get("CMAKE_CXX_FLAGS") or "",
        fatal=tuple(dict.fromkeys(cm.fatal)),
        notes=tuple(dict.fromkeys(cm.notes)),
        empty_globs=tuple(dict.fromkeys(cm.empty_globs)),
        skipped_includes=tuple(dict.fromkeys(cm.skipped_includes)),
    )
