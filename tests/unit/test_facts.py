"""facts.read_facts over small hand-written trees in the styles of real vLLM releases."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from vllm_matrix.infra.errors import SourceError
from vllm_matrix.stages.facts import ArchRule, ModelOptFacts, SourceFacts, read_facts

QUANT = "vllm/model_executor/layers/quantization"


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


# --- 0.4.2: everything in CMakeLists.txt, no FetchContent, pins in pyproject -------

V042 = {
    "CMakeLists.txt": """
        cmake_minimum_required(VERSION 3.21)

        project(vllm_extensions LANGUAGES CXX)

        #
        # Supported python versions.
        #
        set(PYTHON_SUPPORTED_VERSIONS "3.8" "3.9" "3.10" "3.11")

        # Supported NVIDIA architectures.
        set(CUDA_SUPPORTED_ARCHS "7.0;7.5;8.0;8.6;8.9;9.0")

        # Supported AMD GPU architectures.
        set(HIP_SUPPORTED_ARCHS "gfx906;gfx908;gfx90a;gfx940;gfx941;gfx942;gfx1030;gfx1100")

        set(TORCH_SUPPORTED_VERSION_CUDA "2.3.0")
        set(TORCH_SUPPORTED_VERSION_ROCM_5X "2.0.1")
        set(TORCH_SUPPORTED_VERSION_ROCM_6X "2.1.1")
    """,
    "pyproject.toml": """
        [build-system]
        # Should be mirrored in requirements-build.txt
        requires = [
            "cmake>=3.21",
            "ninja",
            "packaging",
            "setuptools >= 49.4.0",
            "torch == 2.3.0",
            "wheel",
        ]
        build-backend = "setuptools.build_meta"
    """,
    "requirements-cuda.txt": """
        # Common dependencies
        -r requirements-common.txt

        # Dependencies for NVIDIA GPUs
        ray >= 2.9
        nvidia-ml-py # for pynvml package
        vllm-nccl-cu12>=2.18,<2.19  # for downloading nccl library
        torch == 2.3.0
        xformers == 0.0.26.post1  # Requires PyTorch 2.3.0
    """,
    "requirements-rocm.txt": "torch == 2.1.1\n",
    "setup.py": """
        setup(
            name="vllm",
            python_requires=">=3.8",
        )
    """,
    f"{QUANT}/__init__.py": """
        QUANTIZATION_METHODS = {
            "aqlm": AQLMConfig,
            "awq": AWQConfig,
            "fp8": Fp8Config,
        }
    """,
}


def test_v042_style(tmp_path: Path) -> None:
    f = read_facts(write_tree(tmp_path, V042), "0.4.2")
    assert f.vllm == "0.4.2"
    assert (f.torch, f.torch_evidence) == ("2.3.0", "CMakeLists.txt:16")
    assert [p.evidence for p in f.torch_pins] == [
        "CMakeLists.txt:16",
        "pyproject.toml:8",
        "requirements-cuda.txt:8",
    ]
    assert f.torch_conflicts() == ()
    assert f.cmake == "3.21" and f.cmake_evidence == "CMakeLists.txt:1"
    assert f.python == ("3.8", "3.9", "3.10", "3.11")
    assert f.requires_python == ">=3.8" and f.requires_python_evidence == "setup.py:3"
    assert f.cuda_archs == (ArchRule(None, ("7.0", "7.5", "8.0", "8.6", "8.9", "9.0"), 11),)
    assert f.external == () and f.cutlass is None
    assert f.modelopt == ModelOptFacts(False, None, None)


# --- 0.8.5: cutlass in CMakeLists (CACHE STRING + env override), external_projects --

V085_CMAKE = """
    cmake_minimum_required(VERSION 3.26)
    set(PYTHON_SUPPORTED_VERSIONS "3.9" "3.10" "3.11" "3.12")
    # Supported NVIDIA architectures.
    set(CUDA_SUPPORTED_ARCHS "7.0;7.2;7.5;8.0;8.6;8.7;8.9;9.0;10.0;10.1;12.0")
    set(HIP_SUPPORTED_ARCHS "gfx906;gfx908;gfx90a;gfx942;gfx950;gfx1030;gfx1100;gfx1101")
    set(TORCH_SUPPORTED_VERSION_CUDA "2.6.0")
    set(TORCH_SUPPORTED_VERSION_ROCM "2.6.0")

    if(VLLM_GPU_LANG STREQUAL "CUDA")
      SET(CUTLASS_ENABLE_HEADERS_ONLY ON CACHE BOOL "Enable only the header library")

      # Set CUTLASS_REVISION manually -- its revision detection doesn't work in this case.
      # Please keep this in sync with FetchContent_Declare line below.
      set(CUTLASS_REVISION "v3.9.0" CACHE STRING "CUTLASS revision to use")

      # Use the CUTLASS source directory in VLLM_CUTLASS_SRC_DIR if it is provided
      if (DEFINED ENV{VLLM_CUTLASS_SRC_DIR})
        set(VLLM_CUTLASS_SRC_DIR $ENV{VLLM_CUTLASS_SRC_DIR})
      endif()

      if(VLLM_CUTLASS_SRC_DIR)
        FetchContent_Declare(cutlass SOURCE_DIR ${VLLM_CUTLASS_SRC_DIR})
      else()
        FetchContent_Declare(
            cutlass
            GIT_REPOSITORY https://github.com/nvidia/cutlass.git
            # Please keep this in sync with CUTLASS_REVISION line above.
            GIT_TAG v3.9.0
            GIT_PROGRESS TRUE
            GIT_SHALLOW TRUE
        )
      endif()
      FetchContent_MakeAvailable(cutlass)
    endif()

    if(VLLM_GPU_LANG STREQUAL "CUDA" OR VLLM_GPU_LANG STREQUAL "HIP")
        include(cmake/external_projects/flashmla.cmake)
        include(cmake/external_projects/vllm_flash_attn.cmake)
    endif ()
