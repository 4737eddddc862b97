from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix import knowledge
from vllm_matrix.errors import ConfigError
from vllm_matrix.knowledge import TorchFacts
from vllm_matrix.torchwheel import parse_arch_flags


def test_shipped_data_loads_and_has_sources() -> None:
    k = knowledge.load()
    assert "12.4" in k.nvcc and "13.0" in k.nvcc
    assert {"2.3.0", "2.6.0", "2.7.1", "2.8.0", "2.11.0"} <= set(k.torch)
    assert all(f.source for f in k.nvcc.values()) and all(f.source for f in k.torch.values())
    assert all(s.source.startswith("https://") for s in k.api)


def test_nvcc_12_4_ends_at_sm90_and_13_0_starts_at_sm75() -> None:
    k = knowledge.load()
    assert k.nvcc["12.4"].archs[-1] == "9.0" and not k.nvcc["12.4"].can_target("12.0")
    assert k.nvcc["13.0"].archs[0] == "7.5" and k.nvcc["13.0"].can_target("12.0f")
    assert k.min_nvcc_for("12.0") == "12.8"
    assert k.nvcc_for("12.4.131") is k.nvcc["12.4"]


def _tf(sass: tuple[str, ...], ptx: tuple[str, ...] = ()) -> TorchFacts:
    return TorchFacts("x", "cu", "12.4", sass, ptx, ("3.12",), "test")


@pytest.mark.parametrize(
    ("sass", "ptx", "arch", "ok"),
    [
        (("8.0", "8.6", "9.0"), (), "8.9", True),  # sm_86 SASS runs on 8.9
        (("8.0", "8.6", "9.0"), (), "12.0", False),  # no sm_12x SASS, no PTX
        (("8.0", "9.0"), ("9.0",), "12.0", True),  # PTX JITs forward
        (("9.0",), (), "8.6", False),  # SASS does not run backwards
        (("10.0", "12.0"), (), "12.0f", True),
    ],
)
def test_torch_runs_on(sass: tuple[str, ...], ptx: tuple[str, ...], arch: str, ok: bool) -> None:
    assert _tf(sass, ptx).runs_on(arch) is ok


def test_min_torch_for_sm120_is_cu128() -> None:
    t = knowledge.load().min_torch_for("12.0")
    assert t is not None and t.version == "2.8.0" and t.local == "cu128"


def test_parse_arch_flags() -> None:
    assert parse_arch_flags("sm_50 sm_90 compute_90") == (("5.0", "9.0"), ("9.0",))
    assert parse_arch_flags("sm_100 sm_120") == (("10.0", "12.0"), ())


def test_unknown_key_in_data_file_is_named(tmp_path: Path) -> None:
    p = tmp_path / "toolchains.toml"
    p.write_text('[nvcc."12.4"]\narchs = ["9.0"]\nmax_gcc = 13\nsorce = "x"\n')
    with pytest.raises(ConfigError, match=r"toolchains.toml:4: unknown key 'sorce'.*"):
        knowledge.load_toolchains(p)
    with pytest.raises(ConfigError, match="did you mean 'source'"):
        knowledge.load_toolchains(p)
