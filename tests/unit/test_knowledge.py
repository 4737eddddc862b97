from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.knowledge import toolchains
from vllm_matrix.knowledge.toolchains import TorchFacts
from vllm_matrix.sources.torchwheel import parse_arch_flags


def test_shipped_data_loads_and_has_sources() -> None:
    k = toolchains.load()
    assert "12.4" in k.nvcc and "13.0" in k.nvcc
    assert {"2.3.0", "2.6.0", "2.7.1", "2.8.0", "2.11.0"} <= set(k.torch)
    assert all(f.source for f in k.nvcc.values()) and all(f.source for f in k.torch.values())
    assert all(s.source.startswith("https://") for s in k.api)


def test_nvcc_12_4_ends_at_sm90_and_13_0_starts_at_sm75() -> None:
    k = toolchains.load()
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
    # with the per-CUDA variants known, the oldest torch with sm_120 code is 2.7.0+cu128
    # (documented), not PyPI's default 2.8.0 (measured)
    t = toolchains.load().min_torch_for("12.0")
    assert t is not None and t.label == "2.7.0+cu128" and t.basis == "documented"


@pytest.mark.parametrize(
    ("spec", "label", "basis"),
    [
        ("2.6.0", "2.6.0+cu124", "measured"),  # the index's default wheel
        ("2.6.0+cu124", "2.6.0+cu124", "measured"),  # the variant IS the default wheel
        ("2.6.0+cu118", "2.6.0+cu118", "documented"),
        ("2.6.0+cu126", "2.6.0+cu126", "documented"),
        ("2.7.0+cu128", "2.7.0+cu128", "documented"),
        ("2.7.1+cu118", "2.7.1+cu118", "documented"),
        ("2.7.1+cu126", "2.7.1+cu126", "measured"),
        ("2.7.1+cu128", "2.7.1+cu128", "documented"),
        ("2.8.0+cu126", "2.8.0+cu126", "documented"),
        ("2.8.0+cu128", "2.8.0+cu128", "measured"),
        ("2.8.0+cu129", "2.8.0+cu129", "documented"),
        ("2.9.0+cu130", "2.9.0+cu130", "documented"),
        ("2.10.0+cu126", "2.10.0+cu126", "documented"),
        ("2.11.0+cu128", "2.11.0+cu128", "documented"),
        ("2.11.0+cu130", "2.11.0+cu130", "measured"),
    ],
)
def test_torch_facts_lookup_by_variant(spec: str, label: str, basis: str) -> None:
    f = toolchains.load().torch_facts(spec)
    assert f is not None and f.label == label and f.basis == basis
    assert (
        f.cuda
        == {
            "cu118": "11.8",
            "cu124": "12.4",
            "cu126": "12.6",
            "cu128": "12.8",
            "cu129": "12.9",
            "cu130": "13.0",
        }[f.local]
    )
    if basis == "documented":
        assert "not measured here" in f.source and f.cxx11_abi is not None


def test_unknown_variant_has_no_facts() -> None:
    k = toolchains.load()
    assert k.torch_facts("2.7.1+cu130") is None and k.torch_facts("9.9.9") is None


def test_variant_arch_lists() -> None:
    k = toolchains.load()
    cu128 = k.torch_facts("2.7.1+cu128")
    assert cu128 is not None and cu128.runs_on("12.0") and not cu128.runs_on("7.0")
    assert not k.torch_facts("2.7.1").runs_on("12.0")  # type: ignore[union-attr]
    # 2.11's cu128 build drops sm_70; 2.10's keeps it
    assert not k.torch_facts("2.11.0+cu128").runs_on("7.0")  # type: ignore[union-attr]
    assert k.torch_facts("2.10.0").runs_on("7.0")  # type: ignore[union-attr]
    assert [f.label for f in k.variants_of("2.7.1")] == [
        "2.7.1+cu126",
        "2.7.1+cu118",
        "2.7.1+cu128",
    ]


def test_variant_key_must_match_local(tmp_path: Path) -> None:
    p = tmp_path / "toolchains.toml"
    p.write_text('[torch."2.7.1+cu128"]\nlocal = "cu126"\ncuda = "12.8"\nsource = "x"\n')
    with pytest.raises(ConfigError, match="key says 'cu128'"):
        toolchains.load_toolchains(p)


