"""knowledge/data/toolchains.toml and api.toml agree with the real tools and wheels."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import skip_or_fail
from packaging.version import Version

from vllm_matrix.knowledge import toolchains
from vllm_matrix.sources import torchwheel

pytestmark = pytest.mark.integration
K = toolchains.load()


# Measured entries of the configured index's default wheels; "documented" variants come
# from indexes this machine cannot reach (tests/integration/test_torch_variant.py reads
# them where one is configured).
MEASURED = sorted(
    (k for k, f in K.torch.items() if f.basis == toolchains.MEASURED and f.default), key=Version
)


@pytest.mark.parametrize("version", MEASURED)
def test_torch_entry_matches_the_real_wheel(need_index: None, version: str) -> None:
    want = K.torch[version]
    got = torchwheel.read_facts(version)
    assert (got.local, got.cuda, got.sass, got.ptx, got.pythons) == (
        want.local,
        want.cuda,
        want.sass,
        want.ptx,
        want.pythons,
    ), f"update with: inv derive-torch --version {version}"
    if want.cxx11_abi is not None:
        assert got.cxx11_abi == want.cxx11_abi


@pytest.mark.parametrize("sym", K.api, ids=lambda s: s.name)
def test_api_symbol_appears_in_the_stated_torch(
    need_index: None, sym: toolchains.ApiSymbol
) -> None:
    older = [v for v in MEASURED if Version(v) < Version(sym.torch)]
    assert older, "need an older torch entry to compare with"
    assert torchwheel.has_member(sym.torch, sym.header), f"{sym.header} missing in {sym.torch}"
    assert not torchwheel.has_member(older[-1], sym.header), (
        f"{sym.header} already in {older[-1]}: {sym.name} is older than {sym.torch}"
    )


def nvcc_facts(root: Path) -> tuple[str, tuple[str, ...], int | None]:
    nvcc = root / "bin" / "nvcc"
    ver = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"release (\d+\.\d+)", ver)
    assert m
    out = subprocess.run(
        [nvcc, "--list-gpu-arch"], capture_output=True, text=True, check=True
    ).stdout
    nums = sorted({int(x) for x in re.findall(r"compute_(\d+)", out)})
    archs = tuple(f"{n // 10}.{n % 10}" for n in nums)
    hc = (root / "include" / "crt" / "host_config.h").read_text()
    g = re.search(r"#if __GNUC__ > (\d+)", hc)
    return m.group(1), archs, int(g.group(1)) if g else None


def _sorted(archs: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(archs, key=lambda a: Version(a)))


def test_system_nvcc_matches_data() -> None:
    if not shutil.which("nvcc") and not Path("/usr/local/cuda/bin/nvcc").exists():
        skip_or_fail("no system CUDA toolkit on this machine", machine=True)
    root = Path("/usr/local/cuda")
    version, archs, max_gcc = nvcc_facts(root)
    entry = K.nvcc.get(version)
    assert entry is not None, f"nvcc {version} missing from knowledge/data/toolchains.toml"
    assert _sorted(entry.archs) == archs
    assert entry.max_gcc == max_gcc


@pytest.mark.parametrize(("provider", "version"), [("debian", "12.4"), ("pypi", "13.0")])
def test_provided_nvcc_matches_data(need_index: None, provider: str, version: str) -> None:
    from vllm_matrix.stages import toolkit

    tk = toolkit.provide(provider, version)
    got_version, archs, max_gcc = nvcc_facts(tk.root)
    entry = K.nvcc[version]
    assert got_version == version
    assert _sorted(entry.archs) == archs, (
        f'knowledge/data/toolchains.toml [nvcc."{version}"] is stale'
    )
    assert entry.max_gcc == max_gcc
