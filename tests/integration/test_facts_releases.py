"""facts.read_facts on real vLLM sdists, checked against the published wheels.

Ground truth for the torch pin is the ``torch==`` requirement in the metadata of the
same release's manylinux x86_64 wheel (index.wheel_requires: PEP 658 file, or METADATA
read from the wheel by range requests).
"""

from __future__ import annotations

from functools import cache

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from vllm_matrix.infra import index
from vllm_matrix.infra.errors import SourceError
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages.facts import SourceFacts, read_facts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]

SPREAD = [
    "0.4.1",
    "0.4.2",
    "0.5.5",
    "0.6.6",
    "0.7.3",
    "0.8.5",
    "0.9.2",
    "0.10.1",
    "0.11.0",
    "0.14.1",
    "0.20.0",
    "0.26.0",
    "0.33.0",
]


@cache
def _files() -> tuple[index.IndexFile, ...]:
    return tuple(index.project_files("vllm"))


@cache
def wheel_torch_pin(version: str) -> str | None:
    wheels = sorted(
        (
            f
            for f in _files()
            if f.kind == "wheel"
            and f.version == Version(version)
            and "manylinux" in f.filename
            and "x86_64" in f.filename
        ),
        key=lambda f: f.filename,
    )
    assert wheels, f"no manylinux x86_64 wheel of vLLM {version} on the index"
    env = {"platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux"}
    for r in index.wheel_requires(wheels[0]):
        req = Requirement(r)
        if req.name == "torch" and (req.marker is None or req.marker.evaluate(env)):
            (spec,) = req.specifier
            assert spec.operator == "=="
            return spec.version
    return None


@cache
def facts_of(version: str) -> SourceFacts:
    tree = source.sdist_tree(version)
    return read_facts(tree.root, tree.version)


@pytest.mark.parametrize("version", SPREAD)
def test_torch_pin_matches_the_published_wheel(version: str) -> None:
    f = facts_of(version)
    assert f.torch is not None
    assert f.torch == wheel_torch_pin(version), f.torch_evidence
    assert f.torch_conflicts() == ()
    assert f.cuda_archs and f.cmake and f.python and f.requires_python


def test_v085_known_values() -> None:
    f = facts_of("0.8.5")
    assert f.torch == "2.6.0"
    assert f.cutlass == "v3.9.0"
    ext = {e.name: e for e in f.external}
    assert ext["vllm-flash-attn"].ref == "8798f27777fb57f447070301bf33a9f9c607f491"
    assert ext["vllm-flash-attn"].env_var == "VLLM_FLASH_ATTN_SRC_DIR"
    assert ext["flashmla"].ref == "575f7724b9762f265bbee5889df9c7d630801845"
    assert ext["flashmla"].env_var == "FLASH_MLA_SRC_DIR"
    assert ext["flashmla"].evidence == "cmake/external_projects/flashmla.cmake:22"
    assert ext["cutlass"].env_var == "VLLM_CUTLASS_SRC_DIR"
    assert f.cmake == "3.26"
    assert f.modelopt.supported and f.modelopt.fp8_min_capability == 89
    assert f.modelopt.evidence and f.modelopt.evidence.startswith(
        "vllm/model_executor/layers/quantization/modelopt.py:"
    )


def test_v0101_known_values() -> None:
    f = facts_of("0.10.1")
    assert f.torch == "2.7.1"
    assert f.cutlass == "v4.0.0"
    assert "12.0" not in f.archs_for("12.4")
    assert "12.0" in f.archs_for("12.8")


def test_v042_known_values() -> None:
    f = facts_of("0.4.2")
    assert f.torch == "2.3.0"
    assert f.cmake == "3.21"
    assert f.external == () and f.cutlass is None
    assert not f.modelopt.supported


def test_v0330_known_values() -> None:
    f = facts_of("0.33.0")
    assert f.torch == "2.14.0"
    assert [r.min_nvcc for r in f.cuda_archs] == ["13.4", "13.0", "12.8", None]


def test_release_without_sdist_raises_with_a_fix() -> None:
    with pytest.raises(SourceError) as exc:
        tree = source.sdist_tree("0.4.0")
        read_facts(tree.root, tree.version)
    assert exc.value.fix
