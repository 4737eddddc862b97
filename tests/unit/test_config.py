from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.infra.config import load_matrix, split_torch, torch_tag
from vllm_matrix.infra.errors import ConfigError

GOOD = """
[defaults]
provider = "debian"
python = "3.12"

[[cell]]
vllm = "0.8.5"
torch = "2.6.0"
cuda = "12.4"
arch = ["9.0"]

[[cell]]
vllm = "0.4.2"
torch = "2.3.0"
cuda = "12.4"
python = "3.11"
arch = ["sm_80", "90a"]
options = { max_jobs = 2 }
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "matrix.toml"
    p.write_text(text)
    return p


def test_loads_cells_with_defaults_and_stable_ids(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, GOOD))
    assert [c.id for c in m.cells] == [
        "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90",
        "vllm0.4.2-torch2.3.0-cu12.4-py3.11-sm80+sm90a",
    ]
    c = m.cells[1]
    assert c.provider == "debian" and c.arch == ("8.0", "9.0a") and c.options.max_jobs == 2
    assert m.versions() == ("0.8.5", "0.4.2")


def test_cells_are_frozen(tmp_path: Path) -> None:
    c = load_matrix(write(tmp_path, GOOD)).cells[0]
    with pytest.raises(AttributeError):
        c.vllm = "0.9.0"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (GOOD.replace('torch = "2.6.0"', 'tourch = "2.6.0"'), "did you mean 'torch'"),
        (GOOD.replace('provider = "debian"', 'provider = "debain"'), "did you mean 'debian'"),
        (
            GOOD.replace('cuda = "12.4"\narch = ["9.0"]', 'cuda = 12.4\narch = ["9.0"]'),
            "must be a str",
        ),
        (GOOD.replace('arch = ["9.0"]', 'arch = ["hopper"]'), "is not a GPU arch"),
        (GOOD.replace("max_jobs", "max_job"), "did you mean 'max_jobs'"),
        (GOOD.replace("[defaults]", "[default]"), "did you mean 'defaults'"),
        (
            GOOD + '\n[[cell]]\nvllm = "0.8.5"\ntorch = "2.6.0"\ncuda = "12.4"\narch = ["9.0"]\n',
            "repeats the cell",
        ),
        ("[[cell]\n", "not valid TOML"),
    ],
)
def test_bad_files_give_one_clear_line(tmp_path: Path, bad: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_matrix(write(tmp_path, bad))
    assert needle in str(ei.value)
    assert str(tmp_path / "matrix.toml") in str(ei.value) or "not valid" in str(ei.value)


def test_error_names_the_line(tmp_path: Path) -> None:
    bad = GOOD.replace('torch = "2.3.0"', 'torhc = "2.3.0"')
    with pytest.raises(ConfigError) as ei:
        load_matrix(write(tmp_path, bad))
    lineno = bad.splitlines().index('torhc = "2.3.0"') + 1
    assert f"matrix.toml:{lineno}:" in str(ei.value)


def test_select_unknown_suggests(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, GOOD))
    assert len(m.select("vllm0.8.5")) == 1
    with pytest.raises(ConfigError, match="no cell"):
        m.select("vllm9.9")


def test_shipped_matrix_loads() -> None:
    m = load_matrix(Path(__file__).parents[2] / "matrix.toml")
    ids = [c.id for c in m.cells]
    assert "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90" in ids
    assert "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm120" in ids
    assert "vllm0.4.2-torch2.3.0-cu12.4-py3.11-sm80" in ids


def test_ccache_table_remote(tmp_path: Path) -> None:
    from vllm_matrix.infra.config import CcacheSettings

    m = load_matrix(write(tmp_path, GOOD))
    assert m.ccache == CcacheSettings(None)
    m = load_matrix(write(tmp_path, '[ccache]\nremote = "redis://cache:6379"\n' + GOOD))
    assert m.ccache.remote == "redis://cache:6379"


def test_ccache_table_errors_name_the_key_and_suggest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_matrix(write(tmp_path, '[ccache]\nremot = "redis://cache:6379"\n' + GOOD))
    assert "remot" in e.value.message and "matrix.toml:2" in e.value.message
    assert "did you mean 'remote'" in (e.value.fix or "")
    with pytest.raises(ConfigError) as e:
        load_matrix(write(tmp_path, '[ccache]\nremote = "rediss://cache:6379"\n' + GOOD))
    assert "not a ccache remote storage URL" in e.value.message
    assert "did you mean 'redis'" in (e.value.fix or "")
    with pytest.raises(ConfigError, match="must be a str"):
        load_matrix(write(tmp_path, "[ccache]\nremote = 6379\n" + GOOD))


VARIANTS = """
[torch-index]
cu128 = "http://127.0.0.1:9/cu128"

