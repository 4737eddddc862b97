"""probe: CMake evaluation, unit choice, flags and the per-unit pipeline, on fixture trees.

The fixture tree's cmake/utils.cmake holds vLLM 0.10.1's own functions (comments removed):
the probe must evaluate them, not re-implement them. nvcc, cudafe++, gcc and g++ are
fakes that print or fail the way the real tools do.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from vllm_matrix.infra import index
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.knowledge.toolchains import ApiSymbol
from vllm_matrix.stages import probe
from vllm_matrix.stages.apiscan import ApiHit
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.facts import External, ModelOptFacts, SourceFacts
from vllm_matrix.stages.fixups import Fixup, Fixups
from vllm_matrix.stages.toolkit import Toolkit

UTILS = """\
function (run_python OUT EXPR ERR_MSG)
  execute_process(
    COMMAND
    "${Python_EXECUTABLE}" "-c" "${EXPR}"
    OUTPUT_VARIABLE PYTHON_OUT
    RESULT_VARIABLE PYTHON_ERROR_CODE
    ERROR_VARIABLE PYTHON_STDERR
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT PYTHON_ERROR_CODE EQUAL 0)
    message(FATAL_ERROR "${ERR_MSG}: ${PYTHON_STDERR}")
  endif()
  set(${OUT} ${PYTHON_OUT} PARENT_SCOPE)
endfunction()
function (get_torch_gpu_compiler_flags OUT_GPU_FLAGS GPU_LANG)
  if (${GPU_LANG} STREQUAL "CUDA")
    run_python(GPU_FLAGS
      "from torch.utils.cpp_extension import COMMON_NVCC_FLAGS; print(';'.join(COMMON_NVCC_FLAGS))"
      "Failed to determine torch nvcc compiler flags")
    if (CUDA_VERSION VERSION_GREATER_EQUAL 11.8)
      list(APPEND GPU_FLAGS "-DENABLE_FP8")
    endif()
    if (CUDA_VERSION VERSION_GREATER_EQUAL 12.0)
      list(REMOVE_ITEM GPU_FLAGS
        "-D__CUDA_NO_HALF_OPERATORS__"
        "-D__CUDA_NO_HALF_CONVERSIONS__"
        "-D__CUDA_NO_BFLOAT16_CONVERSIONS__"
        "-D__CUDA_NO_HALF2_OPERATORS__")
    endif()
  elseif(${GPU_LANG} STREQUAL "HIP")
    run_python(GPU_FLAGS
      "import torch.utils.cpp_extension as t; print(';'.join(t.COMMON_HIP_FLAGS))"
      "Failed to determine torch nvcc compiler flags")
    list(APPEND GPU_FLAGS
      "-DUSE_ROCM"
      "-DENABLE_FP8"
      "-U__HIP_NO_HALF_CONVERSIONS__"
      "-U__HIP_NO_HALF_OPERATORS__"
      "-Werror=unused-variable"
      "-fno-gpu-rdc")
  endif()
  set(${OUT_GPU_FLAGS} ${GPU_FLAGS} PARENT_SCOPE)
endfunction()
macro(string_to_ver OUT_VER IN_STR)
  string(REGEX REPLACE "\\([0-9]+\\)\\([0-9]\\)" "\\\\1.\\\\2" ${OUT_VER} ${IN_STR})
endmacro()
macro(clear_cuda_arches CUDA_ARCH_FLAGS)
    string(REGEX MATCHALL "-gencode arch=[^ ]+" CUDA_ARCH_FLAGS
      ${CMAKE_CUDA_FLAGS})
    string(REGEX REPLACE "-gencode arch=[^ ]+ *" "" CMAKE_CUDA_FLAGS
      ${CMAKE_CUDA_FLAGS})
endmacro()
function(extract_unique_cuda_archs_ascending OUT_ARCHES CUDA_ARCH_FLAGS)
  set(_CUDA_ARCHES)
  foreach(_ARCH ${CUDA_ARCH_FLAGS})
    string(REGEX MATCH "arch=compute_\\([0-9]+a?\\)" _COMPUTE ${_ARCH})
    if (_COMPUTE)
      set(_COMPUTE ${CMAKE_MATCH_1})
    endif()
    string_to_ver(_COMPUTE_VER ${_COMPUTE})
    list(APPEND _CUDA_ARCHES ${_COMPUTE_VER})
  endforeach()
  list(REMOVE_DUPLICATES _CUDA_ARCHES)
  list(SORT _CUDA_ARCHES COMPARE NATURAL ORDER ASCENDING)
  set(${OUT_ARCHES} ${_CUDA_ARCHES} PARENT_SCOPE)
endfunction()
macro(set_gencode_flag_for_srcs)
  set(options)
  set(oneValueArgs ARCH CODE)
  set(multiValueArgs SRCS)
  cmake_parse_arguments(arg "${options}" "${oneValueArgs}"
                        "${multiValueArgs}" ${ARGN} )
  set(_FLAG -gencode arch=${arg_ARCH},code=${arg_CODE})
  set_property(
    SOURCE ${arg_SRCS}
    APPEND PROPERTY
    COMPILE_OPTIONS "$<$<COMPILE_LANGUAGE:CUDA>:${_FLAG}>"
  )
  message(DEBUG "Setting gencode flag for ${arg_SRCS}: ${_FLAG}")
endmacro(set_gencode_flag_for_srcs)
macro(set_gencode_flags_for_srcs)
  set(options)
  set(oneValueArgs BUILD_PTX_FOR_ARCH)
  set(multiValueArgs SRCS CUDA_ARCHS)
  cmake_parse_arguments(arg "${options}" "${oneValueArgs}"
                        "${multiValueArgs}" ${ARGN} )
  foreach(_ARCH ${arg_CUDA_ARCHS})
    string(FIND "${_ARCH}" "+PTX" _HAS_PTX)
    if(NOT _HAS_PTX EQUAL -1)
      string(REPLACE "+PTX" "" _BASE_ARCH "${_ARCH}")
      string(REPLACE "." "" _STRIPPED_ARCH "${_BASE_ARCH}")
      set_gencode_flag_for_srcs(
        SRCS ${arg_SRCS}
        ARCH "compute_${_STRIPPED_ARCH}"
        CODE "sm_${_STRIPPED_ARCH}")
      set_gencode_flag_for_srcs(
        SRCS ${arg_SRCS}
        ARCH "compute_${_STRIPPED_ARCH}"
        CODE "compute_${_STRIPPED_ARCH}")
    else()
      string(REPLACE "." "" _STRIPPED_ARCH "${_ARCH}")
      set_gencode_flag_for_srcs(
        SRCS ${arg_SRCS}
        ARCH "compute_${_STRIPPED_ARCH}"
        CODE "sm_${_STRIPPED_ARCH}")
    endif()
  endforeach()
  if (${arg_BUILD_PTX_FOR_ARCH})
    list(SORT arg_CUDA_ARCHS COMPARE NATURAL ORDER ASCENDING)
    list(GET arg_CUDA_ARCHS -1 _HIGHEST_ARCH)
    if (_HIGHEST_ARCH VERSION_GREATER_EQUAL ${arg_BUILD_PTX_FOR_ARCH})
      string(REPLACE "." "" _PTX_ARCH "${arg_BUILD_PTX_FOR_ARCH}")
      set_gencode_flag_for_srcs(
        SRCS ${arg_SRCS}
        ARCH "compute_${_PTX_ARCH}"
        CODE "compute_${_PTX_ARCH}")
    endif()
  endif()
