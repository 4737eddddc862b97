"""Fixture texts and fakes shared by the toolkit unit tests (test_toolkit_*.py)."""

from __future__ import annotations

from pathlib import Path

# What Debian 12.4 (trixie) prints; paths as in its nvcc.profile.
DEBIAN_PROFILE = """\
NVVMIR_LIBRARY_DIR = /usr/lib/nvidia-cuda-toolkit/libdevice
PATH\t\t+= /usr/lib/nvidia-cuda-toolkit/bin:
LIBRARIES\t=+ $(_SPACE_) -L/usr/lib/x86_64-linux-gnu/stubs -L/usr/lib/x86_64-linux-gnu
"""
WHEEL_PROFILE = """\
TOP              = $(_HERE_)/..
CICC_PATH        = $(TOP)/nvvm/bin
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib:
PATH            += $(CICC_PATH):$(_HERE_):
INCLUDES        +=  "-I$(TOP)/$(_TARGET_DIR_)/include" $(_SPACE_)
SYSTEM_INCLUDES +=  "-isystem" "$(TOP)/$(_TARGET_DIR_)/include/cccl" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/$(_TARGET_DIR_)/lib$(_TARGET_SIZE_)/stubs"
"""
HOST_CONFIG_124 = """
#if defined(__GNUC__)

#if __GNUC__ > 13

#error -- unsupported GNU version! gcc versions later than 13 are not supported!

#endif /* __GNUC__ > 13 */
"""


def touch(path: Path, text: str = "x", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def fake_nvcc(bindir: Path, release: str = "12.4", full: str = "12.4.131") -> Path:
    """A shell script answering --version and --list-gpu-arch like nvcc does."""
    return touch(
        bindir / "nvcc",
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --version) echo "Cuda compilation tools, release {release}, V{full}";;\n'
        '  --list-gpu-arch) printf "compute_90\\ncompute_50\\ncompute_75\\n";;\n'
        "esac\n",
        0o755,
    )
