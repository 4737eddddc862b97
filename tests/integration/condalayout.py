"""A conda-forge style CUDA env assembled from a real toolkit's files (for tests)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vllm_matrix.stages.toolkit import conda


def _link_or_copy(src: str, dst: str) -> object:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


CONDA_PROFILE = """\
TOP              = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES        +=  "-I$(TOP)/targets/x86_64-linux/include" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/targets/x86_64-linux/lib/stubs" \
"-L$(TOP)/targets/x86_64-linux/lib"
CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
"""


def conda_layout(src: Path, prefix: Path) -> Path:
    """A conda-forge style env built from a real toolkit's files (hard links)."""
    target = prefix / "targets" / "x86_64-linux"
    (prefix / "bin").mkdir(parents=True)
    for tool in conda.CUDA_BIN_TOOLS:
        s = src / "bin" / tool
        if s.is_dir():
            shutil.copytree(s, prefix / "bin" / tool, copy_function=_link_or_copy)
        elif s.exists():
            _link_or_copy(str(s), str(prefix / "bin" / tool))
    (prefix / "bin" / "nvcc.profile").write_text(CONDA_PROFILE)
    (prefix / "bin" / "python3").write_text("#!/bin/sh\n")
    shutil.copytree(src / "nvvm", prefix / "nvvm", copy_function=_link_or_copy)
    shutil.copytree(src / "include", target / "include", copy_function=_link_or_copy)
    shutil.copytree(src / "lib64", target / "lib", symlinks=True, copy_function=_link_or_copy)
    (prefix / "lib").mkdir()
    (prefix / "lib" / "libcudart.so").symlink_to("../targets/x86_64-linux/lib/libcudart.so")
    return prefix