endmacro()
function(cuda_archs_loose_intersection OUT_CUDA_ARCHS SRC_CUDA_ARCHS TGT_CUDA_ARCHS)
  set(_SRC_CUDA_ARCHS "${SRC_CUDA_ARCHS}")
  set(_TGT_CUDA_ARCHS ${TGT_CUDA_ARCHS})
  set(_PTX_ARCHS)
  foreach(_arch ${_SRC_CUDA_ARCHS})
    if(_arch MATCHES "\\\\+PTX$")
      string(REPLACE "+PTX" "" _base "${_arch}")
      list(APPEND _PTX_ARCHS "${_base}")
      list(REMOVE_ITEM _SRC_CUDA_ARCHS "${_arch}")
      list(APPEND _SRC_CUDA_ARCHS "${_base}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES _PTX_ARCHS)
  list(REMOVE_DUPLICATES _SRC_CUDA_ARCHS)
  set(_CUDA_ARCHS)
  foreach(_arch ${_SRC_CUDA_ARCHS})
    if(_arch MATCHES "\\\\a$")
      list(REMOVE_ITEM _SRC_CUDA_ARCHS "${_arch}")
      string(REPLACE "a" "" _base "${_arch}")
      if ("${_base}" IN_LIST TGT_CUDA_ARCHS)
        list(REMOVE_ITEM _TGT_CUDA_ARCHS "${_base}")
        list(APPEND _CUDA_ARCHS "${_arch}")
      endif()
    endif()
  endforeach()
  list(SORT _SRC_CUDA_ARCHS COMPARE NATURAL ORDER ASCENDING)
  foreach(_ARCH ${_TGT_CUDA_ARCHS})
    set(_TMP_ARCH)
    string(REGEX REPLACE "^([0-9]+)\\\\..*$" "\\\\1" TGT_ARCH_MAJOR "${_ARCH}")
    foreach(_SRC_ARCH ${_SRC_CUDA_ARCHS})
      string(REGEX REPLACE "^([0-9]+)\\\\..*$" "\\\\1" SRC_ARCH_MAJOR "${_SRC_ARCH}")
      if (_SRC_ARCH VERSION_LESS_EQUAL _ARCH)
        if (_SRC_ARCH IN_LIST _PTX_ARCHS OR SRC_ARCH_MAJOR STREQUAL TGT_ARCH_MAJOR)
          set(_TMP_ARCH "${_SRC_ARCH}")
        endif()
      else()
        break()
      endif()
    endforeach()
    if (_TMP_ARCH)
      list(APPEND _CUDA_ARCHS "${_TMP_ARCH}")
    endif()
  endforeach()
  list(REMOVE_DUPLICATES _CUDA_ARCHS)
  set(_FINAL_ARCHS)
  foreach(_arch ${_CUDA_ARCHS})
    if(_arch IN_LIST _PTX_ARCHS)
      list(APPEND _FINAL_ARCHS "${_arch}+PTX")
    else()
      list(APPEND _FINAL_ARCHS "${_arch}")
    endif()
  endforeach()
  set(_CUDA_ARCHS ${_FINAL_ARCHS})
  set(${OUT_CUDA_ARCHS} ${_CUDA_ARCHS} PARENT_SCOPE)
endfunction()
function (define_gpu_extension_target GPU_MOD_NAME)
  cmake_parse_arguments(PARSE_ARGV 1
    GPU
    "WITH_SOABI"
    "DESTINATION;LANGUAGE;USE_SABI"
    "SOURCES;ARCHITECTURES;COMPILE_FLAGS;INCLUDE_DIRECTORIES;LIBRARIES")
  if (GPU_LANGUAGE STREQUAL "HIP")
    hipify_sources_target(GPU_SOURCES ${GPU_MOD_NAME} "${GPU_SOURCES}")
  endif()
  if (GPU_WITH_SOABI)
    set(GPU_WITH_SOABI WITH_SOABI)
  else()
    set(GPU_WITH_SOABI)
  endif()
  if (GPU_USE_SABI)
    Python_add_library(${GPU_MOD_NAME} MODULE USE_SABI ${GPU_USE_SABI} ${GPU_WITH_SOABI}
      "${GPU_SOURCES}")
  else()
    Python_add_library(${GPU_MOD_NAME} MODULE ${GPU_WITH_SOABI} "${GPU_SOURCES}")
  endif()
  if (GPU_LANGUAGE STREQUAL "HIP")
    add_dependencies(${GPU_MOD_NAME} hipify${GPU_MOD_NAME})
    target_include_directories(${GPU_MOD_NAME} PRIVATE ${CMAKE_CURRENT_BINARY_DIR}/csrc
      ${GPU_INCLUDE_DIRECTORIES})
  else()
    target_include_directories(${GPU_MOD_NAME} PRIVATE csrc
      ${GPU_INCLUDE_DIRECTORIES})
  endif()
  if (GPU_ARCHITECTURES)
    set_target_properties(${GPU_MOD_NAME} PROPERTIES
      ${GPU_LANGUAGE}_ARCHITECTURES "${GPU_ARCHITECTURES}")
  endif()
  set_property(TARGET ${GPU_MOD_NAME} PROPERTY CXX_STANDARD 17)
  target_compile_options(${GPU_MOD_NAME} PRIVATE
    $<$<COMPILE_LANGUAGE:${GPU_LANGUAGE}>:${GPU_COMPILE_FLAGS}>)
  target_compile_definitions(${GPU_MOD_NAME} PRIVATE
    "-DTORCH_EXTENSION_NAME=${GPU_MOD_NAME}")
  target_link_libraries(${GPU_MOD_NAME} PRIVATE torch ${GPU_LIBRARIES})
  if (GPU_LANGUAGE STREQUAL "CUDA")
    target_link_libraries(${GPU_MOD_NAME} PRIVATE CUDA::cudart CUDA::cuda_driver)
  else()
    target_link_libraries(${GPU_MOD_NAME} PRIVATE ${TORCH_LIBRARIES})
  endif()
  install(TARGETS ${GPU_MOD_NAME} LIBRARY DESTINATION ${GPU_DESTINATION} COMPONENT ${GPU_MOD_NAME})
endfunction()
"""

CMAKELISTS = """\
cmake_minimum_required(VERSION 3.26)
project(vllm_extensions LANGUAGES CXX)
set(VLLM_TARGET_DEVICE "cuda" CACHE STRING "Target device backend for vLLM")
include(${CMAKE_CURRENT_LIST_DIR}/cmake/utils.cmake)
set(PYTHON_SUPPORTED_VERSIONS "3.9" "3.10" "3.11" "3.12")
find_program(NVCC_EXECUTABLE nvcc)
if (CUDA_FOUND AND NOT NVCC_EXECUTABLE)
    message(FATAL_ERROR "nvcc not found")
endif()
find_package(Torch REQUIRED)
if(DEFINED CMAKE_CUDA_COMPILER_VERSION AND
   CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.8)
  set(CUDA_SUPPORTED_ARCHS "8.0;8.9;9.0;10.0;12.0")
else()
  set(CUDA_SUPPORTED_ARCHS "8.0;8.9;9.0")
endif()
if (NOT VLLM_TARGET_DEVICE STREQUAL "cuda" AND
    NOT VLLM_TARGET_DEVICE STREQUAL "rocm")
    return()
endif()
if (NOT HIP_FOUND AND CUDA_FOUND)
  set(VLLM_GPU_LANG "CUDA")
else()
  message(FATAL_ERROR "Can't find CUDA or HIP installation.")
endif()
if(VLLM_GPU_LANG STREQUAL "CUDA")
  clear_cuda_arches(CUDA_ARCH_FLAGS)
  extract_unique_cuda_archs_ascending(CUDA_ARCHS "${CUDA_ARCH_FLAGS}")
  cuda_archs_loose_intersection(CUDA_ARCHS
    "${CUDA_SUPPORTED_ARCHS}" "${CUDA_ARCHS}")
endif()
get_torch_gpu_compiler_flags(VLLM_GPU_FLAGS ${VLLM_GPU_LANG})
set(VLLM_EXT_SRC
  "csrc/cache_kernels.cu"
  "csrc/layernorm_kernels.cu"
  "csrc/torch_bindings.cpp")
if(VLLM_GPU_LANG STREQUAL "CUDA")
  set(CUTLASS_REVISION "v3.8.0" CACHE STRING "CUTLASS revision to use")
  if (DEFINED ENV{VLLM_CUTLASS_SRC_DIR})
    set(VLLM_CUTLASS_SRC_DIR $ENV{VLLM_CUTLASS_SRC_DIR})
  endif()
  if(VLLM_CUTLASS_SRC_DIR)
    FetchContent_Declare(cutlass SOURCE_DIR ${VLLM_CUTLASS_SRC_DIR})
  else()
    FetchContent_Declare(cutlass GIT_REPOSITORY https://example.invalid/cutlass.git
        GIT_TAG ${CUTLASS_REVISION})
  endif()
  FetchContent_MakeAvailable(cutlass)
  list(APPEND VLLM_EXT_SRC "csrc/quantization/cutlass_w8a8/scaled_mm_entry.cu")
  set_gencode_flags_for_srcs(
    SRCS "${VLLM_EXT_SRC}"
    CUDA_ARCHS "${CUDA_ARCHS}")
  cuda_archs_loose_intersection(MARLIN_ARCHS "8.0;8.7;9.0+PTX" "${CUDA_ARCHS}")
  if (MARLIN_ARCHS)
    file(GLOB MARLIN_TEMPLATE_KERNEL_SRC "csrc/quantization/gptq_marlin/kernel_*.cu")
    set(MARLIN_SRCS
       "csrc/quantization/gptq_marlin/gptq_marlin.cu"
       "csrc/quantization/gptq_marlin/gptq_marlin_repack.cu")
    set_gencode_flags_for_srcs(
      SRCS "${MARLIN_SRCS}"
      CUDA_ARCHS "${MARLIN_ARCHS}")
    if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.8)
      set_source_files_properties("csrc/quantization/gptq_marlin/gptq_marlin.cu"
        PROPERTIES COMPILE_FLAGS "-static-global-template-stub=false")
    endif()
    list(APPEND VLLM_EXT_SRC "${MARLIN_SRCS}")
  endif()
  cuda_archs_loose_intersection(SCALED_MM_ARCHS "9.0a;" "${CUDA_ARCHS}")
  if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.0 AND SCALED_MM_ARCHS)
    set(SRCS "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm90.cu")
    set_gencode_flags_for_srcs(
      SRCS "${SRCS}"
      CUDA_ARCHS "${SCALED_MM_ARCHS}")
    list(APPEND VLLM_EXT_SRC "${SRCS}")
    list(APPEND VLLM_GPU_FLAGS "-DENABLE_SCALED_MM_SM90=1")
  endif()
  cuda_archs_loose_intersection(FP4_ARCHS "12.0;12.0a" "${CUDA_ARCHS}")
  if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.8 AND FP4_ARCHS)
    set(SRCS "csrc/quantization/fp4/nvfp4_scaled_mm_sm120_kernels.cu")
    set_gencode_flags_for_srcs(
      SRCS "${SRCS}"
      CUDA_ARCHS "${FP4_ARCHS}")
    list(APPEND VLLM_EXT_SRC "${SRCS}")
    list(APPEND VLLM_GPU_FLAGS "-DENABLE_NVFP4_SM120=1")
  else()
    set(FP4_ARCHS)
  endif()
