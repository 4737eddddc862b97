from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix import results, runner
from vllm_matrix.config import Cell, load_matrix
from vllm_matrix.errors import MatrixError

CMAKE = """
cmake_minimum_required(VERSION 3.26)
set(PYTHON_SUPPORTED_VERSIONS "3.9" "3.10" "3.11" "3.12")
set(CUDA_SUPPORTED_ARCHS "7.0;7.5;8.0;8.6;8.9;9.0;10.0;12.0")
set(TORCH_SUPPORTED_VERSION_CUDA "2.6.0")
"""


def tree(tmp: Path, code: str = "") -> Path:
    root = tmp / "vllm"
    (root / "csrc").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text(CMAKE)
    (root / "setup.py").write_text("")
    (root / "PKG-INFO").write_text("Version: 0.8.5\n")
    (root / "csrc" / "k.cu").write_text(code)
    return root


def cell(root: Path, arch: str = "9.0") -> Cell:
    return Cell("0.8.5", "2.6.0", "12.4", "debian", "3.12", (arch,), source=f"path:{root}")


def test_preflight_depth_writes_a_valid_result(tmp_path: Path) -> None:
    ws = runner.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))
    stages = runner.run_cell(c, ws, "preflight")
    assert [s.stage for s in stages] == ["source", "facts", "preflight"]
    d = results.read(ws.results / f"{c.id}.json")
    assert d["verdict"]["verdict"] == "PREFLIGHT-OK"


def test_predicted_failure_stops_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = runner.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path), "12.0")
    stages = runner.run_cell(c, ws, "toolkit")
    assert stages[-1].stage == "preflight" and stages[-1].status == "predicted-fail"
    calls: list[str] = []

    def fake_provide(provider: str, version: str, **kw: object) -> object:
        calls.append(provider)
        raise runner.NotAvailable("not here", fix="elsewhere")

    monkeypatch.setattr(runner.toolkit, "provide", fake_provide)
    stages = runner.run_cell(c, ws, "toolkit", force=True)
    assert calls == ["debian"] and stages[-1].stage == "toolkit"
    assert stages[-1].status == "skip"


def test_ctrl_c_leaves_a_valid_interrupted_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = runner.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))

    def boom(*a: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.facts_mod, "read_facts", boom)
    with pytest.raises(KeyboardInterrupt):
        runner.run_cell(c, ws, "preflight")
    d = results.read(ws.results / f"{c.id}.json")
    assert d["stages"][-1] == d["stages"][-1] | {"stage": "facts", "status": "interrupted"}
    assert d["verdict"]["verdict"] == "UNKNOWN"


def test_depth_errors_say_what_exists() -> None:
    with pytest.raises(MatrixError, match="did you mean 'probe'"):
        runner.check_depth("prob")
    runner.check_depth("toolkit")


def test_matrix_run_and_report(tmp_path: Path) -> None:
    root = tree(tmp_path, "auto p = x.data_ptr<at::Float8_e8m0fnu>();\n")
    m = tmp_path / "matrix.toml"
    m.write_text(
        f'[[cell]]\nvllm = "0.8.5"\ntorch = "2.6.0"\ncuda = "12.4"\nprovider = "debian"\n'
        f'python = "3.12"\narch = ["9.0"]\nsource = "path:{root}"\n'
    )
    matrix = load_matrix(m)
    ws = runner.Workspace(tmp_path)
    done = runner.run_matrix(matrix, ws, "preflight", echo=lambda s: None)
    assert done[0][1].verdict == "PREDICTED-FAIL"
    assert "csrc/k.cu:1" in done[0][1].cause


def test_shallower_rerun_keeps_deeper_stages(tmp_path: Path) -> None:
    ws = runner.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))
    runner.run_cell(c, ws, "preflight")
    path = ws.results / f"{c.id}.json"
    d = results.read(path)
    deeper = results.StageResult("toolkit", "pass", 1.0, "nvcc 12.4")
    results.write(ws.results, c, [*map(results.StageResult.from_json, d["stages"]), deeper])
    runner.run_cell(c, ws, "preflight")
    assert [s["stage"] for s in results.read(path)["stages"]][-1] == "toolkit"
