"""A partial build compiled on one machine, exported with its build record, and taken in
place of the build stage on another (export-build, run --built): checked against the cell,
marked carried, and the verdict says what it rests on."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vllm_matrix.infra import results
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import PASS, StageResult
from vllm_matrix.pipeline import plan  # registers PLAN's stage names; do_build
from vllm_matrix.stages.compile import carried, installable

TARGETS = ["_C", "_C_stable_libtorch"]
CPU_MACHINE = {"arch": "x86_64", "cpus": 2, "mem_gib": 23, "gpu": None, "os": "Debian 12"}


def _cell(**kw: Any) -> Cell:
    d: dict[str, Any] = dict(
        vllm="0.20.0", torch="2.11.0", cuda="13.0", provider="pypi", python="3.12", arch=("9.0a",)
    )
    return Cell(**(d | kw))


_SO: list[bytes] = []


def _so(path: Path) -> None:
    """A real shared object with debug info and a kernel-like symbol (gcc -g), compiled
    once per session."""
    if not _SO:
        c = path.with_suffix(".c")
        c.write_text("int _Z20cutlass_kernel_stubv(void) { return 42; }\n")
        subprocess.run(["gcc", "-g3", "-O0", "-shared", "-fPIC", "-o", path, c], check=True)
        c.unlink()
        _SO.append(path.read_bytes())
    path.write_bytes(_SO[0])


def _built(work: Path) -> tuple[dict[str, Any], Path]:
    """A cell's work dir with its installable, and its result file's envelope."""
    src = work / "src" / "vllm"
    (src / "vllm_flash_attn").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "vllm_flash_attn" / "__init__.py").write_text("raise ImportError\n")
    part = work / "partial" / "vllm"
    part.mkdir(parents=True)
    for name in ("_C.abi3.so", "_C_stable_libtorch.abi3.so"):
        _so(part / name)
    dest = work / installable.name_of("0.20.0", TARGETS)
    doc = installable.assemble(work / "src", work / "partial", dest, "0.20.0", TARGETS)
    build = StageResult(
        "build",
        PASS,
        640.5,
        "partial: targets _C, _C_stable_libtorch: 2 extensions",
        details={
            "partial": {"targets": TARGETS, "extensions": ["$VLLM_MATRIX_CACHE/x/_C.abi3.so"]},
            "steps": {"build": {"seconds": 630.0}},
            "installable": doc | {"path": "$VLLM_MATRIX_CACHE/builds/x/" + dest.name},
        },
    )
    env = results.envelope(_cell(), [build], CPU_MACHINE)
    return dict(env), dest


def test_export_copies_the_installable_with_its_record_and_strips_debug_info(
    tmp_path: Path,
) -> None:
    env, src = _built(tmp_path / "work")
    dest = carried.export(env, tmp_path / "work", tmp_path / "out", strip=True)
    assert dest == tmp_path / "out" / src.name
    doc, record = carried.read(dest)
    assert doc["targets"] == TARGETS and record["cell"]["arch"] == ["9.0a"]
    assert record["machine"] == CPU_MACHINE and record["build"]["seconds"] == 640.5
    for s in record["stripped"]:
        assert s["bytes"] < s["bytes_before"], s  # the DWARF is gone ...
        so = dest / s["path"]
        assert (src / s["path"]).stat().st_size == s["bytes_before"]  # ... from the copy only
        debug = subprocess.run(["readelf", "-S", so], capture_output=True, text=True).stdout
        assert ".debug_info" not in debug
        syms = subprocess.run(["nm", "-D", so], capture_output=True, text=True).stdout
        assert "_Z20cutlass_kernel_stubv" in syms  # the model stage's attribution still works
    # Without --strip-debug the extensions are byte for byte the built ones.
    plain = carried.export(env, tmp_path / "work", tmp_path / "plain")
    assert carried.read(plain)[1]["stripped"] == []
    assert (plain / doc["extensions"][0]).read_bytes() == (src / doc["extensions"][0]).read_bytes()


def test_export_says_what_to_do_without_an_installable_build(tmp_path: Path) -> None:
    env, src = _built(tmp_path / "work")
    wheel = dict(env) | {
        "stages": [s | {"details": {"wheel": "dist/x.whl"}} for s in env["stages"]]
    }
    with pytest.raises(carried.CarriedBuildError, match="not an installable partial") as e:
        carried.export(wheel, tmp_path / "work", tmp_path / "out")
    assert "install it" in (e.value.fix or "")
    failed = dict(env) | {"stages": [s | {"status": "FAIL"} for s in env["stages"]]}
    with pytest.raises(carried.CarriedBuildError, match="no passing build"):
        carried.export(failed, tmp_path / "work", tmp_path / "out")
    shutil.rmtree(src)
    with pytest.raises(carried.CarriedBuildError, match="no longer holds"):
        carried.export(env, tmp_path / "work", tmp_path / "out")


def test_take_stands_in_for_the_build_and_the_verdict_says_where_it_was_built(
    tmp_path: Path,
) -> None:
    env, _ = _built(tmp_path / "work")
    dest = carried.export(env, tmp_path / "work", tmp_path / "out", strip=True)
    here = _cell(provider="system", env="current", torch="2.11.0+cu130")
    stage, exts = carried.take(dest, here, ())
    assert exts == [dest / "vllm/_C.abi3.so", dest / "vllm/_C_stable_libtorch.abi3.so"]
    assert stage.status == PASS and stage.seconds == 0.0
    assert stage.summary.startswith("carried: partial: targets")
    assert "x86_64 2 cores 23 GiB, no GPU" in stage.summary
    note = [f for f in stage.findings if f.rule == "carried-build"]
    assert note and "not compiled on this machine" in note[0].message
    assert "debug info stripped" in note[0].message
    d = stage.details
    assert d["installable"]["path"] == str(dest) and d["partial"]["extensions"] == [
        str(p) for p in exts
    ]
    assert d["steps"] == {"build": {"seconds": 630.0}}  # the build as recorded there
    assert d["carried"]["machine"] == CPU_MACHINE
    # The verdict at model depth: partial, and resting on the carried build.
    model = StageResult("model", PASS, 90.0, "served")
    v = results.verdict_of([stage, model])
    assert v.depth == "model (partial: targets _C, _C_stable_libtorch)"
    assert v.label == "PASS (built on x86_64 2 cores 23 GiB, no GPU; carried here)"
    # A build made here rests on nothing more.
    own = StageResult("build", PASS, 1.0, "built", details={"partial": {"targets": TARGETS}})
    assert results.verdict_of([own, model]).rests_on == ""


@pytest.mark.parametrize(
    ("cell", "targets", "said"),
    [
        (_cell(arch=("12.0a",)), (), "arches 9.0a, this cell 12.0a"),
        (_cell(arch=("9.0a", "12.0a")), (), "arches 9.0a, this cell 9.0a;12.0a"),
        (_cell(torch="2.10.0"), (), "torch 2.11.0, this env 2.10.0"),
        (_cell(cuda="12.8"), (), "CUDA 13.0, this env 12.8"),
        (_cell(vllm="0.21.0"), (), "vLLM 0.20.0, this cell 0.21.0"),
        (_cell(), ("_C",), "targets _C,_C_stable_libtorch, asked _C"),
    ],
)
def test_take_refuses_a_build_made_for_another_cell(
    tmp_path: Path, cell: Cell, targets: tuple[str, ...], said: str
) -> None:
    env, _ = _built(tmp_path / "work")
    dest = carried.export(env, tmp_path / "work", tmp_path / "out")
    with pytest.raises(carried.CarriedBuildError, match="compiled for another cell") as e:
        carried.take(dest, cell, targets)
    assert said in str(e.value) and "export the build of a cell like" in (e.value.fix or "")


def test_a_directory_that_is_not_a_carried_build_is_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(carried.CarriedBuildError, match="is not a carried build") as e:
        carried.read(tmp_path)
    assert "export-build" in (e.value.fix or "")
    _, src = _built(tmp_path / "work")  # an installable, but never exported: no record
    with pytest.raises(carried.CarriedBuildError, match="is not a carried build"):
        carried.read(src)
    (src / carried.RECORD).write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(carried.CarriedBuildError, match="not a vllm-matrix/carried-build"):
        carried.read(src)


def test_run_built_takes_its_targets_skips_the_probe_and_stands_in_for_the_build(
    tmp_path: Path,
) -> None:
    """`run --built DIR`: the options (targets from the carried build, no probe) and PLAN's
    build stage, which compiles nothing and hands the carried extensions on."""
    import argparse

    from vllm_matrix.commands import run as run_cmd
    from vllm_matrix.pipeline import context

    env, _ = _built(tmp_path / "work")
    dest = carried.export(env, tmp_path / "work", tmp_path / "out")
    opts = run_cmd.build_options(argparse.Namespace(built=str(dest)))
    assert opts.targets == tuple(TARGETS) and opts.probe is False and opts.built == dest
    assert run_cmd.build_options(argparse.Namespace()).built is None
    ctx = context.CellContext(_cell(), context.Workspace(tmp_path / "ws"), opts, ("build",))
    ctx.tree = object()  # type: ignore[assignment]  # do_build reads no source when carried
    probe = plan.do_probe(ctx)
    assert probe.summary == "not run (--built): the build was compiled on another machine"
    stage = plan.do_build(ctx)
    assert stage.summary.startswith("carried:") and ctx.extensions == [
        dest.resolve() / "vllm/_C.abi3.so",
        dest.resolve() / "vllm/_C_stable_libtorch.abi3.so",
    ]
