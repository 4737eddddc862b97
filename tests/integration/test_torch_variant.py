"""A torch variant's facts read from its real wheel, where its index is reachable.

PyTorch's per-CUDA indexes are configuration (VLLM_MATRIX_TORCH_INDEX_CU128=<URL>, or
[torch-index] in matrix.toml); where none is configured or it does not answer, the
documented entries stay "documented, not measured here". Where none is configured (this
machine kind reaches no PyTorch index: a genuine lack, like a GPU) the test skips saying so;
a configured index that does not answer fails with CI=true.
"""

from __future__ import annotations

import pytest
from conftest import skip_or_fail

from vllm_matrix.infra import config, index
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import toolchains
from vllm_matrix.sources import torchwheel

pytestmark = pytest.mark.integration
K = toolchains.load()
DOCUMENTED = sorted(
    (k for k, f in K.torch.items() if f.basis == toolchains.DOCUMENTED),
    key=lambda k: (config.split_torch(k)[1] or "", k),
)


def _index_for(variant: str) -> str:
    found = config.torch_index_for(variant)
    if found is None:
        var = config.TORCH_INDEX_ENV.format(variant.upper())
        skip_or_fail(
            f"no {variant} index configured ({var} unset): the entry stays documented", machine=True
        )
    url = found[0]
    try:
        index.project_files("torch", url)
    except MatrixError as exc:
        skip_or_fail(f"the configured {variant} index does not answer: {exc.message}")
    return url


@pytest.mark.parametrize("spec", DOCUMENTED)
def test_documented_variant_matches_its_real_wheel(spec: str) -> None:
    variant = config.split_torch(spec)[1]
    assert variant is not None
    url = _index_for(variant)
    got = torchwheel.read_facts(spec, url)
    want = K.torch[spec]
    assert (got.local, got.cuda, got.sass, got.ptx) == (
        want.local,
        want.cuda,
        want.sass,
        want.ptx,
    ), (
        f"measured {spec} differs from the documented entry: replace it with the output of "
        f'`inv derive-torch --version {spec}` (basis = "measured")'
    )
    assert got.cxx11_abi == want.cxx11_abi


def test_default_wheel_is_the_variant_it_names(need_index: None) -> None:
    # PyPI's torch 2.6.0 is the +cu124 build and pre-C++11 ABI; 2.7.1 the +cu126 build,
    # C++11 ABI: read from the real wheels (version.py, libtorch_python.so).
    old = torchwheel.read_facts("2.6.0")
    assert (old.local, old.cuda, old.cxx11_abi) == ("cu124", "12.4", False)
    assert K.torch_facts("2.6.0+cu124") is K.torch["2.6.0"]
    new = torchwheel.read_facts("2.7.1")
    assert (new.local, new.cxx11_abi) == ("cu126", True)
    assert "12.0" not in new.sass  # the bare 2.7.1 has no Blackwell code: +cu128 does
