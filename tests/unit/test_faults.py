"""Issue 22 item 3: bad result files, --merge's checks, exit codes per command."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from test_merge import MATRIX, A, stages

from vllm_matrix import cli
from vllm_matrix.cli import main
from vllm_matrix.commands import release
from vllm_matrix.infra import results
from vllm_matrix.infra.config import Cell, Matrix, load_matrix
from vllm_matrix.infra.results import StageResult
from vllm_matrix.pipeline import runner

PRE = ("source", "facts", "preflight")

BAD_FILES: dict[str, bytes] = {
    "malformed": b'{"schema": "vllm-matrix/cell-result", "version": 1,',
    "empty": b"",
    "non-utf8": b'{"schema": "\xff\xfe"}',
    "other-schema": json.dumps({"schema": "vllm-matrix/compat", "version": 1}).encode(),
    "list": b"[1, 2]",
    "deep": b"[" * 100_000,
}


@pytest.fixture
def ws(tmp_path: Path) -> tuple[Path, list[str]]:
    (tmp_path / "matrix.toml").write_text(MATRIX)
    m = load_matrix(tmp_path / "matrix.toml")
    res = tmp_path / "results"
    for c in m.cells[1:]:
        results.write(res, c, stages(*PRE), A)
    return tmp_path, [c.id for c in m.cells]


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_report_names_and_skips_a_bad_result_file(
    ws: tuple[Path, list[str]], kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = ws
    (root / "results" / f"{ids[0]}.json").write_bytes(BAD_FILES[kind])
    rc = main(["report", "--matrix", str(root / "matrix.toml")])
    err = capsys.readouterr().err
    assert rc == 3
    assert "Traceback" not in err
    assert f"warning: skipped results/{ids[0]}.json:" in err
    md = (root / "reports" / "compat.md").read_text()
    # the rest is reported; the bad file is named in the report
    assert md.count("| **PREFLIGHT-OK** |") == len(ids) - 1
    assert f"- `results/{ids[0]}.json`:" in md
    doc = json.loads((root / "reports" / "compat.json").read_text())
    assert [x["file"] for x in doc["skipped"]] == [f"results/{ids[0]}.json"]


def test_run_reports_around_a_bad_result_file(
    ws: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = ws
    (root / "results" / f"{ids[0]}.json").write_text("{")
    monkeypatch.setattr(runner, "run_matrix", lambda *a, **k: [])  # the cells' runs: elsewhere
    rc = main(["run", "--matrix", str(root / "matrix.toml"), "--depth", "preflight"])
    assert rc == 3
    assert f"skipped results/{ids[0]}.json: not valid JSON" in capsys.readouterr().err


def test_a_good_report_exits_0(ws: tuple[Path, list[str]]) -> None:
    root, _ = ws
    assert main(["report", "--matrix", str(root / "matrix.toml")]) == 0


# --------------------------------------------------------------------------- --merge


def _doc(root: Path, cell_n: int = 1) -> dict[str, object]:
    c = load_matrix(root / "matrix.toml").cells[cell_n]
    p = results.write(root / "tmp", c, stages(*PRE), A)
    d: dict[str, object] = json.loads(p.read_text())
    p.unlink()
    return d


@pytest.mark.parametrize(
    ("what", "change", "reason"),
    [
        ("newline-id", lambda d: d["cell"].update(id="vllm0.8.5\n| x |"), "holds a character"),
        ("pipe-id", lambda d: d["cell"].update(id="a|b"), "holds a character"),
        ("long-id", lambda d: d["cell"].update(id="v" * 200_000), "200000 characters"),
        ("banana", lambda d: d["stages"][0].update(status="banana"), "status 'banana'"),
        ("seconds", lambda d: d["stages"][0].update(seconds="x"), "not a duration"),
        ("pipe-torch", lambda d: d["cell"].update(torch="2.6|x"), "not a short string"),
    ],
)
def test_merge_refuses_what_the_schema_does_not_allow(
    ws: tuple[Path, list[str]], what: str, change: object, reason: str
) -> None:
    root, _ = ws
    d = _doc(root)
    change(d)  # type: ignore[operator]
    (root / "in").mkdir()
    (root / "in" / f"{what}.json").write_text(json.dumps(d))
    good = _doc(root, 2)
    (root / "in" / "good.json").write_text(json.dumps(good))
    rc = main(["report", "--matrix", str(root / "matrix.toml"), "--merge", str(root / "in")])
    assert rc == 3
    md = (root / "reports" / "compat.md").read_text()
    assert reason in md.split("## Refused result files")[1]
    assert "v" * 1000 not in md and len(md) < 50_000
    # every table row still has the header's number of columns
    rows = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert rows and {ln.count(" | ") for ln in rows} == {12}


def test_a_valid_copy_beats_nothing_and_banana_never_wins(ws: tuple[Path, list[str]]) -> None:
    root, ids = ws
    d = _doc(root)
    bad = json.loads(json.dumps(d))
    bad["stages"][-1]["status"] = "banana"
    bad["written"] = "2099-01-01T00:00:00Z"
    (root / "in").mkdir()
    (root / "in" / "a.json").write_text(json.dumps(d))
    (root / "in" / "b.json").write_text(json.dumps(bad))
    assert main(["report", "--matrix", str(root / "matrix.toml"), "--merge", str(root / "in")]) == 3
    doc = json.loads((root / "reports" / "compat.json").read_text())
    row = next(r for r in doc["cells"] if r["id"] == ids[1])
    assert row["verdict"] == "PREFLIGHT-OK"


def test_merge_of_an_empty_directory_is_a_usage_error(
    ws: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = ws
    (root / "empty").mkdir()
    before = (root / "reports" / "compat.md").exists()
    rc = main(["report", "--matrix", str(root / "matrix.toml"), "--merge", str(root / "empty")])
    assert rc == 2
    assert "no result files" in capsys.readouterr().err
    assert (root / "reports" / "compat.md").exists() == before


def test_merge_of_only_bad_files_writes_no_report(ws: tuple[Path, list[str]]) -> None:
    root, _ = ws
    (root / "bad").mkdir()
    (root / "bad" / "x.json").write_text("{")
    rc = main(["report", "--matrix", str(root / "matrix.toml"), "--merge", str(root / "bad")])
    assert rc == 3
    assert not (root / "reports" / "compat.md").exists()


def test_markdown_escapes_pipes_and_newlines() -> None:
    from vllm_matrix.report.compat import escape

    assert escape("a|b\nc") == "a\\|b c"


def test_result_check_accepts_what_write_makes(ws: tuple[Path, list[str]]) -> None:
    root, _ = ws
    d = _doc(root)
    assert results.check(d) is d
    d2 = json.loads(json.dumps(d))
    d2["stages"].append(StageResult("probe", "pass", 1.0, "ok").to_json())
    results.check(d2)


# --------------------------------------------------------------------------- exit codes

# Per command: its argv (M: the matrix, ID: a cell id) and a function it calls early (the
# seam where a usage error, a tool error or a full disk is raised).
EXIT_CASES: dict[str, tuple[list[str], str]] = {
    "facts": (["facts", "0.8.5"], "vllm_matrix.sources.sdist:get_tree"),
    "cells": (["cells", "M"], "vllm_matrix.infra.config:load_matrix"),
    "run": (["run", "M", "--depth", "preflight"], "vllm_matrix.pipeline.runner:run_matrix"),
    "preflight": (["preflight", "M"], "vllm_matrix.pipeline.runner:run_matrix"),
    "map": (["map", "M"], "vllm_matrix.pipeline.mapping:grid_cells"),
    "map-slice": (["map-slice", "M"], "vllm_matrix.report.map:read"),
    "release": (["release", "0.8.5", "M"], "vllm_matrix.sources.sdist:get_tree"),
    "report": (["report", "M"], "vllm_matrix.report.compat:write_report"),
    "ci-matrix": (["ci-matrix", "M"], "vllm_matrix.commands.cimatrix:render"),
    "doctor": (["doctor", "M", "--cell", "ID"], "vllm_matrix.commands.doctor:for_cell"),
    "pixi-snippet": (
        ["pixi-snippet", "M", "--cell", "ID"],
        "vllm_matrix.commands.pixi:used_fixups",
    ),
    "prefetch": (["prefetch", "--vllm", "0.8.5"], "vllm_matrix.sources.sdist:get_tree"),
    "modelopt-check": (["modelopt-check", "--vllm", "0.8.5"], "vllm_matrix.sources.sdist:get_tree"),
    "tiny-model": (["tiny-model", "--out", "OUT"], "vllm_matrix.stages.model.tinymodel:make"),
    "model": (["model", "--dir", "OUT"], "vllm_matrix.stages.model.modelstage:run"),
    "newest": (["newest", "--torch", "2.6.0", "--arch", "9.0"], "vllm_matrix.commands.newest:walk"),
    "blackwell": (["blackwell", "M"], "vllm_matrix.commands.newest:cheapest"),
    "derive-torch": (["derive-torch", "2.6.0"], "vllm_matrix.sources.torchwheel:read_facts"),
    "derive-pins": (["derive-pins"], "vllm_matrix.knowledge.pins:release_list"),
    "derive-facts": (["derive-facts"], "vllm_matrix.knowledge.pins:release_list"),
    "currency": (["currency", "M"], "vllm_matrix.commands.currency:check"),
    "estimate": (["estimate", "M", "--cell", "ID"], "vllm_matrix.sources.sdist:get_tree"),
    "export-build": (
        ["export-build", "M", "--cell", "ID", "--out", "OUT"],
        "vllm_matrix.infra.results:read",
    ),
}


def test_every_command_has_an_exit_case() -> None:
    sub = next(a for a in cli.parser()._actions if a.dest == "cmd")
    assert set(sub.choices) == set(EXIT_CASES)  # type: ignore[arg-type]


def _argv(case: str, root: Path, ids: list[str]) -> list[str]:
    out = {"M": f"--matrix={root / 'matrix.toml'}", "ID": ids[1], "OUT": str(root / "out")}
    return [out.get(a, a) for a in EXIT_CASES[case][0]]


def _raise(exc: BaseException) -> object:
    def f(*a: object, **k: object) -> object:
        raise exc

    return f


@pytest.mark.parametrize("case", sorted(EXIT_CASES))
@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (cli.MatrixError("a bad argument", fix="change it"), 2),
        (cli.ToolError("the machine failed", fix="fix the machine"), 3),
        (OSError(28, "No space left on device"), 3),
    ],
    ids=["usage", "error", "disk-full"],
)
def test_exit_codes_per_command(
    ws: tuple[Path, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: str,
    exc: BaseException,
    code: int,
) -> None:
    """0 answered, 1 vLLM fails, 2 usage, 3 ERROR (the README's table), for each command:
    the seam raises, the command ends with that code and no traceback."""
    root, ids = ws
    (root / "results" / "map.json").write_text("{}")
    seam = EXIT_CASES[case][1]
    mod, _, attr = seam.partition(":")
    if case == "tiny-model":  # needs torch (the [model] extra): a stand-in module
        fake = types.SimpleNamespace(TinySpec=lambda **k: None, make=_raise(exc))
        monkeypatch.setitem(sys.modules, mod, fake)
        # where torch is installed another test may have imported the real module: the
        # package's attribute is what `from vllm_matrix.stages import tinymodel` reads
        package, _, name = mod.rpartition(".")
        monkeypatch.setattr(importlib.import_module(package), name, fake, raising=False)
    else:
        monkeypatch.setattr(f"{mod}.{attr}", _raise(exc))
    assert main(_argv(case, root, ids)) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


@pytest.mark.parametrize("case", sorted(EXIT_CASES))
def test_a_bad_option_is_a_usage_error(
    ws: tuple[Path, list[str]], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = ws
    with pytest.raises(SystemExit) as got:
        main([*_argv(case, root, ids), "--no-such-option"])
    assert got.value.code == 2


@pytest.mark.parametrize(
    ("last", "code"),
    [("pass", 0), ("fail", 0), ("predicted-fail", 0), ("skip", 0), ("error", 3)],
)
@pytest.mark.parametrize("command", ["run", "release"])
def test_run_and_release_exit_by_the_cells_verdict(
    ws: tuple[Path, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    last: str,
    code: int,
) -> None:
    """For a matrix a FAIL is an answer (0); `release` asks about one cell, and "vLLM
    fails" is 1 there (the README's table); an ERROR is the tool's or the machine's failure
    (3) for both (release returned 0 on ERROR)."""
    root, _ = ws
    cell = load_matrix(root / "matrix.toml").cells[0]
    sts = [*stages("source", "facts"), StageResult("preflight", last, 1.0, "x")]
    monkeypatch.setattr(runner, "run_cell", lambda *a, **k: sts)
    monkeypatch.setattr(release, "release_cell", lambda args: cell)
    monkeypatch.setattr(
        runner,
        "run_matrix",
        lambda *a, **k: [(cell, results.verdict_of(sts))],
    )
    argv = {"run": ["run", "--cell", cell.id], "release": ["release", "0.8.5"]}[command]
    if command == "release" and last in ("fail", "predicted-fail"):
        code = 1
    assert main([*argv, "--matrix", str(root / "matrix.toml"), "--depth", "preflight"]) == code


# --------------------------------------------------------------------------- ERROR vs evidence


def test_an_error_keeps_the_deeper_earlier_result_beside_it(tmp_path: Path) -> None:
    """A toolkit-depth result, then a preflight run that hits a full disk: both stay (the
    older evidence as the result, the ERROR as last_error, shown in compat.md); the clean
    rerun still has the toolkit/env evidence."""
    from test_runner import MACHINE, cell, swapped, tree

    from vllm_matrix.pipeline import context
    from vllm_matrix.report import compat

    ws = context.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))
    runner.run_cell(c, ws, depth="preflight", **MACHINE)
    path = ws.results / f"{c.id}.json"
    pre = [StageResult.from_json(s) for s in results.read(path)["stages"]]
    deep = [*pre, StageResult("toolkit", "pass", 1.0, "nvcc"), StageResult("env", "pass", 1.0, "e")]
    results.write(ws.results, c, deep, MACHINE["mach"])

    def full(ctx: object) -> StageResult:
        raise OSError(28, "No space left on device", "/cache/x")

    disk_full = swapped(source=full)
    got = runner.run_cell(c, ws, depth="preflight", plan_stages=disk_full, **MACHINE)
    assert results.verdict_of(got).verdict == "ERROR"  # the caller sees this run's ERROR
    d = results.read(path)
    assert [s["stage"] for s in d["stages"]][-1] == "env"  # the evidence stays
    assert d["last_error"]["stage"] == "source" and "no space" in d["last_error"]["cause"]
    m = load_matrix_of(tmp_path, c)
    compat.write(m, ws.results, ws.reports)
    md = (ws.reports / "compat.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith(f"| `{c.id}`"))
    assert "| **PREFLIGHT-OK** |" in row and "env created" in row
    assert "last run: ERROR at source" in row
    runner.run_cell(c, ws, depth="preflight", **MACHINE)  # the clean rerun
    d = results.read(path)
    assert [s["stage"] for s in d["stages"]][-1] == "env" and "last_error" not in d


def test_an_error_over_a_shallower_result_replaces_it(tmp_path: Path) -> None:
    from test_runner import MACHINE, cell, raising_toolkit, tree

    from vllm_matrix.pipeline import context

    ws = context.Workspace(tmp_path / "ws")
    c = cell(tree(tmp_path))
    runner.run_cell(c, ws, depth="preflight", **MACHINE)
    broke = raising_toolkit(cli.ToolError("broke", fix="f"))
    runner.run_cell(c, ws, depth="toolkit", plan_stages=broke, **MACHINE)
    d = results.read(ws.results / f"{c.id}.json")
    assert d["verdict"]["verdict"] == "ERROR" and "last_error" not in d


def load_matrix_of(tmp: Path, c: Cell) -> Matrix:
    """A matrix holding the one cell ``c``."""
    return Matrix(tmp / "matrix.toml", (c,))


# --------------------------------------------------------------------------- cached trees


def _flip(p: Path, keep_mtime: bool = True) -> None:
    """Flip a byte in the middle of ``p`` (same size; the mtime put back: only the content
    tells)."""
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _fake_cuda(staging: Path) -> None:
    from toolkitfakes import fake_nvcc, touch

    fake_nvcc(staging / "bin", "13.0", "13.0.88")
    for rel in (
        "bin/nvcc.profile",
        "nvvm/bin/cicc",
        "nvvm/libdevice/libdevice.10.bc",
        "include/cuda_runtime.h",
        "include/crt/host_config.h",
        "include/nv/target",
    ):
        touch(staging / rel, f"{rel} " * 50)
    touch(staging / "lib64" / "libcudart_static.a", "a" * 1000)


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        (lambda r: _flip(r / "bin" / "nvcc"), "bin/nvcc changed content"),
        (lambda r: (r / "include" / "cuda_runtime.h").unlink(), "cuda_runtime.h is missing"),
        (lambda r: (r / "nvvm" / "bin" / "cicc").unlink(), "nvvm/bin/cicc is missing"),
        (lambda r: (r / "lib64" / "libcudart_static.a").write_text("b"), "changed size"),
    ],
    ids=["flipped-nvcc", "no-cuda_runtime.h", "no-cicc", "truncated-lib"],
)
def test_a_damaged_cached_toolkit_is_rebuilt_and_says_why(
    tmp_path: Path, damage: object, found: str
) -> None:
    from test_toolkit_base import fake_toolkit

    from vllm_matrix.infra import manifest
    from vllm_matrix.stages.toolkit import base

    final = base.toolkits_dir(tmp_path) / "pypi-13.0"
    calls: list[Path] = []

    def build(staging: Path) -> object:
        calls.append(staging)
        _fake_cuda(staging)
        return fake_toolkit(final)

    base.build_cached(final, build)  # type: ignore[arg-type]
    assert (final / manifest.NAME).is_file()
    assert base.build_cached(final, build).notes == () and len(calls) == 1  # type: ignore[arg-type]
    damage(final)  # type: ignore[operator]
    tk = base.damage(final, base._cached(final))  # type: ignore[arg-type]
    assert any(found in p for p in tk), tk
    again = base.build_cached(final, build)  # type: ignore[arg-type]
    assert len(calls) == 2
    assert found in again.notes[-1] and again.notes[-1].startswith("rebuilt: the cached toolkit")
    assert base.damage(final, again) == []


def test_a_damaged_toolkit_that_cannot_be_rebuilt_is_an_error_naming_the_file(
    tmp_path: Path,
) -> None:
    from test_toolkit_base import fake_toolkit

    from vllm_matrix.stages.toolkit import base

    final = base.toolkits_dir(tmp_path) / "pypi-13.0"
    base.build_cached(final, lambda s: (_fake_cuda(s), fake_toolkit(final))[1])
    (final / "include" / "cuda_runtime.h").unlink()

    def offline(staging: Path) -> object:
        raise cli.ToolError("the index is unreachable", fix="check the network")

    with pytest.raises(cli.ToolError) as got:
        base.build_cached(final, offline)  # type: ignore[arg-type]
    assert "include/cuda_runtime.h is missing" in got.value.message
    assert "rebuilding it failed: the index is unreachable" in got.value.message


def test_a_toolkit_cached_before_manifests_is_checked_then_adopted(tmp_path: Path) -> None:
    from test_toolkit_base import fake_toolkit

    from vllm_matrix.infra import manifest
    from vllm_matrix.stages.toolkit import base

    final = base.toolkits_dir(tmp_path) / "pypi-13.0"
    base.build_cached(final, lambda s: (_fake_cuda(s), fake_toolkit(final))[1])
    (final / manifest.NAME).unlink()  # as made by an older vllm-matrix
    (final / "nvvm" / "bin" / "cicc").unlink()
    assert base.damage(final, fake_toolkit(final)) == ["missing nvvm/bin/cicc"]
    assert not (final / manifest.NAME).exists()
    _fake_cuda(final)
    (final / "bin" / "nvcc").write_text("\x7fELF garbage")  # "Exec format error"
    assert "nvcc --version exited" in base.damage(final, fake_toolkit(final))[0]
    _fake_cuda(final)
    assert base.damage(final, fake_toolkit(final)) == []
    assert (final / manifest.NAME).is_file()  # adopted: a manifest of what it holds now


def _fake_env(root: Path) -> object:
    from vllm_matrix.stages import env as env_mod

    site = root / "lib" / "python3.12" / "site-packages"
    files = {
        "torch/include/torch/extension.h": b"#pragma once\n" * 20,
        "torch/lib/libtorch.so": b"\x7fELF" * 100,
        "torch/version.py": b"__version__ = '2.6.0'\n",
    }
    rows = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{rel},sha256={h},{len(data)}")
    rec = site / "torch-2.6.0.dist-info" / "RECORD"
    rec.parent.mkdir(parents=True)
    rec.write_text("\n".join([*rows, "torch-2.6.0.dist-info/RECORD,,"]) + "\n")
    return env_mod.TorchEnv(
        "3.12", "2.6.0", "headers", root, root / "bin" / "python", site, "2.6.0", "12.4"
    )


def test_a_damaged_env_is_found_by_manifest_and_legacy_ones_by_record(tmp_path: Path) -> None:
    from vllm_matrix.infra import manifest
    from vllm_matrix.stages import env as env_mod

    tv = _fake_env(tmp_path / "env")
    assert isinstance(tv, env_mod.TorchEnv)
    ext = tv.site / "torch" / "include" / "torch" / "extension.h"
    # no manifest (an env made before them): RECORD is the check
    _flip(ext)
    assert env_mod.damage(tv) == [
        "torch/include/torch/extension.h changed content (sha256 differs from RECORD)"
    ]
    _flip(ext)
    assert env_mod.damage(tv) == [] and (tv.root / manifest.NAME).is_file()  # adopted
    ext.unlink()
    assert env_mod.damage(tv) == [
        "lib/python3.12/site-packages/torch/include/torch/extension.h is missing"
    ]


def test_an_env_whose_file_was_deleted_is_remade_by_provide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm_matrix.stages import env as env_mod

    made: list[Path] = []

    def build(path: Path, *a: object, **k: object) -> env_mod.TorchEnv:
        made.append(path)
        tv = _fake_env(path)
        assert isinstance(tv, env_mod.TorchEnv)
        return tv

    monkeypatch.setattr(env_mod, "_build", build)
    monkeypatch.setattr(env_mod, "find_python", lambda v: Path("/usr/bin/python3"))
    monkeypatch.setattr(env_mod, "require_free", lambda *a: None)
    tv = env_mod.provide("3.12", "2.6.0", cache=tmp_path)
    assert env_mod.provide("3.12", "2.6.0", cache=tmp_path) == tv and len(made) == 1
    (tv.site / "torch" / "include" / "torch" / "extension.h").unlink()
    env_mod.provide("3.12", "2.6.0", cache=tmp_path)
    assert len(made) == 2 and (tv.site / "torch" / "include" / "torch" / "extension.h").is_file()


# --------------------------------------------------------------------------- kill -9


def test_children_die_with_the_tool(tmp_path: Path) -> None:
    """kill -9 of the tool: the command it runs (apt-get, uv, nvcc: here sleep) dies too."""
    pidfile = tmp_path / "child"
    code = (
        "import sys; from vllm_matrix.infra import proc\n"
        f"proc.run(['sh', '-c', 'echo $$ > {pidfile}; exec sleep 300'])\n"
    )
    tool = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline and tool.poll() is None
            time.sleep(0.05)
        child = int(pidfile.read_text())
        os.kill(tool.pid, signal.SIGKILL)
        tool.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived the tool"
            time.sleep(0.05)
    finally:
        tool.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_runs_staging_and_download_dirs_are_swept(tmp_path: Path) -> None:
    from vllm_matrix.infra import cache

    final = tmp_path / "toolkits" / "debian-12.4"
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = [
        final.parent / f".debian-12.4.{dead.pid}.abcd1234.partial",  # a killed run's
        final.parent / ".debian-12.4.zyxw9876.partial",  # made before the pid was in names
    ]
    other = final.parent / ".debian-12.4x.abcd1234.partial"  # another entry's: kept
    for p in [*left, other]:
        (p / "bin").mkdir(parents=True)
    with cache.staging_dir(final) as s:
        (s / "x").write_text("x")
    assert not any(p.exists() for p in left) and other.exists() and (final / "x").is_file()
    downloads = tmp_path / "downloads"
    stale = downloads / f".download.{dead.pid}.abcd1234"
    mine = downloads / f".download.{os.getpid()}.abcd1234"
    stale.mkdir(parents=True)
    mine.mkdir()
    fresh = cache.scratch_dir(downloads, "download")
    assert (
        not stale.exists() and mine.exists() and fresh.name.startswith(f".download.{os.getpid()}.")
    )


def test_a_dir_an_orphan_still_writes_into_is_removed_without_directory_not_empty(
    tmp_path: Path,
) -> None:
    """The rerun right after a kill during env creation: rmtree raced the killed run's uv
    (ENOTEMPTY); remove_tree renames the dir aside first."""
    from vllm_matrix.infra import cache

    env = tmp_path / "envs" / "py3.12-torch2.6.0-headers"
    (env / "lib").mkdir(parents=True)
    writer = subprocess.Popen(
        ["sh", "-c", f"i=0; while true; do i=$((i+1)); : > {env}/lib/f$i 2>/dev/null; done"]
    )
    try:
        time.sleep(0.2)
        cache.remove_tree(env)
        assert not env.exists()
    finally:
        writer.kill()
        writer.wait()
    cache.remove_tree(env)  # nothing there: fine


# --------------------------------------------------------------------------- inputs


def _matrix_with(tmp: Path, **cell: str) -> Path:
    body = {"vllm": "0.8.5", "torch": "2.6.0", "cuda": "12.4", "python": "3.12"} | cell
    text = '[defaults]\nprovider = "debian"\n\n[[cell]]\n' + "".join(
        f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in body.items()
    )
    (tmp / "matrix.toml").write_text(text + 'arch = ["9.0"]\n', encoding="utf-8")
    return tmp / "matrix.toml"


@pytest.fixture
def index_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """The index as the known lists plus nothing else (no network in unit tests)."""
    from vllm_matrix.pipeline import grid

    monkeypatch.setattr(grid, "_index_versions", lambda project: ["2.6.0", "0.8.5", "0.10.1"])


@pytest.mark.parametrize(
    ("cell", "said", "fix"),
    [
        ({"torch": "2.6.7"}, "torch '2.6.7' is not a torch release", "did you mean '2.6.0'?"),
        ({"vllm": "0.10.9"}, "vLLM '0.10.9' is not a vLLM release", "did you mean '0.10."),
        ({"vllm": "0." + "1" * 300}, "is not a version", 'vllm = "0.8.5"'),
        ({"torch": "2." + "6" * 300}, "is not a torch version", 'torch = "2.6.0"'),
        ({"python": "3.12🚀"}, "'python' in [[cell]] #1 is not a version", 'python = "3.12"'),
    ],
    ids=["torch-2.6.7", "vllm-0.10.9", "vllm-300", "torch-300", "python-rocket"],
)
def test_a_cell_naming_no_release_is_a_matrix_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    index_has: None,
    cell: dict[str, str],
    said: str,
    fix: str,
) -> None:
    m = _matrix_with(tmp_path, **cell)
    assert main(["cells", "--matrix", str(m)]) == 2
    err = capsys.readouterr().err
    assert said in err and fix in err.split("fix:")[1], err
    assert "File name too long" not in err and "Traceback" not in err and len(err) < 600


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["release", "0.10.9"], "vLLM '0.10.9' is not a vLLM release"),
        (["release", "0.8.5", "--torch", "2.6.7"], "--torch: torch '2.6.7' is not"),
        (["release", "0." + "9" * 300], "is not a version"),
        (["newest", "--torch", "2.6.7", "--arch", "9.0"], "--torch: torch '2.6.7' is not"),
        (["run", "--env", "current", "--vllm", "0.10.9"], "--vllm: vLLM '0.10.9' is not"),
        (["facts", "0." + "9" * 300], "is not a vLLM version"),
    ],
)
def test_a_nonexistent_version_on_the_command_line_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    index_has: None,
    argv: list[str],
    said: str,
) -> None:
    m = _matrix_with(tmp_path)
    more = ["--matrix", str(m)] if argv[0] in ("release", "run") else []
    assert main([*argv, *more]) == 2
    err = capsys.readouterr().err
    assert said in err and "fix:" in err and "File name too long" not in err, err


def test_an_unreachable_index_lets_a_new_release_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, a release newer than the known list is not refused (the stage that
    downloads says what is wrong); the check never blocks a real new release."""
    from vllm_matrix.pipeline import grid

    monkeypatch.setattr(grid, "_index_versions", lambda project: None)
    grid.check_version("0.99.0", "vllm")
    monkeypatch.setattr(grid, "_index_versions", lambda project: ["0.99.0"])
    grid.check_version("0.99.0", "vllm")


def test_unwritable_results_or_reports_blame_them_not_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from vllm_matrix.infra.errors import describe_os_error

    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path / "cache"))
    for part in ("results", "reports"):
        f = tmp_path / "ws" / part / ".x.json.tmp"
        _, fix = describe_os_error(OSError(errno.EACCES, "Permission denied", str(f)))
        assert f"make {tmp_path / 'ws' / part} writable" in fix and "cache" not in fix
    f = tmp_path / "cache" / "toolkits" / "x"
    assert "cache directory" in describe_os_error(OSError(errno.EROFS, "ro", str(f)))[1]