"""

FLASHMLA = """
    include(FetchContent)

    # If FLASH_MLA_SRC_DIR is set, flash-mla is installed from that directory
    # instead of downloading.
    # It can be set as an environment variable or passed as a cmake argument.
    # The environment variable takes precedence.
    if (DEFINED ENV{FLASH_MLA_SRC_DIR})
      set(FLASH_MLA_SRC_DIR $ENV{FLASH_MLA_SRC_DIR})
    endif()

    if(FLASH_MLA_SRC_DIR)
      FetchContent_Declare(
            flashmla
            SOURCE_DIR ${FLASH_MLA_SRC_DIR}
            CONFIGURE_COMMAND ""
            BUILD_COMMAND ""
      )
    else()
      FetchContent_Declare(
            flashmla
            GIT_REPOSITORY https://github.com/vllm-project/FlashMLA.git
            GIT_TAG 575f7724b9762f265bbee5889df9c7d630801845
            GIT_PROGRESS TRUE
            CONFIGURE_COMMAND ""
            BUILD_COMMAND ""
      )
    endif()
"""

FLASH_ATTN = """
    if (DEFINED ENV{VLLM_FLASH_ATTN_SRC_DIR})
      set(VLLM_FLASH_ATTN_SRC_DIR $ENV{VLLM_FLASH_ATTN_SRC_DIR})
    endif()

    if(VLLM_FLASH_ATTN_SRC_DIR)
      FetchContent_Declare(
              vllm-flash-attn SOURCE_DIR
              ${VLLM_FLASH_ATTN_SRC_DIR}
              BINARY_DIR ${CMAKE_BINARY_DIR}/vllm-flash-attn
      )
    else()
      FetchContent_Declare(
              vllm-flash-attn
              GIT_REPOSITORY https://github.com/vllm-project/flash-attention.git
              GIT_TAG 8798f27777fb57f447070301bf33a9f9c607f491
              GIT_PROGRESS TRUE
      )
    endif()
"""

MODELOPT_085 = """
    class ModelOptFp8Config(QuantizationConfig):
        \"\"\"Config class for ModelOpt FP8.\"\"\"

        @classmethod
        def get_name(cls) -> QuantizationMethods:
            return "modelopt"

        @classmethod
        def get_min_capability(cls) -> int:
            return 89