endif()
define_gpu_extension_target(
  _C
  DESTINATION vllm
  LANGUAGE ${VLLM_GPU_LANG}
  SOURCES ${VLLM_EXT_SRC}
  COMPILE_FLAGS ${VLLM_GPU_FLAGS}
  ARCHITECTURES ${VLLM_GPU_ARCHES}
  INCLUDE_DIRECTORIES ${CUTLASS_INCLUDE_DIR}
  USE_SABI 3
  WITH_SOABI)
target_compile_definitions(_C PRIVATE CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1)
if (VLLM_GPU_LANG STREQUAL "CUDA")
    include(cmake/external_projects/vllm_flash_attn.cmake)
endif ()
"""

SOURCES = {
    "csrc/ops.h": "#pragma once\n#include <torch/all.h>\nvoid op();\n",
    "csrc/dispatch_utils.h": '#pragma once\n#include "ops.h"\n#include "type_convert.cuh"\n',
    "csrc/type_convert.cuh": "#pragma once\n#include <cuda_fp16.h>\n",
    "csrc/torch_bindings.cpp": '#include "ops.h"\n#include <torch/library.h>\n',
    "csrc/cache_kernels.cu": '#include "ops.h"\n',
    "csrc/layernorm_kernels.cu": '#include "dispatch_utils.h"\n',
    "csrc/quantization/cutlass_w8a8/scaled_mm_entry.cu": (
        '#include "cutlass_extensions/common.hpp"\n'
    ),
    "csrc/cutlass_extensions/common.hpp": '#pragma once\n#include "cutlass/cutlass.h"\n',
    "csrc/quantization/gptq_marlin/marlin.cuh": ("#pragma once\nusing T = at::Float8_e8m0fnu;\n"),
    "csrc/quantization/gptq_marlin/gptq_marlin.cu": (
        '#include "marlin.cuh"\n#include "../../ops.h"\n'
        "void f() { x.data_ptr<at::Float8_e8m0fnu>(); }\n"
    ),
    "csrc/quantization/gptq_marlin/gptq_marlin_repack.cu": '#include "marlin.cuh"\n',
    "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm90.cu": '#include "../../ops.h"\n',
    "csrc/quantization/fp4/nvfp4_scaled_mm_sm120_kernels.cu": '#include "../../ops.h"\n',
    "cmake/external_projects/vllm_flash_attn.cmake": 'message(FATAL_ERROR "not run")\n',
}

F8 = ApiSymbol("Float8_e8m0fnu", "Float8_e8m0fnu", "2.7.0", "c10/util/Float8_e8m0fnu.h", "pr")


def make_tree(root: Path) -> Path:
    (root / "cmake").mkdir(parents=True)
    (root / "cmake" / "utils.cmake").write_text(UTILS)
    (root / "CMakeLists.txt").write_text(CMAKELISTS)
    for rel, text in SOURCES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def make_facts(version: str = "0.8.4") -> SourceFacts:
    cutlass = External(
        "cutlass",
        "https://example.invalid/cutlass.git",
        "v3.8.0",
        "VLLM_CUTLASS_SRC_DIR",
        "CMakeLists.txt:34",
    )
    return SourceFacts(
        vllm=version,
        torch="2.6.0",
        torch_evidence=None,
        cutlass="v3.8.0",
        external=(cutlass,),
        cuda_archs=(),
        python=("3.12",),
        requires_python=None,
        cmake="3.26",
        modelopt=ModelOptFacts(False, None, None),
    )


def hits(tree: Path) -> list[ApiHit]:
    from vllm_matrix.stages import apiscan

    return apiscan.scan(tree, (F8,))


def torch_env(root: Path, abi: int = 0) -> TorchEnv:
    site = root / "lib" / "python3.12" / "site-packages"
    td = site / "torch"
    (td / "utils").mkdir(parents=True)
    (td / "include" / "torch" / "csrc" / "api" / "include").mkdir(parents=True)
    (td / "utils" / "cpp_extension.py").write_text(
        "COMMON_NVCC_FLAGS = [\n    '-D__CUDA_NO_HALF_OPERATORS__',\n"
        "    '-D__CUDA_NO_HALF_CONVERSIONS__',\n    '--expt-relaxed-constexpr'\n]\n"
    )
    cm = td / "share" / "cmake"
    (cm / "Torch").mkdir(parents=True)
    (cm / "Caffe2" / "public").mkdir(parents=True)
    (cm / "Torch" / "TorchConfig.cmake").write_text(
        'if(CMAKE_SYSTEM_NAME STREQUAL "Linux")\n'
        f'  set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI={abi}")\nendif()\n'
    )
    (cm / "Caffe2" / "Caffe2Targets.cmake").write_text(
        "set_target_properties(torch_cpu PROPERTIES\n"
        '  INTERFACE_COMPILE_DEFINITIONS "USE_DISTRIBUTED;USE_C10D_GLOO"\n)\n'
        "set_target_properties(torch_cpu_library PROPERTIES\n"
        '  INTERFACE_COMPILE_DEFINITIONS "\\$<TARGET_PROPERTY:torch_cpu,X>"\n)\n'
    )
    (cm / "Caffe2" / "public" / "cuda.cmake").write_text(
        'if(ONNX_NAMESPACE)\nelse()\n  list(APPEND CUDA_NVCC_FLAGS "-DONNX_NAMESPACE=onnx_c2")\n'
        "endif()\nforeach(diag cc_clobber_ignored bad_friend_decl)\n"
        "  list(APPEND SUPPRESS_WARNING_FLAGS --diag_suppress=${diag})\nendforeach()\n"
        "list(APPEND CUDA_NVCC_FLAGS -Xcudafe ${SUPPRESS_WARNING_FLAGS})\n"
        'list(APPEND CUDA_NVCC_FLAGS "--expt-relaxed-constexpr")\n'
        'list(APPEND CUDA_NVCC_FLAGS "--expt-extended-lambda")\n'
    )
    return TorchEnv(
        "3.12", "2.6.0", "headers", root, root / "bin" / "python", site, "2.6.0+cu124", "12.4"
    )


def toolkit(root: Path, nvcc: Path | None = None, version: str = "12.4.131") -> Toolkit:
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "include").mkdir(exist_ok=True)
    return Toolkit(
        "debian",
        ".".join(version.split(".")[:2]),
        version,
        root,
        nvcc or root / "bin" / "nvcc",
        ("8.0", "9.0"),
        13,
        (),
    )


# ------------------------------------------------------------------ the CMake interpreter


def evaluate(tmp: Path, body: str, utils: str = UTILS) -> probe._CMake:
    (tmp / "cmake").mkdir(parents=True, exist_ok=True)
    (tmp / "cmake" / "utils.cmake").write_text(utils)
    (tmp / "CMakeLists.txt").write_text(
        "include(${CMAKE_CURRENT_LIST_DIR}/cmake/utils.cmake)\n" + body
    )
    cm = probe._CMake(tmp, {"CMAKE_CURRENT_SOURCE_DIR": str(tmp)}, {}, lambda expr: "", {}, {})
    cm.run_file(tmp / "CMakeLists.txt")
    return cm


@pytest.mark.parametrize(
    ("src", "tgt", "want"),
    [
        # the example in vLLM's comment above cuda_archs_loose_intersection; the code
        # (not the comment, which says "8.0;8.6;9.0;9.0a") puts the "a" arch first
        ("7.5;8.0;8.6;9.0;9.0a", "8.0;8.9;9.0", "9.0a;8.0;8.6"),
        ("8.0+PTX", "9.0", "8.0+PTX"),
        ("8.0;8.7;9.0+PTX", "9.0", "9.0+PTX"),
        ("9.0a;", "9.0", "9.0a"),
        ("9.0a;", "8.0;8.9", ""),
        ("12.0;12.0a", "9.0", ""),
        # SASS is forward compatible within a major only
        ("8.0;8.6;8.9", "12.0", ""),
    ],
)
def test_loose_intersection_is_vllms_own(tmp_path: Path, src: str, tgt: str, want: str) -> None:
    cm = evaluate(tmp_path, f'cuda_archs_loose_intersection(OUT "{src}" "{tgt}")\n')
    assert (cm.get("OUT") or "") == want


def test_extract_archs_from_torch_gencode_flags(tmp_path: Path) -> None:
    cm = evaluate(
        tmp_path,
        'set(CMAKE_CUDA_FLAGS "-DX -gencode arch=compute_90,code=sm_90 '
        '-gencode arch=compute_80,code=sm_80 -Xcudafe --diag_suppress=a")\n'
        # a macro: its body names CUDA_ARCH_FLAGS literally, whatever the argument
        "clear_cuda_arches(IGNORED)\n"
        'extract_unique_cuda_archs_ascending(ARCHS "${CUDA_ARCH_FLAGS}")\n',
    )
    assert cm.get("ARCHS") == "8.0;9.0"  # string_to_ver's \\( \\) regex groups work
    assert "gencode" not in (cm.get("CMAKE_CUDA_FLAGS") or "")


def test_gencode_flags_per_source_with_ptx(tmp_path: Path) -> None:
    cm = evaluate(
        tmp_path, 'set_gencode_flags_for_srcs(SRCS "a.cu;b.cu" CUDA_ARCHS "8.0;9.0+PTX")\n'
    )
    opts = probe.eval_genex(";".join(cm.src_options["a.cu"]), "CUDA")
    assert opts.split(";") == [
        "-gencode",
        "arch=compute_80,code=sm_80",
        "-gencode",
        "arch=compute_90,code=sm_90",
        "-gencode",
        "arch=compute_90,code=compute_90",
    ]
    assert probe.eval_genex(";".join(cm.src_options["b.cu"]), "CXX") == ";;"


def test_conditions_precedence_and_versions(tmp_path: Path) -> None:
    cm = evaluate(
        tmp_path,
        "set(V 12.4.131)\nset(A ON)\n"
        "if(${V} VERSION_GREATER_EQUAL 12.0 AND A)\n  set(R1 yes)\nendif()\n"
        "if(NOT V VERSION_LESS 12.8 OR NOT A)\n  set(R2 yes)\nelse()\n  set(R2 no)\nendif()\n"
        'if(DEFINED ENV{NOPE} OR "x" STREQUAL "x")\n  set(R3 yes)\nendif()\n'
        "if(UNDEFINED_THING)\n  set(R4 yes)\n"
        'elseif("9.0a" MATCHES "\\\\a$")\n  set(R4 a)\nendif()\n'
        "foreach(x 1 2 3)\n  if(x EQUAL 2)\n    break()\n  endif()\n  list(APPEND L ${x})\n"
        "endforeach()\n",
    )
    assert cm.get("R1") == "yes" and cm.get("R2") == "no" and cm.get("R3") == "yes"
    assert cm.get("R4") == "a"  # CMake's \\a is a literal "a", not Python's bell
    assert cm.get("L") == "1"


def test_functions_have_their_own_scope_and_parent_scope(tmp_path: Path) -> None:
    cm = evaluate(
        tmp_path,
        "function(f OUT)\n  set(LOCAL 1)\n  set(${OUT} done PARENT_SCOPE)\nendfunction()\n"
        "macro(m X)\n  set(FROM_MACRO ${X})\nendmacro()\n"
        "f(RES)\nm(hello)\n",
    )
    assert cm.get("RES") == "done" and cm.get("LOCAL") is None
    assert cm.get("FROM_MACRO") == "hello"


def test_genex() -> None:
    text = "$<$<COMPILE_LANGUAGE:CUDA>:-DA;-DB>;-DC;$<BUILD_INTERFACE:inc>;$<INSTALL_INTERFACE:x>"
    assert probe.eval_genex(text, "CUDA") == "-DA;-DB;-DC;inc;"
    assert probe.eval_genex(text, "CXX") == ";-DC;inc;"


# ------------------------------------------------------------------ model and selection


def test_model_for_sm90_nvcc_12_4(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    m = probe.build_model(tree, "12.4.131", ("9.0",))
    assert m.cuda_archs == ("9.0",)
    fams = {f.arch_var: f for f in m.families}
    assert fams["MARLIN_ARCHS"].archs == ("9.0+PTX",) and fams["MARLIN_ARCHS"].gated
    assert fams["SCALED_MM_ARCHS"].archs == ("9.0a",)
    assert "FP4_ARCHS" not in fams  # 12.0 kernels need nvcc >= 12.8 and a 12.x arch
    assert not fams["CUDA_ARCHS"].gated
    (c,) = m.targets
    assert c.name == "_C" and c.sabi == "3"
    assert "csrc/torch_bindings.cpp" in c.sources
    assert "CUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1" in c.definitions
    assert m.skipped_includes == ("cmake/external_projects/vllm_flash_attn.cmake",)
    assert any("kernel_*.cu" in g for g in m.empty_globs)
    assert not m.fatal
    assert probe.unit_archs(m, "csrc/quantization/gptq_marlin/gptq_marlin.cu") == (
        "sm_90",
        "compute_90",
    )


def test_model_for_sm120_needs_nvcc_12_8(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    old = probe.build_model(tree, "12.4.131", ("12.0",))
    assert old.cuda_archs == ()  # CUDA_SUPPORTED_ARCHS stops at 9.0 before 12.8
    new = probe.build_model(tree, "12.8.61", ("12.0",))
    fams = {f.arch_var: f for f in new.families}
    assert new.cuda_archs == ("12.0",) and fams["FP4_ARCHS"].archs == ("12.0a",)
    assert "MARLIN_ARCHS" in fams and fams["MARLIN_ARCHS"].archs == ("9.0+PTX",)
    gm = "csrc/quantization/gptq_marlin/gptq_marlin.cu"
    assert new.source_props[gm]["COMPILE_FLAGS"] == "-static-global-template-stub=false"


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


def test_cutlass_need_is_found_through_headers(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    know = probe.load_knowledge()
    files, needs = probe.include_closure(
        tree, "csrc/quantization/cutlass_w8a8/scaled_mm_entry.cu", [tree / "csrc"], know
    )
    assert "csrc/cutlass_extensions/common.hpp" in files
    assert needs == {"cutlass": "csrc/cutlass_extensions/common.hpp: #include <cutlass/cutlass.h>"}


def test_a_header_the_build_generates_is_a_need_not_a_failure(tmp_path: Path) -> None:
    # vLLM 0.20's marlin units include kernel_selector.h, which generate_kernels.py writes
    # from CMake at configure time: the probe (which runs no generator) must say so.
    tree = tmp_path / "tree"
    marlin = tree / "csrc" / "quantization" / "marlin"
    marlin.mkdir(parents=True)
    (marlin / "generate_kernels.py").write_text('open("kernel_selector.h", "w").write(x)\n')
    (marlin / "marlin.cu").write_text('#include <vector>\n#include "kernel_selector.h"\n')
    know = probe.load_knowledge()
    _, needs = probe.include_closure(tree, "csrc/quantization/marlin/marlin.cu", [], know)
    assert needs == {
        probe.GENERATED: "csrc/quantization/marlin/marlin.cu: #include kernel_selector.h, "
        "written by csrc/quantization/marlin/generate_kernels.py at build time"
    }
    assert probe.generator_of(tree.resolve(), "vector") is None  # a system header
    assert probe.generator_of(tree.resolve(), "other.h") is None


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
    assert probe.lowest_gencode(fl) == ["-gencode", "arch=compute_80,code=sm_80"]


def test_parse_dryrun() -> None:
    text = (
        "#$ _HERE_=/cuda/bin\n#$ PATH=/cuda/nvvm/bin:/cuda/bin:/usr/bin\n"
        '#$ gcc -D__CUDA_ARCH_LIST__=900 -E -x c++ "a b.cu" -o "k/a.cpp4.ii"\n'
        '#$ cudafe++ --c++17 --gen_c_file_name "k/a.cudafe1.cpp" "k/a.cpp4.ii"\n'
        "#$ gcc -D__CUDA_ARCH__=900 -E -x c++ a.cu -o k/a.cpp1.ii\n"
        "#$ cicc -arch compute_90 k/a.cpp1.ii -o k/a.ptx\n#$ ptxas -arch=sm_90 k/a.ptx\n"
        "#$ fatbinary -64 --create=k/a.fatbin\n#$ rm k/a.fatbin\n"
        "#$ gcc -D__CUDA_ARCH__=900 -c -x c++ k/a.cudafe1.cpp -o a.o\n"
    )
    steps, env = probe.parse_dryrun(text)
    assert [s.phase for s in steps] == [
        "host-preprocess",
        "front-end",
        "device-preprocess",
        "device-codegen",
        "ptxas",
        "fatbinary",
        "rm",
        "host-compile",
    ]
    assert steps[0].argv[-3] == "a b.cu"
    assert env["PATH"].startswith("/cuda/nvvm/bin")


def test_parse_dryrun_expands_nvcc13s_variables() -> None:
    # nvcc 13.0 (PyPI's and /usr/local/cuda's alike) calls cicc through a variable; run
    # unexpanded it was "command not found" (exit 127), found on the device machine.
    text = "\n".join(
        [
            "#$ TOP=/cuda/bin/..",
            "#$ CICC_PATH=/cuda/bin/../nvvm/bin",
            '#$ "$CICC_PATH/cicc" --c++17 -arch compute_90 "k/a.cpp1.ii" -o "k/a.ptx"',
            '#$ "${CICC_PATH}/cicc" -I$TOP/include $UNSET_ELSEWHERE',
        ]
    )
    steps, _ = probe.parse_dryrun(text)
    cicc = "/cuda/bin/../nvvm/bin/cicc"
    assert steps[0].argv[0] == cicc and steps[0].phase == "device-codegen"
    assert steps[1].argv == (cicc, "-I/cuda/bin/../include", "$UNSET_ELSEWHERE")


def test_job_limit_uses_memavailable(tmp_path: Path) -> None:
    mi = tmp_path / "meminfo"
    mi.write_text("MemTotal: 25000000 kB\nMemAvailable:    5242880 kB\n")
    assert probe.job_limit(2.0, 8, mi) == 2  # 5 GiB / 2 GiB
    assert probe.job_limit(5.0, 8, mi) == 1
    assert probe.job_limit(1.0, 3, mi) == 3
    mi.write_text("MemAvailable: 100 kB\n")
    assert probe.job_limit(2.0, 4, mi) == 1  # never zero


def test_knowledge_rejects_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[bindings]\ncandidates = ["a"]\nsoruce = "x"\n')
    with pytest.raises(ConfigError, match="did you mean 'source'"):
        probe.load_knowledge(bad)
    k = probe.load_knowledge()
    assert k.bindings[0] == "csrc/torch_bindings.cpp"
    assert k.externals[0].name == "cutlass" and "cute/" in k.externals[0].include_prefixes


# ------------------------------------------------------------------ the stage, fake tools

FAKE_NVCC = """\
#!PYTHON
import os, sys
args = sys.argv[1:]
src = args[args.index("-c") + 1]
keep = args[args.index("--keep-dir") + 1]
obj = args[args.index("-o") + 1]
base = os.path.basename(src).rsplit(".", 1)[0]
gens = [args[i + 1] for i, a in enumerate(args) if a == "-gencode"]
tools = os.path.dirname(os.path.abspath(__file__))
ii = os.path.join(keep, base + ".cpp4.ii")
print("#$ _HERE_=" + tools)
print("#$ PATH=" + tools + ":" + os.environ.get("PATH", ""))
print(f"#$ {tools}/gcc -E -x c++ {src} -o {ii}")
print(f"#$ cudafe++ --gen_c_file_name {keep}/{base}.cudafe1.cpp {ii}")
for g in gens:
    print(f"#$ {tools}/gcc -D__CUDA_ARCH__=900 -E -x c++ {src} -o {keep}/{base}.cpp1.ii")
    print(f"#$ cicc {keep}/{base}.cpp1.ii -o {keep}/{base}.ptx -gencode={g}")