def test_a_git_source_that_cannot_be_cloned_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm_matrix.infra.errors import CommandError, SourceError, ToolError
    from vllm_matrix.sources import sdist as source

    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ToolError) as got:  # real git, a repository that is not there
        source.get_tree(f"git:{tmp_path / 'no-such-repo'}@v0.8.5")
    assert "git clone failed: fatal: repository" in got.value.message
    assert "check the repository URL" in (got.value.fix or "")
    tail = (
        "Cloning into 'x'...\nfatal: unable to access 'https://h/v/': Could not resolve host: h\n"
    )
    e = source.git_error("https://h/v", "v1", CommandError("git exited with 128", 128, tail))
    assert isinstance(e, ToolError) and "Could not resolve host: h" in e.message
    assert "cannot reach that host" in (e.fix or "")
    tail = "warning: Could not find remote branch v9 to clone.\nfatal: Remote branch v9 not found\n"
    e = source.git_error("https://h/v", "v9", CommandError("git exited with 128", 128, tail))
    assert isinstance(e, SourceError) and "no tag or branch 'v9'" in e.message


def test_uv_failing_on_a_torch_the_index_lacks_says_so() -> None:
    from vllm_matrix.infra.errors import CommandError, ToolError
    from vllm_matrix.stages import env as env_mod

    tail = (
        "$ uv pip install torch==2.6.7\n  × No solution found when resolving dependencies:\n"
        "  ╰─▶ Because there is no version of torch==2.6.7 and you require torch==2.6.7, we "
        "can conclude that your requirements are unsatisfiable.\n"
    )
    e = env_mod.uv_error("2.6.7", CommandError("uv exited with 1", 1, tail))
    assert "no version of torch==2.6.7" in e.message and "pip index versions torch" in (e.fix or "")
    e = env_mod.uv_error("2.6.0", CommandError("uv exited with 2", 2, "error: connection refused"))
    assert isinstance(e, ToolError) and e.fix