def test_provider_suites_and_min_major(tmp_path: Path) -> None:
    k = toolchains.load()
    assert list(k.providers["debian"].suites.items()) == [("12.4", "trixie"), ("11.8", "bookworm")]
    assert k.providers["pypi"].min_major == 13 and k.providers["debian"].min_major == 0
    p = tmp_path / "toolchains.toml"
    p.write_text('[provider.debian]\nsuites = { "12.4" = 12 }\n')
    with pytest.raises(ConfigError, match=r"'suites' in \[provider.debian\] must be a str"):
        toolchains.load_toolchains(p)


def test_provider_for_is_the_first_provider_listing_the_version(tmp_path: Path) -> None:
    k = toolchains.load()
    assert [k.provider_for(v) for v in ("12.4", "11.8", "13.0", "13.5")] == [
        "debian",
        "debian",
        "pypi",
        "pypi",
    ]
    assert k.provider_for("12.8") == "system"  # no provider assembles it: an installed one
    # A provider the data adds is chosen (no list of provider names in the code), and where
    # two list a version the data's order decides.
    p = tmp_path / "toolchains.toml"
    p.write_text(
        '[provider.conda-prefix]\nversions = { "12.8" = "x", "12.4" = "y" }\n'
        '[provider.debian]\nversions = { "12.4" = "z" }\n'
    )
    nvcc, torch, providers = toolchains.load_toolchains(p)
    mine = toolchains.Knowledge(nvcc, torch, providers, ())
    assert [mine.provider_for(v) for v in ("12.8", "12.4", "13.0")] == [
        "conda-prefix",
        "conda-prefix",
        "system",
    ]


def test_nvcc_family_and_arch_specific_targets() -> None:
    k = toolchains.load()
    assert k.nvcc["12.8"].can_target("12.0a") and not k.nvcc["12.8"].can_target("12.0f")
    assert k.nvcc["12.9"].can_target("12.0f") and k.nvcc["12.9"].can_target("12.1")
    assert not k.nvcc["12.8"].can_target("12.1") and not k.nvcc["12.8"].can_target("10.3")
    assert k.min_nvcc_for("12.0f") == "12.9"  # NVIDIA introduced f targets in 12.9
    assert k.min_nvcc_for("10.3") == "12.9" and k.min_nvcc_for("12.1") == "12.9"
    assert k.min_nvcc_for("11.0") == "13.0" and k.min_nvcc_for("10.7") == "13.4"
    assert {"12.0", "12.2", "12.3", "12.5", "13.1"} <= set(k.nvcc)


def test_excluded_arch_names_the_side() -> None:
    k = toolchains.load()
    assert k.nvcc["13.0"].excludes_side("7.0") == "its archs start at compute_75"
    assert k.nvcc["12.4"].excludes_side("12.0") == "its archs end at compute_90"
    assert "family (f)" in k.nvcc["12.8"].excludes_side("12.0f")


def test_parse_arch_flags() -> None:
    assert parse_arch_flags("sm_50 sm_90 compute_90") == (("5.0", "9.0"), ("9.0",))
    assert parse_arch_flags("sm_100 sm_120") == (("10.0", "12.0"), ())


def test_unknown_key_in_data_file_is_named(tmp_path: Path) -> None:
    p = tmp_path / "toolchains.toml"
    p.write_text('[nvcc."12.4"]\narchs = ["9.0"]\nmax_gcc = 13\nsorce = "x"\n')
    with pytest.raises(ConfigError, match=r"toolchains.toml:4: unknown key 'sorce'.*"):
        toolchains.load_toolchains(p)
    with pytest.raises(ConfigError, match="did you mean 'source'"):
        toolchains.load_toolchains(p)


def test_vllm_pins_data_is_generated_and_spot_on() -> None:
    from vllm_matrix.knowledge import pins

    p = pins.load()
    assert len(p) >= 75
    assert (p["0.4.2"], p["0.8.5"], p["0.10.1"], p["0.10.2"], p["0.33.0"]) == (
        "2.3.0",
        "2.6.0",
        "2.7.1",
        "2.8.0",
        "2.14.0",
    )
    assert pins.data_path().read_text().startswith("# Generated by `inv derive-pins`")
