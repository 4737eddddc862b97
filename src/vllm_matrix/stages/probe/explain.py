"""A unit's compile flags as the real CMake build gives them, each with where it comes from."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from vllm_matrix.cmake.model import BuildModel
from vllm_matrix.cmake.values import eval_genex, split_list
from vllm_matrix.knowledge import probe_units
from vllm_matrix.knowledge.probe_units import ProbeKnowledge
from vllm_matrix.sources.externals import external_dir
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.facts import SourceFacts
from vllm_matrix.stages.probe.configure import BUILD_TYPE, build_model
from vllm_matrix.stages.probe.torchflags import torch_flags
from vllm_matrix.stages.probe.units import Unit
from vllm_matrix.stages.toolkit import Toolkit


def explain_flags(
    unit: Unit,
    tree: Path,
    tk: Toolkit,
    tv: TorchEnv,
    archs: tuple[str, ...],
    facts: SourceFacts,
    *,
    model: BuildModel | None = None,
    fetch_dirs: dict[str, Path] | None = None,
) -> list[tuple[str, str]]:
    """(flag, where it comes from) for compiling ``unit`` as the real CMake build does.

    Order follows CMake's Ninja rule: <DEFINES> <INCLUDES> <FLAGS>, FLAGS being
    CMAKE_<LANG>_FLAGS, CMAKE_<LANG>_FLAGS_<CONFIG>, the language standard, -fPIC,
    the target's COMPILE_OPTIONS (own + from linked targets), then the source's
    COMPILE_OPTIONS and COMPILE_FLAGS.
    """
    know = probe_units.load_knowledge()
    tfl = torch_flags(tv)
    if fetch_dirs is None:
        fetch_dirs = _available_dirs(facts, know)
    model = model or build_model(tree, tk.full_version, archs, tfl, tv.python, fetch_dirs, know)
    src = unit.path
    lang = "CUDA" if unit.kind == "cuda" else "CXX"
    t = model.target_of(src)
    out: list[tuple[str, str]] = []

    def add(origin: str, *flags: str) -> None:
        out.extend((f, origin) for f in flags if f)

    tname = t.name if t else "_C"
    utils = "cmake/utils.cmake define_gpu_extension_target"
    if lang == "CUDA":
        add("CMake's nvcc rule (CMake >= 3.17)", "-forward-unknown-to-host-compiler")
    # ---- DEFINES (CMake emits them sorted)
    defs: list[tuple[str, str]] = []
    where_of = dict(t.definition_where) if t else {}
    for d in t.definitions if t else ():
        defs.append((f"-D{d}", f"target_compile_definitions ({where_of.get(d, '?')})"))
    if t and t.sabi:
        sabi = (
            t.sabi
            if "." not in t.sabi
            else "0x{:02X}{:02X}0000".format(*(int(x) for x in t.sabi.split(".")[:2]))
        )
        defs.append((f"-DPy_LIMITED_API={sabi}", f"Python_add_library USE_SABI {t.sabi}"))
    defs += [
        (f"-D{d}", "torch Caffe2Targets.cmake INTERFACE_COMPILE_DEFINITIONS (torch_cpu/torch_cuda)")
        for d in tfl.definitions
    ]
    defs.append((f"-D{tname}_EXPORTS", "CMake: <target>_EXPORTS for a MODULE library"))
    for f, o in sorted(dict(defs).items(), key=lambda kv: kv[0]):
        add(o, f)
    # ---- INCLUDES
    src_inc = model.source_props.get(src, {}).get("INCLUDE_DIRECTORIES", "")
    for i in split_list(src_inc):
        add("set_source_files_properties INCLUDE_DIRECTORIES (CMakeLists.txt)", f"-I{i}")
    for i in t.includes if t else (str(tree / "csrc"),):
        if not i.startswith("$<"):
            add(f"{utils}: target_include_directories(csrc + INCLUDE_DIRECTORIES)", f"-I{i}")
    for i in tfl.includes:
        add("torch TorchConfig.cmake TORCH_INCLUDE_DIRS (imported: -isystem)", "-isystem", i)
    if tfl.python_include:
        add(
            "FindPython (Python::SABIModule/Module via Python_add_library)",
            "-isystem",
            tfl.python_include,
        )
    if lang == "CXX":
        add(
            "CUDA::cudart INTERFACE_INCLUDE_DIRECTORIES (implicit for nvcc, explicit for g++)",
            "-isystem",
            str(tk.root / "include"),
        )
    # ---- FLAGS
    if lang == "CUDA":
        flags_text = model.cuda_flags
        add(
            "CMAKE_CUDA_FLAGS: torch Caffe2/public/cuda.cmake (ONNX_NAMESPACE, -Xcudafe "
            "--diag_suppress, --expt-*), its -gencode removed by vLLM's clear_cuda_arches",
            *shlex.split(flags_text),
        )
        add(
            f"CMAKE_CUDA_FLAGS_{BUILD_TYPE.upper()} (CMake default; vLLM setup.py build type)",
            "-O2",
            "-g",
            "-DNDEBUG",
        )
        add(
            "C++17: nvcc 11+ default dialect, stated explicitly (torch requires C++17)",
            "-std=c++17",
        )
        add("CMake POSITION_INDEPENDENT_CODE for MODULE libraries", "-Xcompiler=-fPIC")
    else:
        add("CMAKE_CXX_FLAGS (CMakeLists.txt)", *shlex.split(model.cxx_flags))
        add(f"CMAKE_CXX_FLAGS_{BUILD_TYPE.upper()} (CMake default)", "-O2", "-g", "-DNDEBUG")
        add("define_gpu_extension_target: CXX_STANDARD 17 (CMake: gnu++17)", "-std=gnu++17")
        add("CMake POSITION_INDEPENDENT_CODE for MODULE libraries", "-fPIC")
    # A property is a ;-list whose generator expressions may span items: join, evaluate, split.
    for f in split_list(eval_genex(";".join(t.options if t else ()), lang)):
        if f:
            add(
                f"{utils}: COMPILE_FLAGS ${{VLLM_GPU_FLAGS}} (get_torch_gpu_compiler_flags: "
                "torch COMMON_NVCC_FLAGS adjusted for CUDA >= 12, -DENABLE_FP8, "
                "-DENABLE_* of the enabled kernel families)",
                f,
            )
    add("torch TorchConfig.cmake TORCH_CXX_FLAGS (torch INTERFACE_COMPILE_OPTIONS)", *tfl.cxx_flags)
    opts = split_list(eval_genex(";".join(model.source_options.get(src, ())), lang))
    if lang == "CUDA" and opts:
        add(
            "set_gencode_flags_for_srcs (cuda_archs_loose_intersection of the family's "
            "arches with the cell's)",
            *_gencode_args(opts),
        )
    elif lang == "CUDA" and t and t.cuda_architectures:
        add(
            "target CUDA_ARCHITECTURES (override_gpu_arches: the cell's arches that the "
            "tree supports)",
            *t.gencode(),
        )
    src_flags = model.source_props.get(src, {}).get("COMPILE_FLAGS", "")
    add("set_source_files_properties COMPILE_FLAGS (CMakeLists.txt)", *shlex.split(src_flags))
    if lang == "CUDA":
        add("CMake's nvcc rule", "-x", "cu")
    return out


def _gencode_args(opts: Sequence[str]) -> list[str]:
    out: list[str] = []
    for o in opts:
        out += o.split() if o.startswith("-gencode ") else [o]
    # "-gencode" "arch=..,code=.." pairs, deduplicated in order
    pairs: dict[tuple[str, str], None] = {}
    rest: list[str] = []
    i = 0
    while i < len(out):
        if out[i] == "-gencode" and i + 1 < len(out):
            pairs[("-gencode", out[i + 1])] = None
            i += 2
        else:
            rest.append(out[i])
            i += 1
    return [x for p in pairs for x in p] + rest


def flags(
    unit: Unit,
    tree: Path,
    tk: Toolkit,
    tv: TorchEnv,
    archs: tuple[str, ...],
    facts: SourceFacts,
) -> list[str]:
    """The compile flags of ``unit`` in the real build (compiler, -c, source, -o excluded)."""
    return [f for f, _ in explain_flags(unit, tree, tk, tv, archs, facts)]


def _available_dirs(facts: SourceFacts, know: ProbeKnowledge) -> dict[str, Path]:
    out = {}
    for e in know.externals:
        d = external_dir(facts, e.name, know, fetch=False)
        if d.path is not None:
            out[e.name] = d.path
    return out


def lowest_gencode(unit_flags: Sequence[str]) -> list[str]:
    """The -gencode pair of the lowest arch in ``unit_flags`` (SASS for it)."""
    pairs = []
    for i, f in enumerate(unit_flags[:-1]):
        if f == "-gencode":
            m = re.match(
                r"arch=compute_(\d+)([af]?),code=(sm|compute)_(\d+)([af]?)", unit_flags[i + 1]
            )
            if m:
                pairs.append((int(m.group(1)), m.group(3) != "sm", m.group(1) + m.group(2)))
    if not pairs:
        return []
    _, _, arch = min(pairs)
    return ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
