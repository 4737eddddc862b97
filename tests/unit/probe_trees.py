"""The probe tests' fixture tree: a vLLM-like CMakeLists.txt and sources, a torch env, a toolkit.

The fixture tree's cmake/utils.cmake holds vLLM 0.10.1's own functions (comments removed):
the probe must evaluate them, not re-implement them.
"""

from __future__ import annotations

from pathlib import Path

from vllm_matrix.knowledge.toolchains import ApiSymbol
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.facts import External, ModelOptFacts, SourceFacts
from vllm_matrix.stages.preflight.apiscan import ApiHit
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
    from vllm_matrix.stages.preflight import apiscan

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
