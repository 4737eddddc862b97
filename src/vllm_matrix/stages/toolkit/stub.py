"""A driver stub (lib64/stubs/libcuda.so) for toolkits that ship none (the CUDA wheels)."""

from __future__ import annotations

import re
from pathlib import Path

from vllm_matrix.infra import proc
from vllm_matrix.infra.errors import ToolError

# The driver API's entry points as cuda.h declares them, after its version macros
# (cuCtxCreate -> cuCtxCreate_v2): what NVIDIA's own stub exports.
_DRIVER_FN = re.compile(r"\bCUresult\s+(?:CUDAAPI\s+)?(cu[A-Z]\w*)\s*\(")
CUDA_ERROR_STUB_LIBRARY = 34  # cuda.h: "the CUDA driver is a stub library"


def make_driver_stub(root: Path) -> int:
    """``lib64/stubs/libcuda.so`` (soname libcuda.so.1) with every driver API function of
    the toolkit's cuda.h, each returning CUDA_ERROR_STUB_LIBRARY, as NVIDIA's stub does:
    enough to link against and to load an extension where no driver is installed."""
    header = root / "include" / "cuda.h"
    found: set[str] = set()
    # the default names and the per-thread-default-stream ones (_ptds/_ptsz) ...
    for extra in ([], ["-DCUDA_API_PER_THREAD_DEFAULT_STREAM=1"]):
        argv = ["gcc", "-E", *extra, "-I", str(root / "include"), str(header)]
        found |= set(_DRIVER_FN.findall(proc.run(argv, stderr="drop").output))
    # ... and as written, with the graphics-interop headers (they need GL/EGL headers to
    # preprocess; their entry points are unversioned)
    for h in ("cuda.h", "cudaGL.h", "cudaEGL.h", "cudaVDPAU.h", "cudaProfiler.h"):
        if (root / "include" / h).is_file():
            found |= set(_DRIVER_FN.findall((root / "include" / h).read_text()))
    names = sorted(found)
    if not names:
        raise ToolError(
            f"no driver API functions found in {header}",
            fix="the header's layout changed: update toolkit._DRIVER_FN",
        )
    stubs = root / "lib64" / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    src = stubs / "libcuda_stub.c"
    src.write_text(
        "".join(f"int {n}(void) {{ return {CUDA_ERROR_STUB_LIBRARY}; }}\n" for n in names)
    )
    proc.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", stubs / "libcuda.so", src]
    )
    src.unlink()
    return len(names)
