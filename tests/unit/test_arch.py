"""infra/arch.py: every arch spelling the tool meets (cells, matrix.toml, nvcc,
cuobjdump, torch's arch flags and TORCH_CUDA_ARCH_LIST, cell ids), and CUDA's rules."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from vllm_matrix.infra.arch import Arch, arch_tag, normalize_arch, parse_arch_list
from vllm_matrix.infra.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("sm_90", "9.0"),
        ("90", "9.0"),
        ("9.0", "9.0"),
        ("sm_90a", "9.0a"),
        ("12.0f", "12.0f"),
        ("120", "12.0"),
        ("compute_100", "10.0"),
    ],
)
def test_normalize_arch(text: str, expect: str) -> None:
    assert normalize_arch(text) == expect


def test_arch_tag() -> None:
    assert arch_tag("12.0f") == "sm120f" and arch_tag("9.0") == "sm90"


def test_parse_arch_list() -> None:
    assert parse_arch_list("9.0") == ("9.0",)
    assert parse_arch_list("8.0;9.0+PTX 12.0f") == ("8.0", "9.0", "12.0f")
    with pytest.raises(ConfigError, match="not a GPU arch"):
        parse_arch_list("hopper")
    with pytest.raises(ConfigError, match="no GPU arch"):
        parse_arch_list(" ")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # cells and matrix.toml
        ("8.0", Arch(8, 0)),
        ("9.0", Arch(9, 0)),
        ("9.0a", Arch(9, 0, "a")),
        ("12.0", Arch(12, 0)),
        ("12.0a", Arch(12, 0, "a")),
        ("12.0f", Arch(12, 0, "f")),
        (" 8.6 ", Arch(8, 6)),
        # nvcc, cuobjdump, torch's arch flags
        ("sm_80", Arch(8, 0)),
        ("sm_90", Arch(9, 0)),
        ("sm_90a", Arch(9, 0, "a")),
        ("sm_120", Arch(12, 0)),
        ("compute_90", Arch(9, 0)),
        ("compute_90a", Arch(9, 0, "a")),
        ("compute_121", Arch(12, 1)),
        # bare numbers (CUDA_ARCHITECTURES, a capability x 10)
        ("60", Arch(6, 0)),
        ("90a", Arch(9, 0, "a")),
        ("100", Arch(10, 0)),
        # cell-id tags
        ("sm90", Arch(9, 0)),
        ("sm90a", Arch(9, 0, "a")),
        ("sm120", Arch(12, 0)),
        ("sm120f", Arch(12, 0, "f")),
        # TORCH_CUDA_ARCH_LIST entries
        ("9.0+PTX", Arch(9, 0, ptx=True)),
        ("9.0a+PTX", Arch(9, 0, "a", ptx=True)),
        ("sm_90+PTX", Arch(9, 0, ptx=True)),
    ],
)
def test_parse_every_spelling(text: str, want: Arch) -> None:
    assert Arch.parse(text) == want


@pytest.mark.parametrize("bad", ["hopper", "", "9", "9.0x", "9.0aa", "sm_9", "+PTX", "9.0 a"])
def test_junk_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a GPU arch") as ei:
        Arch.parse(bad)
    assert ei.value.fix and "9.0a" in ei.value.fix


@pytest.mark.parametrize(
    ("bad", "near"),
    [("SM_90A", "9.0a"), ("9,0", "9.0"), ("sm-120", "12.0"), ("9.0+ptx", "9.0+PTX")],
)
def test_near_misses_say_did_you_mean(bad: str, near: str) -> None:
    with pytest.raises(ConfigError) as ei:
        Arch.parse(bad)
    assert f"did you mean '{near}'?" in (ei.value.fix or "")


def test_a_data_file_arch_is_no_ptx_entry() -> None:
    with pytest.raises(ConfigError, match="not a GPU arch"):
        normalize_arch("9.0+PTX")


def test_names() -> None:
    a = Arch.parse("sm_90a")
    assert (a.major, a.minor, a.suffix, a.ptx) == (9, 0, "a", False)
    assert (a.name, str(a), a.number, a.sm, a.compute, a.tag) == (
        "9.0a",
        "9.0a",
        90,
        "sm_90a",
        "compute_90a",
        "sm90a",
    )
    assert a.base == Arch(9, 0) and Arch.parse("12.0f+PTX").base == Arch(12, 0)
    assert str(Arch.parse("12.0+PTX")) == "12.0+PTX" and Arch.parse("12.0+PTX").name == "12.0"
    assert Arch.parse("12.1").number == 121 and Arch.parse("12.1").compute == "compute_121"


def test_torch_list_form() -> None:
    # torch's CMake knows "a" and "+PTX" but not family ("f") targets
    assert [Arch.parse(a).torch_name for a in ("9.0", "9.0a", "12.0f", "9.0+PTX")] == [
        "9.0",
        "9.0a",
        "12.0",
        "9.0+PTX",
    ]
    assert parse_arch_list("9.0a;12.0a") == ("9.0a", "12.0a")
    assert parse_arch_list("9.0 12.0+PTX") == ("9.0", "12.0")
    assert parse_arch_list("sm_90,sm_120") == ("9.0", "12.0")


def test_gencode() -> None:
    assert Arch.parse("9.0a").gencode() == ["-gencode", "arch=compute_90a,code=sm_90a"]
    assert Arch.parse("8.0+PTX").gencode() == [
        "-gencode",
        "arch=compute_80,code=sm_80",
        "-gencode",
        "arch=compute_80,code=compute_80",
    ]


def test_ordering_is_numeric_then_suffix() -> None:
    names = ["12.0", "9.0a", "10.0", "8.6", "9.0", "12.0f", "7.5"]
    assert [a.name for a in sorted(map(Arch.parse, names))] == [
        "7.5",
        "8.6",
        "9.0",
        "9.0a",
        "10.0",
        "12.0",
        "12.0f",
    ]
    assert Arch.parse("9.0") < Arch.parse("10.0")  # not "10.0" < "9.0" as strings


def test_bad_suffix_is_refused() -> None:
    with pytest.raises(ValueError, match="suffix"):
        replace(Arch(9, 0), suffix="x")


@pytest.mark.parametrize(
    ("target", "sass", "runs"),
    [
        ("8.6", "8.0", True),  # same major, older minor: binary compatible
        ("8.0", "8.6", False),  # never backwards
        ("9.0", "8.0", False),  # never across majors
        ("9.0", "9.0a", False),  # arch-specific SASS runs on its own arch only
        ("9.0a", "9.0", False),  # an arch-specific target needs exactly its SASS
        ("9.0a", "9.0a", True),
        ("9.0", "9.0", True),
        ("12.0f", "12.0", True),  # a family target takes its major's SASS
        ("12.1", "12.0f", True),
        ("12.0f", "12.1", False),
    ],
)
def test_runs_sass_of(target: str, sass: str, runs: bool) -> None:
    assert Arch.parse(target).runs_sass_of(Arch.parse(sass)) is runs


@pytest.mark.parametrize(
    ("target", "ptx", "jits"),
    [
        ("9.0", "8.0", True),  # PTX JITs forward, across majors too
        ("12.0", "9.0", True),
        ("8.0", "9.0", False),  # never backwards
        ("9.0a", "9.0a", True),  # arch-specific PTX only for its own arch
        ("9.0", "9.0a", False),
        ("10.0a", "9.0a", False),
        ("9.0a", "8.0", True),
    ],
)
def test_jits_ptx_of(target: str, ptx: str, jits: bool) -> None:
    assert Arch.parse(target).jits_ptx_of(Arch.parse(ptx)) is jits


def test_shipped_matrix_arches_round_trip() -> None:
    text = (Path(__file__).parents[2] / "matrix.toml").read_text()
    found = {
        a
        for m in re.findall(r"^arch = \[([^\]]*)\]", text, re.M)
        for a in re.findall(r'"([^"]+)"', m)
    }
    assert found >= {"8.0", "9.0", "12.0"}
    for a in found:
        arch = Arch.parse(a)
        assert Arch.parse(arch.name) == arch and Arch.parse(arch.sm) == arch
        assert Arch.parse(arch.tag) == arch and Arch.parse(str(arch)) == arch