def test_a_copied_cache_checks_and_uses_its_own_trees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Markers hold absolute paths: a cache copied elsewhere must verify, and use, the
    trees in the copy -- not the original's (which the check would then vouch for)."""
    from test_toolkit_base import fake_toolkit

    from vllm_matrix.stages import env as env_mod
    from vllm_matrix.stages.toolkit import base

    final = base.toolkits_dir(tmp_path / "a") / "pypi-13.0"
    base.build_cached(final, lambda s: (_fake_cuda(s), fake_toolkit(final))[1])
    copy = base.toolkits_dir(tmp_path / "b") / "pypi-13.0"
    shutil.copytree(final, copy, symlinks=True)
    tk = base._cached(copy)
    assert tk is not None and tk.root == copy and tk.nvcc == copy / "bin" / "nvcc"
    (copy / "include" / "cuda_runtime.h").unlink()
    assert base.damage(copy, tk) == ["include/cuda_runtime.h is missing"]

    def build(path: Path, *a: object, **k: object) -> env_mod.TorchEnv:
        tv = _fake_env(path)
        assert isinstance(tv, env_mod.TorchEnv)
        return tv

    monkeypatch.setattr(env_mod, "_build", build)
    monkeypatch.setattr(env_mod, "find_python", lambda v: Path("/usr/bin/python3"))
    monkeypatch.setattr(env_mod, "require_free", lambda *a: None)
    tv = env_mod.provide("3.12", "2.6.0", cache=tmp_path / "a")
    shutil.copytree(tmp_path / "a" / "envs", tmp_path / "b" / "envs", symlinks=True)
    tv2 = env_mod.provide("3.12", "2.6.0", cache=tmp_path / "b")
    assert tv2.root == tmp_path / "b" / "envs" / tv.root.name
    assert tv2.site == tv2.root / tv.site.relative_to(tv.root)
