"""[grid] in matrix.toml: expansion into cells, explicit overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.infra.config import load_matrix
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline.grid import cells_of

HEAD = """
[defaults]
provider = "debian"
python = "3.12"

[[cell]]
vllm = "0.8.5"
torch = "2.6.0"
cuda = "12.4"
python = "3.11"
arch = ["9.0"]
note = "explicit"
"""

GRID = """
[grid]
vllm = ["0.8.5", "0.10.1"]
torch = ["2.6.0", "2.11.0", "2.7.1+cu128"]
toolchains = [{ cuda = "12.4", provider = "debian" }, { cuda = "13.0", provider = "pypi" }]
arch = ["sm_90", "12.0"]
python = "3.11"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "matrix.toml"
    p.write_text(text)
    return p


def test_grid_expands_apart_from_the_explicit_cells(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, HEAD + GRID))
    assert [c.id for c in m.cells] == ["vllm0.8.5-torch2.6.0-cu12.4-py3.11-sm90"]
    ids = [c.id for c in cells_of(m)]
    # torch 2.6.0 (cu124) and 2.7.1+cu128 pair with nvcc 12.4 only, 2.11.0 (cu130) with 13.0
    assert ids[:6] == [
        "vllm0.8.5-torch2.6.0-cu12.4-py3.11-sm90",
        "vllm0.8.5-torch2.6.0-cu12.4-py3.11-sm120",
        "vllm0.8.5-torch2.7.1cu128-cu12.4-py3.11-sm90",
        "vllm0.8.5-torch2.7.1cu128-cu12.4-py3.11-sm120",
        "vllm0.8.5-torch2.11.0-cu13.0-py3.11-sm90",
        "vllm0.8.5-torch2.11.0-cu13.0-py3.11-sm120",
    ]
    assert len(ids) == len(set(ids)) == 2 * 3 * 2
    assert {c.provider for c in cells_of(m) if c.cuda == "13.0"} == {"pypi"}
    # the torch variant passes through unchanged (issue 11 parses it)
    assert any(c.torch == "2.7.1+cu128" for c in cells_of(m))


def test_explicit_cell_replaces_the_grid_cell_of_the_same_id(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, HEAD + GRID))
    same = [c for c in cells_of(m) if c.id == "vllm0.8.5-torch2.6.0-cu12.4-py3.11-sm90"]
    assert len(same) == 1 and same[0].note == "explicit" and same[0] is m.cells[0]


def test_no_grid_no_grid_cells(tmp_path: Path) -> None:
    assert cells_of(load_matrix(write(tmp_path, HEAD))) == ()


def test_ranges_latest_and_series(tmp_path: Path) -> None:
    text = GRID.replace('["0.8.5", "0.10.1"]', '"0.9.2..latest"').replace(
        '["2.6.0", "2.11.0", "2.7.1+cu128"]', '["2.5..2.6", "2.7.1+cu128"]'
    )
    m = load_matrix(write(tmp_path, HEAD + text))
    known = sorted(pins.load(), key=lambda v: tuple(int(x) for x in v.split(".")[:3]))
    releases = sorted({c.vllm for c in cells_of(m)}, key=known.index)
    assert releases[0] == "0.9.2" and releases[-1] == known[-1]
    assert "0.9.1" not in releases and "0.10.0" in releases
    assert sorted({c.torch for c in cells_of(m)}) == ["2.5.0", "2.5.1", "2.6.0", "2.7.1+cu128"]


def test_the_shipped_matrix_grid_covers_the_issue(tmp_path: Path) -> None:
    m = load_matrix(Path(__file__).parents[2] / "matrix.toml")
    assert len(m.cells) < 20  # `nox -s matrix` stays the explicit cells
    rel = {c.vllm for c in cells_of(m)}
    assert "0.4.1" in rel and len(rel) == len(pins.load())
    torch = {c.torch.partition("+")[0] for c in cells_of(m)}
    assert {"2.3.0", "2.11.0"} <= torch and not any(t.startswith("2.12") for t in torch)
    assert {c.arch for c in cells_of(m)} == {("8.0",), ("9.0",), ("12.0",)}
    know = toolchains.load()
    for c in cells_of(m):  # every pair has the torch's CUDA major
        t = know.torch.get(c.torch)
        if t is not None:
            assert t.cuda.split(".")[0] == c.cuda.split(".")[0], c.id


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        (
            'python = "3.11"\n',
            'pyhton = "3.11"\n',
            r"unknown key 'pyhton' in \[grid\].*did you mean 'python'",
        ),
        (
            '["0.8.5", "0.10.1"]',
            '"0.8.55..latest"',
            r"'0\.8\.55' in vllm range.*not a known vLLM release",
        ),
        (
            '["0.8.5", "0.10.1"]',
            '["0.8.5", "0.10.9"]',
            r"'0\.10\.9' in vllm .*did you mean '0\.10\.",
        ),
        ('["0.8.5", "0.10.1"]', '"0.10.1..0.8.5"', "empty range"),
        ('["0.8.5", "0.10.1"]', '["0.8.x"]', "is not a version"),
        ('"2.11.0"', '"2.11.7"', r"'2\.11\.7' in torch.*not a known torch release"),
        (
            'provider = "pypi"',
            'provider = "pypii"',
            "unknown provider 'pypii'.*did you mean 'pypi'",
        ),
        ('cuda = "13.0"', 'cdua = "13.0"', "unknown key 'cdua'.*did you mean 'cuda'"),
        ('["sm_90", "12.0"]', '["sm_90", "hopper"]', "'hopper' in \\[grid\\] is not a GPU arch"),
        ('arch = ["sm_90", "12.0"]', "arch = []", "empty arch list"),
        ('arch = ["sm_90", "12.0"]', "", "missing 'arch'"),
    ],
)
def test_bad_axes_say_where_and_what(tmp_path: Path, old: str, new: str, expect: str) -> None:
    assert old in GRID
    p = write(tmp_path, HEAD + GRID.replace(old, new))
    with pytest.raises(ConfigError, match=f"(?s){expect}") as err:
        cells_of(load_matrix(p))
    grid_line = (HEAD + GRID).splitlines().index("[grid]") + 1
    # file:line pointing into the [grid] table (the key's line, or the table's)
    assert f"{p}:" in err.value.message
    line = int(err.value.message.split(f"{p}:")[1].split(":")[0])
    assert line >= grid_line
    assert err.value.fix