"""

V085 = {
    "CMakeLists.txt": V085_CMAKE,
    "cmake/external_projects/flashmla.cmake": FLASHMLA,
    "cmake/external_projects/vllm_flash_attn.cmake": FLASH_ATTN,
    "cmake/cpu_extension.cmake": """
        FetchContent_Declare(
            oneDNN
            GIT_REPOSITORY https://github.com/oneapi-src/oneDNN.git
            GIT_TAG  v3.7.1
        )
    """,
    "requirements/build.txt": "cmake>=3.26\nninja\ntorch==2.6.0\nwheel\n",
    "requirements/cuda.txt": "-r common.txt\ntorch==2.6.0\ntorchaudio==2.6.0\n",
    "pyproject.toml": """
        [build-system]
        requires = [
            "cmake>=3.26",
            "torch == 2.6.0",
        ]

        [project]
        name = "vllm"
        requires-python = ">=3.9,<3.13"
    """,
    f"{QUANT}/__init__.py": """
        QuantizationMethods = Literal["fp8", "modelopt"]

        def get_quantization_config(quantization: str) -> type[QuantizationConfig]:
            from .modelopt import ModelOptFp8Config

            method_to_config: dict[str, type[QuantizationConfig]] = {
                "fp8": Fp8Config,
                "modelopt": ModelOptFp8Config,
            }
            return method_to_config[quantization]
    """,
    f"{QUANT}/modelopt.py": MODELOPT_085,
}


def test_v085_style(tmp_path: Path) -> None:
    f = read_facts(write_tree(tmp_path, V085), "0.8.5")
    assert (f.torch, f.torch_evidence) == ("2.6.0", "CMakeLists.txt:6")
    assert len(f.torch_pins) == 4 and f.torch_conflicts() == ()
    assert f.cmake == "3.26"
    assert f.requires_python == ">=3.9,<3.13"
    assert f.requires_python_evidence == "pyproject.toml:9"
    assert f.cutlass == "v3.9.0"
    ext = {e.name: e for e in f.external}
    assert set(ext) == {"cutlass", "flashmla", "vllm-flash-attn"}  # not the CPU oneDNN
    assert ext["cutlass"].ref == "v3.9.0"
    assert ext["cutlass"].repo == "https://github.com/nvidia/cutlass.git"
    assert ext["cutlass"].env_var == "VLLM_CUTLASS_SRC_DIR"
    assert ext["cutlass"].evidence == "CMakeLists.txt:28"
    assert ext["flashmla"].ref == "575f7724b9762f265bbee5889df9c7d630801845"
    assert ext["flashmla"].env_var == "FLASH_MLA_SRC_DIR"
    assert ext["flashmla"].evidence == "cmake/external_projects/flashmla.cmake:22"
    assert ext["vllm-flash-attn"].ref == "8798f27777fb57f447070301bf33a9f9c607f491"
    assert ext["vllm-flash-attn"].env_var == "VLLM_FLASH_ATTN_SRC_DIR"
    assert [r.min_nvcc for r in f.cuda_archs] == [None]
    assert f.archs_for("12.4")[-1] == "12.0"  # one unconditional list, whatever nvcc
    assert f.modelopt == ModelOptFacts(True, 89, f"{QUANT}/modelopt.py:10")


# --- 0.10.1: arch list split at nvcc 12.8; cutlass GIT_TAG through ${CUTLASS_REVISION}

V0101_CMAKE = """
    cmake_minimum_required(VERSION 3.26)
    set(TORCH_SUPPORTED_VERSION_CUDA "2.7.1")
    find_package(Torch REQUIRED)

    # Supported NVIDIA architectures.
    # This check must happen after find_package(Torch): it defines CMAKE_CUDA_COMPILER_VERSION
    if(DEFINED CMAKE_CUDA_COMPILER_VERSION AND
       CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.8)
      set(CUDA_SUPPORTED_ARCHS "7.0;7.2;7.5;8.0;8.6;8.7;8.9;9.0;10.0;10.1;12.0")
    else()
      set(CUDA_SUPPORTED_ARCHS "7.0;7.2;7.5;8.0;8.6;8.7;8.9;9.0")
    endif()

    if(VLLM_GPU_LANG STREQUAL "CUDA")
      set(CUTLASS_REVISION "v4.0.0" CACHE STRING "CUTLASS revision to use")
      if (DEFINED ENV{VLLM_CUTLASS_SRC_DIR})
        set(VLLM_CUTLASS_SRC_DIR $ENV{VLLM_CUTLASS_SRC_DIR})
      endif()
      if(VLLM_CUTLASS_SRC_DIR)
        FetchContent_Declare(cutlass SOURCE_DIR ${VLLM_CUTLASS_SRC_DIR})
      else()
        FetchContent_Declare(
            cutlass
            GIT_REPOSITORY https://github.com/nvidia/cutlass.git
            # Please keep this in sync with CUTLASS_REVISION line above.
            GIT_TAG ${CUTLASS_REVISION}
        )
      endif()
    endif()
