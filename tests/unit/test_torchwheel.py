from __future__ import annotations

from vllm_matrix.sources.torchwheel import read_version_py

# torch/version.py as the wheels write it: 2.1-2.5 annotate cuda, 2.6+ do too, CPU builds None.
CUDA_124 = """__version__ = '2.6.0+cu124'
debug = False
cuda: Optional[str] = '12.4'
git_version = '1eba9b3aa3c43f86f4a2c807ac8e12c4a7767340'
hip: Optional[str] = None
"""
OLD = "__version__ = '2.1.0+cu121'\ndebug = False\ncuda = '12.1'\n"
CPU = "__version__ = '2.6.0+cpu'\ncuda: Optional[str] = None\n"


def test_read_version_py_reads_version_and_cuda() -> None:
    assert read_version_py(CUDA_124) == ("2.6.0+cu124", "12.4")
    assert read_version_py(OLD) == ("2.1.0+cu121", "12.1")
    assert read_version_py(CPU) == ("2.6.0+cpu", None)
    assert read_version_py("") == (None, None)
