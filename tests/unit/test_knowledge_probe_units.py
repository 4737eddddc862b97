"""probe_units.toml: the probe's knowledge file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.knowledge import probe_units


def test_knowledge_rejects_unknown_keys(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[bindings]\ncandidates = ["a"]\nsoruce = "x"\n')
    with pytest.raises(ConfigError, match="did you mean 'source'"):
        probe_units.load_knowledge(bad)
    k = probe_units.load_knowledge()
    assert k.bindings[0] == "csrc/torch_bindings.cpp"
    assert k.externals[0].name == "cutlass" and "cute/" in k.externals[0].include_prefixes