"""


def test_v0101_style_arch_split_and_variable_tag(tmp_path: Path) -> None:
    f = read_facts(write_tree(tmp_path, {"CMakeLists.txt": V0101_CMAKE}), "0.10.1")
    assert f.torch == "2.7.1"
    assert [(r.min_nvcc, r.line) for r in f.cuda_archs] == [("12.8", 9), (None, 11)]
    assert "12.0" not in f.archs_for("12.4")
    assert "12.0" in f.archs_for("12.8")
    assert "12.0" in f.archs_for("12.8.93")
    assert f.archs_for("13.0") == f.archs_for("12.8")
    assert f.cutlass == "v4.0.0"
    (cutlass,) = f.external
    # The value lives on the set() line, so that is the evidence.
    assert cutlass.evidence == "CMakeLists.txt:15"
    assert cutlass.env_var == "VLLM_CUTLASS_SRC_DIR"
    assert f.modelopt.supported is False  # no quantization package in this tree
    assert f.python == () and f.requires_python is None


# --- 0.33.0: 13.4 / 13.0 / 12.8 / else chain, Populate with variables, ROCm branches --

V0330_CMAKE = """
    cmake_minimum_required(VERSION 3.26)
    set(PYTHON_SUPPORTED_VERSIONS "3.11" "3.12" "3.13" "3.14")
    set(TORCH_SUPPORTED_VERSION_CUDA "2.14.0")
    set(TORCH_SUPPORTED_VERSION_ROCM "2.11.0")
    find_package(Torch REQUIRED)

    if(DEFINED CMAKE_CUDA_COMPILER_VERSION AND
       CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 13.4)
      # Rubin (10.7) can run SM100 family code, but CUDA 13.4 also supports
      # targeting it directly.
      set(CUDA_SUPPORTED_ARCHS "7.5;8.0;8.6;8.7;8.9;9.0;10.0;10.7;11.0;12.0")
    elseif(DEFINED CMAKE_CUDA_COMPILER_VERSION AND
       CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 13.0)
      set(CUDA_SUPPORTED_ARCHS "7.5;8.0;8.6;8.7;8.9;9.0;10.0;11.0;12.0")
    elseif(DEFINED CMAKE_CUDA_COMPILER_VERSION AND
       CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.8)
      set(CUDA_SUPPORTED_ARCHS "7.5;8.0;8.6;8.7;8.9;9.0;10.0;10.1;10.3;12.0;12.1")
    else()
      set(CUDA_SUPPORTED_ARCHS "7.0;7.5;8.0;8.6;8.7;8.9;9.0")
    endif()

    if(VLLM_GPU_LANG STREQUAL "CUDA" OR VLLM_GPU_LANG STREQUAL "HIP")
      if(VLLM_GPU_LANG STREQUAL "CUDA")
        set(CUTLASS_REVISION "v4.7.1")
        if (DEFINED ENV{VLLM_CUTLASS_SRC_DIR})
          set(VLLM_CUTLASS_SRC_DIR $ENV{VLLM_CUTLASS_SRC_DIR})
        endif()
        if(VLLM_CUTLASS_SRC_DIR)
          FetchContent_Declare(cutlass SOURCE_DIR ${VLLM_CUTLASS_SRC_DIR})
        else()
          FetchContent_Declare(
              cutlass
              GIT_REPOSITORY https://github.com/nvidia/cutlass.git
              GIT_TAG ${CUTLASS_REVISION}
          )
        endif()
      else()
        # the ROCm side of the same if: not a CUDA dependency
        FetchContent_Declare(aiter GIT_REPOSITORY https://example.invalid/aiter.git GIT_TAG v1)
      endif()
    endif()

    if(VLLM_GPU_LANG STREQUAL "CUDA")
      include(cmake/external_projects/deepgemm.cmake)
    endif()
    if(VLLM_GPU_LANG STREQUAL "CUDA" OR VLLM_GPU_LANG STREQUAL "HIP")
      include(cmake/external_projects/triton_kernels.cmake)
    endif()
"""

DEEPGEMM = """
    include(FetchContent)

    if (DEFINED ENV{DEEPGEMM_SRC_DIR})
      set(DEEPGEMM_SRC_DIR $ENV{DEEPGEMM_SRC_DIR})
    endif()

    # Local tree: set deepgemm_SOURCE_DIR directly (no FetchContent download).
    # Upstream git: use FetchContent_Populate with explicit options (CMP0169 NEW
    # disallows one-argument Populate(dep) after Declare).
    if(DEEPGEMM_SRC_DIR)
      set(_deepgemm_user_src "${DEEPGEMM_SRC_DIR}")
      set(DEEPGEMM_SRC_DIR "${_deepgemm_user_src}")
      set(deepgemm_SOURCE_DIR "${DEEPGEMM_SRC_DIR}")
    else()
      set(_DEEPGEMM_UPSTREAM_REPO "https://github.com/vllm-project/DeepGEMM.git")
      set(_DEEPGEMM_UPSTREAM_TAG "0820030756945b2daec208e8e8255268360f337d")
      set(_deepgemm_src "${FETCHCONTENT_BASE_DIR}/deepgemm-src")
      if(EXISTS "${_deepgemm_src}/deep_gemm/_C.py")
        set(deepgemm_SOURCE_DIR "${_deepgemm_src}")
      else()
        FetchContent_Populate(
          deepgemm
          SOURCE_DIR "${_deepgemm_src}"
          GIT_REPOSITORY "${_DEEPGEMM_UPSTREAM_REPO}"
          GIT_TAG "${_DEEPGEMM_UPSTREAM_TAG}"
          GIT_SUBMODULES "third-party/cutlass" "third-party/deep_jit"
        )
      endif()
    endif()
"""

TRITON_KERNELS = """
    if (DEFINED ENV{TRITON_KERNELS_SRC_DIR})
      FetchContent_Declare(
              triton_kernels
              SOURCE_DIR $ENV{TRITON_KERNELS_SRC_DIR}
      )
    else()
      if (VLLM_TARGET_DEVICE STREQUAL "rocm")
        set(TRITON_GIT "https://github.com/ROCm/triton.git")
        set(TRITON_KERNELS_TAG "669b31acc1dd1b3fd93286afd5db67f65d9f7557")
      else()
        set(TRITON_GIT "https://github.com/triton-lang/triton.git")
        set(TRITON_KERNELS_TAG "v3.5.1")
      endif()
      FetchContent_Declare(
              triton_kernels
              GIT_REPOSITORY ${TRITON_GIT}
              GIT_TAG ${TRITON_KERNELS_TAG}
      )
    endif()
"""

MODELOPT_0330 = """
    class ModelOptQuantConfigBase(QuantizationConfig):
        pass


    class ModelOptFp8Config(ModelOptQuantConfigBase):
        @classmethod
        def get_min_capability(cls) -> int:
            return 80
"""

V0330 = {
    "CMakeLists.txt": V0330_CMAKE,
    "cmake/external_projects/deepgemm.cmake": DEEPGEMM,
    "cmake/external_projects/triton_kernels.cmake": TRITON_KERNELS,
    "requirements/build/cuda.txt": "-r common.txt\ntorch==2.14.0\n",
    "requirements/cuda.txt": "torch==2.14.0\ntorchaudio==2.11.0\n",
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=77.0.3", "torch == 2.14.0"]

        [project]
        requires-python = ">=3.11,<3.15"
    """,
    f"{QUANT}/__init__.py": """
        method_to_config = {"modelopt": ModelOptFp8Config, "fp8": Fp8Config}
    """,
    f"{QUANT}/modelopt.py": MODELOPT_0330,
}