print(f"#$ {tools}/gcc -c -x c++ {keep}/{base}.cudafe1.cpp -o {obj}")
"""

# gcc: -E copies the source; -c writes the object. cudafe++: an EDG-style error for
# Float8_e8m0fnu unless the (fake) torch has it. cicc: logs its -gencode.
FAKE_GCC = """\
#!PYTHON
import shutil, sys
args = sys.argv[1:]
out = args[args.index("-o") + 1]
src = [a for a in args if a.endswith((".cu", ".cpp", ".ii"))][0]
shutil.copy(src, out) if "-E" in args else open(out, "w").write("obj")
"""
FAKE_CUDAFE = """\
#!PYTHON
import os, sys
ii = sys.argv[-1]
for n, line in enumerate(open(ii), 1):
    if "Float8_e8m0fnu" in line and not os.environ.get("FAKE_TORCH_HAS_F8"):
        print(f'{ii}({n}): error: namespace "at" has no member "Float8_e8m0fnu"')
        print(f'1 error detected in the compilation of "{ii}".')
        sys.exit(2)
"""
FAKE_CICC = """\
#!PYTHON
import os, sys, time
time.sleep(float(os.environ.get("FAKE_CICC_SLEEP", "0")))
print("cicc", sys.argv[-1])
open(sys.argv[sys.argv.index("-o") + 1], "w").write("ptx")
"""
FAKE_CXX = """\
#!PYTHON
import sys
sys.exit(0)
"""


def fake_tools(d: Path) -> Path:
    d.mkdir(parents=True)
    for name, text in (
        ("nvcc", FAKE_NVCC),
        ("gcc", FAKE_GCC),
        ("cudafe++", FAKE_CUDAFE),
        ("cicc", FAKE_CICC),
        ("c++", FAKE_CXX),
    ):
        p = d / name
        p.write_text(text.replace("#!PYTHON", f"#!{sys.executable}"))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return d


@pytest.fixture
def stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VLLM_CUTLASS_SRC_DIR", raising=False)
    monkeypatch.setattr(index, "project_files", lambda project: ())
    tools = fake_tools(tmp_path / "tools")
    tree = make_tree(tmp_path / "tree")
    tk = toolkit(tmp_path / "cuda", nvcc=tools / "nvcc")
    tv = torch_env(tmp_path / "env")
    fx = Fixups((Fixup("CXX", str(tools / "c++"), "test"), Fixup("PATH", str(tools), "test")), ())
    cell = Cell("0.8.4", "2.6.0", "12.4", "debian", "3.12", ("9.0",))
    return {"tree": tree, "tk": tk, "tv": tv, "fx": fx, "cell": cell, "facts": make_facts()}


def run(stage: dict[str, object], work: Path, **kw: object) -> probe.StageResult:
    return probe.run_probe(
        stage["cell"],
        stage["tree"],
        stage["facts"],
        stage["tk"],
        stage["tv"],  # type: ignore[arg-type]
        stage["fx"],
        work,
        api_hits=hits(stage["tree"]),
        **kw,  # type: ignore[arg-type]
    )


def test_front_end_failure_is_classified_and_quoted(
    stage: dict[str, object], tmp_path: Path
) -> None:
    r = run(stage, tmp_path / "work", depth="front-end")
    assert r.stage == "probe" and r.status == "fail"
    assert "front-end" in r.summary and "gptq_marlin.cu (Float8_e8m0fnu)" in r.summary
    units = {u["path"]: u for u in r.details["units"]}
    gm = units["csrc/quantization/gptq_marlin/gptq_marlin.cu"]
    assert gm["status"] == "fail" and gm["depth"] == "front-end"
    assert 'error: namespace "at" has no member "Float8_e8m0fnu"' in gm["first_error"]
    assert Path(gm["log"]) == tmp_path / "work" / "logs" / (
        "csrc__quantization__gptq_marlin__gptq_marlin.cu.log"
    )
    assert [s["phase"] for s in gm["steps"]] == ["host-preprocess", "front-end"]
    (f,) = [f for f in r.findings if f.level == "fail"]
    assert f.rule == "signature:torch_lacks_float8_e8m0fnu"
    assert 'has no member "Float8_e8m0fnu"' in f.message
    for u in units.values():  # every row says why, how deep, how long, where the log is
        assert u["why"] and u["status"] in ("pass", "fail") and u["seconds"] >= 0
    assert units["csrc/torch_bindings.cpp"]["status"] == "pass"
    assert "flags and where they come from" in Path(gm["log"]).read_text()
    assert (tmp_path / "work" / "probe.log").is_file()


def test_front_end_passes_with_a_torch_that_has_the_symbol(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    r = run(stage, tmp_path / "work", depth="front-end")
    assert r.status == "pass" and r.summary.endswith("front-end, all passed")
    assert all(u["depth"] == "front-end" for u in r.details["units"])
    assert not (tmp_path / "work" / "obj").exists() or not any(
        (tmp_path / "work" / "obj").iterdir()
    )


def test_codegen_runs_lowest_arch_only(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    r = run(
        stage,
        tmp_path / "work",
        depth="codegen",
        only=["csrc/quantization/gptq_marlin/gptq_marlin.cu"],
    )
    (u,) = r.details["units"]
    assert u["status"] == "pass" and u["depth"] == "codegen" and r.details["depth"] == "codegen"
    phases = [s["phase"] for s in u["steps"]]
    assert phases.count("device-codegen") == 1  # sm_90 only, not also compute_90
    log = Path(u["log"]).read_text()
    assert "-gencode=arch=compute_90,code=sm_90" in log
    assert (tmp_path / "work" / "obj").is_dir()


def test_auto_codegen_respects_the_budget(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    r = run(stage, tmp_path / "w1", depth="auto", budget_s=0.0)
    gated = [
        u
        for u in r.details["units"]
        if "ARCHS" in u["family"] and not u["family"].startswith("CUDA_ARCHS")
    ]
    assert gated and all(u["depth"] == "front-end" for u in gated)
    assert all("codegen skipped" in u["note"] for u in gated)
    r = run(stage, tmp_path / "w2", depth="auto", budget_s=3600.0)
    units = {u["path"]: u for u in r.details["units"]}
    assert units["csrc/quantization/gptq_marlin/gptq_marlin.cu"]["depth"] == "codegen"
    assert units["csrc/torch_bindings.cpp"]["depth"] == "front-end"  # not arch-gated
    assert "also codegen" in r.summary


def test_auto_codegen_stops_at_the_budget_and_keeps_the_front_end(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The estimate fits, cicc then runs far longer (as on CUTLASS sm_120 kernels): the
    # budget is a deadline, and the front end's pass stands.
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    monkeypatch.setenv("FAKE_CICC_SLEEP", "60")
    # an estimate that always fits, however slow the (loaded) machine runs the front end
    know = dataclasses.replace(probe.load_knowledge(), codegen_per_front_end=0.001)
    monkeypatch.setattr(probe, "load_knowledge", lambda path=None: know)
    t = time.monotonic()
    gm = "csrc/quantization/gptq_marlin/gptq_marlin.cu"
    r = run(stage, tmp_path / "w", depth="auto", budget_s=8.0, only=[gm])
    assert time.monotonic() - t < 40
    (u,) = r.details["units"]
    assert u["status"] == "pass" and u["depth"] == "front-end", u
    assert "code generation stopped at the 8s budget" in u["note"]
    assert r.status == "pass"


def test_units_needing_an_absent_cutlass_are_not_probed(
    stage: dict[str, object], tmp_path: Path
) -> None:
    r = run(
        stage,
        tmp_path / "work",
        depth="front-end",
        only=["csrc/quantization/cutlass_w8a8/scaled_mm_entry.cu"],
    )
    # `only` takes units outside the selection too; its needs are computed the same way
    (u,) = r.details["units"]
    assert u["status"] == "not-probed" and u["needs"] == ["cutlass"]


def test_not_probed_reports_the_pin_and_the_variable(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = stage["tree"]
    assert isinstance(tree, Path)
    (tree / "csrc" / "layernorm_kernels.cu").write_text(
        '#include "cutlass_extensions/common.hpp"\n'
    )
    (tree / "csrc" / "cache_kernels.cu").write_text('#include "cutlass_extensions/common.hpp"\n')
    r = run(stage, tmp_path / "work", depth="front-end")
    np = [u for u in r.details["units"] if u["status"] == "not-probed"]
    assert np and all(u["needs"] == ["cutlass"] for u in np)
    assert "needs cutlass v3.8.0 (VLLM_CUTLASS_SRC_DIR)" in np[0]["note"]
    assert "not probed (needs cutlass)" in r.summary
    assert any(f.rule == "probe-not-probed" and f.level == "info" for f in r.findings)
    # with the variable set to a tree, the same units are compiled
    cut = tmp_path / "cutlass"
    (cut / "include" / "cutlass").mkdir(parents=True)
    monkeypatch.setenv("VLLM_CUTLASS_SRC_DIR", str(cut))
    r = run(stage, tmp_path / "work2", depth="front-end")
    assert not [u for u in r.details["units"] if u["status"] == "not-probed"]
    assert r.details["externals"]["cutlass"]["origin"] == "$VLLM_CUTLASS_SRC_DIR"


def test_unknown_depth_is_refused(stage: dict[str, object], tmp_path: Path) -> None:
    from vllm_matrix.infra.errors import MatrixError

    with pytest.raises(MatrixError, match="did you mean 'codegen'"):
        run(stage, tmp_path / "w", depth="codegn")


def test_unit_names_are_flat() -> None:
    assert probe.Unit("csrc/a/b.cu", "", "cuda").name == "csrc__a__b.cu"
    assert os.sep not in probe.Unit("csrc/a/b.cu", "", "cuda").name


def test_old_trees_take_arches_from_the_target(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "csrc").mkdir(parents=True)
    (tree / "csrc" / "a.cu").write_text("")
    (tree / "csrc" / "pybind.cpp").write_text("")
    (tree / "CMakeLists.txt").write_text(
        "add_library(_C MODULE csrc/a.cu csrc/pybind.cpp)\n"
        'set_target_properties(_C PROPERTIES CUDA_ARCHITECTURES "80-real;90")\n'
    )
    m = probe.build_model(tree, "12.4.131", ("8.0",))
    (fam,) = m.families
    assert fam.arch_var == "target _C" and not fam.gated and fam.sources == ("csrc/a.cu",)
    assert probe.unit_archs(m, "csrc/a.cu") == ("sm_80", "sm_90", "compute_90")
    units = probe.select_units(tree, make_facts(), ("8.0",), "12.4.131", [])
    assert [u.path for u in units] == ["csrc/pybind.cpp", "csrc/a.cu"]


def test_vllm_0_4_sets_its_arches_on_the_target() -> None:
    # vLLM 0.4.2's own CMake (tests/unit/cmake/vllm-0.4.2: excerpts of its CMakeLists.txt and
    # cmake/utils.cmake): no CUDA_ARCHS; override_gpu_arches filters torch's -gencode by
    # CUDA_SUPPORTED_ARCHS into each target's CUDA_ARCHITECTURES. Its wheel has sm_80 SASS.
    tree = Path(__file__).parent / "cmake" / "vllm-0.4.2"
    m = probe.build_model(tree, "12.4.131", ("8.0",), python="3.11")
    assert m.cuda_archs == ("8.0",) and not m.fatal
    assert {t.name: t.cuda_architectures for t in m.targets} == {
        "_C": ("80-real",),
        "_moe_C": ("80-real",),
    }
    assert probe.build_model(tree, "12.4.131", ("8.0", "9.0"), python="3.11").cuda_archs == (
        "8.0",
        "9.0",
    )
    # sm_120 is not in its CUDA_SUPPORTED_ARCHS: nothing is built, rightly.
    assert probe.build_model(tree, "12.4.131", ("12.0",), python="3.11").cuda_archs == ()


def test_an_arch_the_tree_does_not_build_is_a_warning(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    stage["cell"] = Cell("0.8.4", "2.6.0", "12.4", "debian", "3.12", ("12.0",))
    r = run(stage, tmp_path / "work", depth="front-end")
    assert r.details["cuda_archs"] == []
    (w,) = [f for f in r.findings if f.rule == "probe-no-arch"]
    assert w.level == "warn" and "12.0" in w.message


def test_a_header_named_only_by_cmake_or_with_a_directory_is_not_generated(
    tmp_path: Path,
) -> None:
    # vLLM 0.27: torch_utils.h includes torch/csrc/inductor/aoti_torch/c/shim.h (torch's own
    # header, outside the tree) and deepgemm.cmake names shim.h: not a generated file.
    tree = tmp_path / "tree"
    (tree / "cmake").mkdir(parents=True)
    (tree / "cmake" / "deepgemm.cmake").write_text("# copies shim.h\n")
    (tree / "csrc").mkdir()
    (tree / "csrc" / "gen.py").write_text("# writes shim.h\n")
    (tree / "csrc" / "u.cu").write_text('#include "torch/csrc/inductor/aoti_torch/c/shim.h"\n')
    _, needs = probe.include_closure(tree, "csrc/u.cu", [], probe.load_knowledge())
    assert needs == {}
    assert probe.generator_of(tree.resolve(), "x.h") is None


def test_ctrl_c_stops_the_probe_in_seconds(
    stage: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A SIGINT to the probing process alone (not its compilers' groups), sent while a
    # compiler runs: the units running are ended, the ones queued never start, and
    # KeyboardInterrupt reaches the caller. The probe runs in a process of its own, as a
    # user's would: under pytest-xdist the test need not own the main thread, where Python
    # delivers SIGINT, and a load-dependent timer could fire before or after the compile.
    import pickle
    import signal
    import subprocess

    from vllm_matrix.infra import proc

    monkeypatch.setenv("FAKE_TORCH_HAS_F8", "1")
    monkeypatch.setenv("FAKE_CICC_SLEEP", "60")
    args = tmp_path / "args.pickle"
    args.write_bytes(pickle.dumps((stage, tmp_path / "w", hits(stage["tree"]))))  # type: ignore[arg-type]
    script = (
        "import pickle, sys\n"
        "from vllm_matrix.infra import index\nfrom vllm_matrix.stages import probe\n"
        "index.project_files = lambda project: ()\n"
        "s, work, api = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "probe.run_probe(s['cell'], s['tree'], s['facts'], s['tk'], s['tv'], s['fx'], work,\n"
        "                api_hits=api, depth='codegen', jobs=1)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(args)], stderr=subprocess.PIPE, text=True
    )

    def ciccs() -> list[int]:
        return [
            p
            for p in proc.descendants(child.pid)
            if Path(f"/proc/{p}/cmdline").exists()
            and b"cicc" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]

    deadline = time.monotonic() + 120  # however loaded the machine, until cicc runs
    while not ciccs() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ciccs(), (
        f"the probe never reached codegen: {child.stderr.read() if child.stderr else ''}"
    )
    running = ciccs()
    t = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert time.monotonic() - t < 20, "Ctrl-C took longer than 20 s to stop the probe"
    assert "KeyboardInterrupt" in err
    time.sleep(0.5)
    assert not [p for p in running if Path(f"/proc/{p}").exists()]


def test_front_end_cache_skips_an_unchanged_unit_the_second_time(
    stage: dict[str, object], tmp_path: Path
) -> None:
    first = run(stage, tmp_path / "work1", depth="front-end")
    again = run(stage, tmp_path / "work2", depth="front-end")  # another cell's work dir
    u1 = {u["path"]: u for u in first.details["units"] if u["kind"] == "cuda"}
    u2 = {u["path"]: u for u in again.details["units"] if u["kind"] == "cuda"}
    passed = [p for p, u in u1.items() if u["status"] == "pass"]
    assert passed and all(u1[p]["front_end_cache"] == "miss" for p in passed)
    for p in passed:
        assert u2[p]["front_end_cache"] == "hit" and u2[p]["status"] == "pass"
        assert next(s for s in u2[p]["steps"] if s["tool"] == "cudafe++").get("cached")
    # a failing front end is never stored: it runs (and fails) again, with its own log
    failed = [p for p, u in u1.items() if u["status"] == "fail"]
    assert failed and all(u2[p]["status"] == "fail" for p in failed)
    assert all(u2[p]["front_end_cache"] == "miss" for p in failed)
    fc = again.details["front_end_cache"]
    assert fc["hits"] == len(passed) and fc["misses"] == len(failed)
    assert again.status == first.status == "fail"


def test_units_all_sweeps_every_built_unit(stage: dict[str, object], tmp_path: Path) -> None:
    sel = run(stage, tmp_path / "w1", depth="front-end")
    full = run(stage, tmp_path / "w2", depth="front-end", units_mode="all")
    chosen = {u["path"] for u in sel.details["units"]}
    swept = {u["path"] for u in full.details["units"]}
    assert chosen < swept  # the selection is a strict subset of the sweep here
    assert all(u["why"] == "all" for u in full.details["units"] if u["path"] not in chosen)
    with pytest.raises(probe.MatrixError, match="did you mean 'all'"):
        run(stage, tmp_path / "w3", units_mode="al")