[defaults]
provider = "system"
python = "3.12"

[[cell]]
vllm = "0.10.1"
torch = "2.7.1+cu128"
cuda = "12.8"
arch = ["12.0"]

[[cell]]
vllm = "0.10.1"
torch = "2.7.1"
cuda = "12.8"
arch = ["12.0"]
"""


def test_torch_variant_parsed_and_in_the_id(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, VARIANTS))
    v, bare = m.cells
    assert v.id == "vllm0.10.1-torch2.7.1cu128-cu12.8-py3.12-sm120"
    assert bare.id == "vllm0.10.1-torch2.7.1-cu12.8-py3.12-sm120"  # bare ids unchanged
    assert (v.torch, v.torch_version, v.torch_variant) == ("2.7.1+cu128", "2.7.1", "cu128")
    assert (bare.torch_version, bare.torch_variant) == ("2.7.1", None)
    assert "+" not in v.id and "/" not in v.id
    assert v.torch_index_url() == ("http://127.0.0.1:9/cu128", "[torch-index] cu128 in matrix.toml")
    assert bare.torch_index_url() is None
    assert v.to_json()["torch_variant"] == "cu128"


def test_torch_index_env_var_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v = load_matrix(write(tmp_path, VARIANTS)).cells[0]
    monkeypatch.setenv("VLLM_MATRIX_TORCH_INDEX_CU128", "http://127.0.0.1:8/x/")
    assert v.torch_index_url() == ("http://127.0.0.1:8/x", "$VLLM_MATRIX_TORCH_INDEX_CU128")


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("2.7.1+cu128", ("2.7.1", "cu128")),
        ("2.6.0", ("2.6.0", None)),
        ("2.10.0+cu130", ("2.10.0", "cu130")),
    ],
)
def test_split_torch(spec: str, want: tuple[str, str | None]) -> None:
    assert split_torch(spec) == want
    assert torch_tag(spec) == want[0] + (want[1] or "")


@pytest.mark.parametrize("bad", ["2.7.1+rocm6.3", "2.7.1+cpu", "2.7.x", "2.7.1+cu12"])
def test_bad_torch_variant_is_a_config_error(tmp_path: Path, bad: str) -> None:
    text = VARIANTS.replace('"2.7.1+cu128"', f'"{bad}"')
    with pytest.raises(ConfigError, match="is not a torch version"):
        load_matrix(write(tmp_path, text))


def test_torch_index_keys_are_variants(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keys are CUDA variants"):
        load_matrix(write(tmp_path, VARIANTS.replace("cu128 =", "cuda128 =")))


def test_force_option_is_a_bool(tmp_path: Path) -> None:
    m = load_matrix(write(tmp_path, GOOD.replace("max_jobs = 2 }", "max_jobs = 2, force = true }")))
    assert m.cells[1].options.force is True and m.cells[0].options.force is None
    assert m.cells[1].to_json()["options"] == {"max_jobs": 2, "force": True}
    with pytest.raises(ConfigError, match=r"'force' in .* must be a bool"):
        load_matrix(write(tmp_path, GOOD.replace("max_jobs = 2 }", "force = 1 }")))


def test_the_shipped_seed_rows_rest_on_a_compile() -> None:
    """The seed's predicted failures go on past the prediction (issue 23): their rows in
    compat.md are a compile's verdict, not a source scan's."""
    m = load_matrix(Path(__file__).parents[2] / "matrix.toml")
    forced = {c.id for c in m.cells if c.options.force}
    assert forced == {
        "vllm0.10.1-torch2.6.0-cu12.4-py3.12-sm90",
        "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm120",
    }