def test_v0330_style(tmp_path: Path) -> None:
    f = read_facts(write_tree(tmp_path, V0330), "0.33.0")
    assert (f.torch, f.torch_evidence) == ("2.14.0", "CMakeLists.txt:3")
    assert [p.evidence for p in f.torch_pins] == [
        "CMakeLists.txt:3",
        "requirements/build/cuda.txt:2",
        "pyproject.toml:2",
        "requirements/cuda.txt:1",
    ]
    assert [r.min_nvcc for r in f.cuda_archs] == ["13.4", "13.0", "12.8", None]
    assert f.archs_for("12.4")[0] == "7.0"
    assert "12.1" in f.archs_for("12.9")
    assert "11.0" in f.archs_for("13.0") and "10.7" not in f.archs_for("13.0")
    assert "10.7" in f.archs_for("13.4")
    assert f.python == ("3.11", "3.12", "3.13", "3.14")
    assert f.requires_python == ">=3.11,<3.15"
    assert f.cutlass == "v4.7.1"
    ext = {e.name: e for e in f.external}
    assert set(ext) == {"cutlass", "deepgemm", "triton_kernels"}  # no ROCm-only aiter
    assert ext["deepgemm"].ref == "0820030756945b2daec208e8e8255268360f337d"
    assert ext["deepgemm"].repo == "https://github.com/vllm-project/DeepGEMM.git"
    assert ext["deepgemm"].env_var == "DEEPGEMM_SRC_DIR"
    assert ext["deepgemm"].evidence == "cmake/external_projects/deepgemm.cmake:16"
    assert ext["triton_kernels"].ref == "v3.5.1"  # the CUDA side, not ROCm's fork
    assert ext["triton_kernels"].repo == "https://github.com/triton-lang/triton.git"
    assert ext["triton_kernels"].env_var == "TRITON_KERNELS_SRC_DIR"
    assert f.modelopt == ModelOptFacts(True, 80, f"{QUANT}/modelopt.py:8")


