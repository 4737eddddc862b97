"""CUDA toolkit providers: each yields a CUDA root in the standard layout.

Standard layout (what CMake, torch's cpp_extension and vLLM's setup.py expect of
CUDA_HOME)::

    bin/nvcc  bin/nvcc.profile (relocatable: every path from $(_HERE_))
    nvvm/bin/cicc  nvvm/libdevice/libdevice.10.bc
    include/  (cuda_runtime.h, crt/host_config.h, nv/target ...)
    lib64/    (libcudart*, stubs/)

Providers:
  debian        Debian's non-free nvidia-cuda-toolkit (.debs fetched with a private
                apt state, unpacked with dpkg -x, rearranged)
  pypi          NVIDIA's CUDA 13+ component wheels, unzipped and merged
  system        an existing install (explicit path, $CUDA_HOME, /usr/local/cuda-X.Y,
                /usr/local/cuda)
  conda-prefix  an existing conda/pixi env, seen through a symlink view

Cache layout (under cache_root(), or ``cache``):
  toolkits/<provider>-<version>/    an assembled root, renamed into place when complete;
                                    MARKER inside records the finished Toolkit
  downloads/debian/<suite>/*.deb    .debs, sha256-checked against apt's Packages index
  downloads/pypi/*.whl              wheels, sha256-checked against the package index
  apt/<suite>/                      private apt sources list, lists and cache

Modules: base (the Toolkit record, nvcc parsing, nvcc.profile, the cache), dispatch
(provide, current_toolkit), one per provider (debian, pypi, system, conda), files (moves
and wheel unpacking shared by the providers), stub (the driver stub the wheels lack).
Debian's private apt state is vllm_matrix.infra.apt.

May import: knowledge, infra.
"""

from vllm_matrix.stages.toolkit.base import Toolkit
from vllm_matrix.stages.toolkit.dispatch import current_toolkit, provide

__all__ = ["Toolkit", "current_toolkit", "provide"]
