"""Fast tests of provide()'s checks before any provider runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.stages import toolkit


def test_unknown_provider_did_you_mean() -> None:
    with pytest.raises(ConfigError) as exc:
        toolkit.provide("pypy", "13.0")
    assert "pypy" in exc.value.message
    assert "did you mean 'pypi'" in str(exc.value.fix)


def test_unknown_provider_far_off_lists_all() -> None:
    with pytest.raises(ConfigError) as exc:
        toolkit.provide("homebrew", "13.0")
    assert "conda-prefix" in str(exc.value.fix)


@pytest.mark.parametrize("bad", ["12", "12.4.1", "cu124", ""])
def test_version_must_be_major_minor(bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        toolkit.provide("debian", bad)
    assert exc.value.fix


def test_path_only_for_existing_installs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        toolkit.provide("debian", "12.4", path=tmp_path)
    assert "system" in str(exc.value.fix)