# --- parsing details ------------------------------------------------------------------


def test_cmake_formatting_variants(tmp_path: Path) -> None:
    cmake = """
        CMAKE_MINIMUM_REQUIRED(VERSION 3.21...3.30)
        #[[ a bracket comment with set(TORCH_SUPPORTED_VERSION_CUDA "9.9.9") inside ]]
        # FetchContent_Declare(commented GIT_TAG nope)
        SET (PYTHON_SUPPORTED_VERSIONS 3.10;3.11 CACHE STRING "pythons")
        set(TORCH_SUPPORTED_VERSION_CUDA 2.5.1 CACHE STRING "torch")  # trailing comment
        if (${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL "12.8")
          set(CUDA_SUPPORTED_ARCHS
              "8.0;9.0"
              "10.0;12.0")
        ELSE ()
          set(CUDA_SUPPORTED_ARCHS 8.0;9.0)
        ENDIF ()
        if(VLLM_GPU_LANG STREQUAL "HIP")
          set(CUDA_SUPPORTED_ARCHS "gfx942")
        endif()
    """
    f = read_facts(write_tree(tmp_path, {"CMakeLists.txt": cmake}), "x")
    assert f.cmake == "3.21"
    assert f.python == ("3.10", "3.11")
    assert f.torch == "2.5.1"
    assert f.cuda_archs == (
        ArchRule("12.8", ("8.0", "9.0", "10.0", "12.0"), 7),
        ArchRule(None, ("8.0", "9.0"), 11),
    )
    assert f.external == ()


def test_else_of_a_cuda_condition_is_not_cuda(tmp_path: Path) -> None:
    cmake = """
        if(VLLM_GPU_LANG STREQUAL "CUDA")
          FetchContent_Declare(cutlass GIT_REPOSITORY https://x.invalid/c.git GIT_TAG v1)
        else()
          FetchContent_Declare(ck GIT_REPOSITORY https://x.invalid/ck.git GIT_TAG v2)
        endif()
    """
    f = read_facts(write_tree(tmp_path, {"CMakeLists.txt": cmake}), "x")
    assert [e.name for e in f.external] == ["cutlass"]
    assert f.external[0].env_var is None  # no *_SRC_DIR override in this tree


def test_torch_pin_falls_back_in_order(tmp_path: Path) -> None:
    files = {
        "CMakeLists.txt": "cmake_minimum_required(VERSION 3.26)\n",
        "requirements-build.txt": "cmake>=3.26\ntorch==2.4.0  # build\n",
        "requirements-cuda.txt": "torch == 2.4.0\n",
        "pyproject.toml": '[build-system]\nrequires = ["torch == 2.4.0"]\n',
    }
    f = read_facts(write_tree(tmp_path, files), "0.6.2")
    assert (f.torch, f.torch_evidence) == ("2.4.0", "requirements-build.txt:2")
    assert [p.evidence for p in f.torch_pins] == [
        "requirements-build.txt:2",
        "pyproject.toml:2",
        "requirements-cuda.txt:1",
    ]


def test_torch_pin_ignores_ranges_other_platforms_and_other_packages(tmp_path: Path) -> None:
    files = {
        "CMakeLists.txt": "project(x)\n",
        "requirements/build.txt": (
            "torchvision==0.21.0\n"
            "torch>=2.5\n"
            'torch==2.6.0+cpu; platform_machine == "aarch64"\n'
            "torch==2.6.0 ; platform_system == 'Linux'\n"
        ),
    }
    f = read_facts(write_tree(tmp_path, files), "x")
    assert (f.torch, f.torch_evidence) == ("2.6.0", "requirements/build.txt:4")


def test_torch_conflicts_are_reported(tmp_path: Path) -> None:
    files = {
        "CMakeLists.txt": 'set(TORCH_SUPPORTED_VERSION_CUDA "2.7.0")\n',
        "requirements/cuda.txt": "torch==2.7.1\n",
    }
    f = read_facts(write_tree(tmp_path, files), "x")
    assert f.torch == "2.7.0"
    assert [(p.version, p.evidence) for p in f.torch_conflicts()] == [
        ("2.7.1", "requirements/cuda.txt:1")
    ]


def test_no_pins_at_all(tmp_path: Path) -> None:
    f = read_facts(write_tree(tmp_path, {"CMakeLists.txt": "project(x)\n"}), "x")
    assert f.torch is None and f.torch_evidence is None and f.torch_conflicts() == ()
    assert f.cmake is None and f.cuda_archs == () and f.archs_for("12.4") == ()


def test_requires_python_falls_back_to_pkg_info(tmp_path: Path) -> None:
    files = {"CMakeLists.txt": "", "PKG-INFO": "Name: vllm\nRequires-Python: >=3.9\n"}
    f = read_facts(write_tree(tmp_path, files), "x")
    assert (f.requires_python, f.requires_python_evidence) == (">=3.9", "PKG-INFO:2")


# --- ModelOpt -------------------------------------------------------------------------


def test_modelopt_registered_without_a_readable_floor(tmp_path: Path) -> None:
    files = {
        "CMakeLists.txt": "",
        f"{QUANT}/__init__.py": 'X = {\n    "modelopt": ModelOptFp8Config,\n}\n',
        f"{QUANT}/modelopt.py": (
            "class ModelOptFp8Config(Base):\n"
            "    def get_min_capability(cls) -> int:\n"
            "        return FLOOR\n"
        ),
    }
    f = read_facts(write_tree(tmp_path, files), "x")
    assert f.modelopt == ModelOptFacts(True, None, f"{QUANT}/__init__.py:2")


def test_modelopt_floor_inherited_from_a_base_in_the_same_module(tmp_path: Path) -> None:
    files = {
        "CMakeLists.txt": "",
        f"{QUANT}/__init__.py": 'X = {"modelopt": ModelOptFp8Config}\n',
        f"{QUANT}/modelopt.py": (
            "class Base:\n"
            "    def get_min_capability(cls) -> int:\n"
            "        return 75\n"
            "class ModelOptFp8Config(Base):\n"
            "    pass\n"
        ),
    }
    f = read_facts(write_tree(tmp_path, files), "x")
    assert f.modelopt == ModelOptFacts(True, 75, f"{QUANT}/modelopt.py:3")


def test_modelopt_absent_when_only_mentioned(tmp_path: Path) -> None:
    files = {
        "CMakeLists.txt": "",
        f"{QUANT}/__init__.py": '# "modelopt": ModelOptFp8Config is coming\nX = {"fp8": F}\n',
    }
    assert read_facts(write_tree(tmp_path, files), "x").modelopt.supported is False


# --- API edges ------------------------------------------------------------------------


def test_not_a_vllm_tree(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as exc:
        read_facts(tmp_path, "0.8.5")
    assert exc.value.fix


def test_to_json_shape(tmp_path: Path) -> None:
    f = read_facts(write_tree(tmp_path, V085), "0.8.5")
    d = f.to_json()
    json.dumps(d)  # plain JSON types only
    assert {
        "vllm",
        "torch",
        "cutlass",
        "external",
        "cuda_archs",
        "python",
        "requires_python",
        "cmake",
        "modelopt",
        "evidence",
    } <= set(d)
    assert d["external"] == {
        "cutlass": "v3.9.0",
        "flashmla": "575f7724b9762f265bbee5889df9c7d630801845",
        "vllm-flash-attn": "8798f27777fb57f447070301bf33a9f9c607f491",
    }
    assert d["cuda_archs"] == [{"min_nvcc": None, "archs": list(f.cuda_archs[0].archs), "line": 4}]
    assert d["modelopt"] == {
        "supported": True,
        "fp8_min_capability": 89,
        "evidence": f"{QUANT}/modelopt.py:10",
    }
    ev = d["evidence"]
    assert isinstance(ev, dict)
    assert ev["torch"] == "CMakeLists.txt:6"
    assert ev["external"]["flashmla"]["env_var"] == "FLASH_MLA_SRC_DIR"


def test_archs_for_takes_the_first_matching_rule() -> None:
    f = SourceFacts(
        vllm="x",
        torch=None,
        torch_evidence=None,
        cutlass=None,
        external=(),
        cuda_archs=(
            ArchRule("13.0", ("7.5", "11.0"), 3),
            ArchRule("12.8", ("7.0", "10.1"), 5),
            ArchRule(None, ("7.0",), 7),
        ),
        python=(),
        requires_python=None,
        cmake=None,
        modelopt=ModelOptFacts(False, None, None),
    )
    assert f.archs_for("13.1") == ("7.5", "11.0")
    assert f.archs_for("13.0") == ("7.5", "11.0")
    assert f.archs_for("12.9") == ("7.0", "10.1")
    assert f.archs_for("12.8.93") == ("7.0", "10.1")
    assert f.archs_for("12.4") == ("7.0",)
    assert f.archs_for("not-a-version") == ("7.0",)


# --- what a reader cannot read: a gap naming file:line, never an exception ------------


def test_unreadable_facts_are_gaps_naming_file_and_line(tmp_path: Path) -> None:
    files = {
        "CMakeLists.txt": """
            cmake_minimum_required(VERSION ${MIN_CMAKE})
            set(TORCH_SUPPORTED_VERSION_CUDA "${TORCH_FROM_ELSEWHERE}")
            if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER 12.8)
              set(CUDA_SUPPORTED_ARCHS "9.0;${NEW_ARCHS};12.0")
            endif()
        """,
        "pyproject.toml": "[project\nrequires-python = '>=3.10'\n",
        "requirements/cuda.txt": "torch==2.14.0\n",
        f"{QUANT}/__init__.py": "type Config = dict[str, object]\nX = {'modelopt': M}\n",
    }
    f = read_facts(write_tree(tmp_path, files), "9.9.9")
    by = {g.evidence: g for g in f.gaps}
    assert "torch pin '${TORCH_FROM_ELSEWHERE}' is not a version" in by["CMakeLists.txt:2"].what
    assert f.torch == "2.14.0"  # the next place that pins it, read as before
    assert "is not a version" in by["CMakeLists.txt:1"].what and f.cmake is None
    arch = [g for g in f.gaps if g.evidence == "CMakeLists.txt:4"]
    assert {g.rests for g in arch} == {"the arch rule"}
    assert any("${NEW_ARCHS}" in g.what for g in arch)
    # any nvcc condition is the evaluator's: VERSION_GREATER 12.8 holds from 12.8.1 on
    assert f.cuda_archs[0].min_nvcc == "12.8.1" and len(arch) == 1
    assert f.cuda_archs[0].archs == ("9.0", "12.0")
    assert any(g.evidence == "pyproject.toml" for g in f.gaps)
    if sys.version_info < (3, 12):  # PEP 695 `type X = ...` is 3.12 syntax
        g = by[f"{QUANT}/__init__.py:1"]
        assert g.rests == "the ModelOpt FP8 column" and "SyntaxError" in g.what
    assert f.to_json()["gaps"]


def test_a_tree_it_reads_whole_has_no_gaps(tmp_path: Path) -> None:
    assert read_facts(write_tree(tmp_path, V085), "0.8.5").gaps == ()
