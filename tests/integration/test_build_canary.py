"""The canary, for real: vLLM 0.4.2 (release sdist) x torch 2.3.0 (with its nvidia
deps) x Debian's CUDA 12.4 x sm_80 x Python 3.11 -> a wheel, its audit, its smoke test.

About 30 minutes of compiling on 2 cores (measured), plus a ~5 GB torch env the first
time. Marked heavy: deselected by `nox -s tests`; run with `pytest -m heavy
tests/integration/test_build_canary.py`. VLLM_MATRIX_CANARY_WORK keeps the work dir (and
so the resumable build) somewhere other than pytest's tmp dir.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import need_program

from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import FAIL, PASS, WARN, StageResult
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import audit, env, patches, toolkit
from vllm_matrix.stages import compile as build
from vllm_matrix.stages.env import fixups

pytestmark = [pytest.mark.integration, pytest.mark.heavy]

REPO = Path(__file__).resolve().parents[2]
CELL = Cell("0.4.2", "2.3.0", "12.4", "debian", "3.11", ("8.0",))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    need_program("patch", "patch")
    need_program("readelf", "binutils")
    keep = os.environ.get("VLLM_MATRIX_CANARY_WORK")
    work = Path(keep) if keep else tmp_path_factory.mktemp("canary")
    tree = source.get_tree(CELL.source_spec)
    tk = toolkit.provide(CELL.provider, CELL.cuda)
    tv = env.provide(CELL.python, CELL.torch, "full")
    fx = fixups.compute(tk, tv, CELL.arch)
    series = patches.load_series(patches.default_series(REPO))
    r = build.build_wheel(
        CELL,
        tree,
        tk,
        tv,
        fx,
        work / "build",
        work / "dist",
        series=series,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    return {"result": r, "tk": tk, "tv": tv, "work": work}


def test_canary_builds_a_labelled_wheel(built: dict[str, object]) -> None:
    r = built["result"]
    assert isinstance(r, StageResult)
    assert r.status in (PASS, WARN), (r.summary, r.details.get("tail"))
    wheel = Path(r.details["wheel"])
    assert wheel.name == "vllm-0.4.2+cu124torch2.3-cp311-cp311-linux_x86_64.whl"
    assert [p.name for p in wheel.parent.iterdir()] == [wheel.name]  # nothing half-written
    # measured: 25 MB
    assert 10 * 2**20 < r.details["size_bytes"] < 80 * 2**20
    removed = {c["removed"] for c in r.details["work_copy"]["pins_removed"]}
    assert "torch == 2.3.0" in removed
    applied = {p["patch"] for p in r.details["work_copy"]["patches"]}
    assert "cmake-python-executable-env-fallback" in applied


def test_canary_audit_has_sm80_sass_only(built: dict[str, object]) -> None:
    r = built["result"]
    assert isinstance(r, StageResult)
    tk = built["tk"]
    assert isinstance(tk, toolkit.Toolkit)
    a = audit.audit_wheel(Path(r.details["wheel"]), tk, CELL.arch)
    assert a.status == PASS, a.findings
    cuda = [o for o in a.details["objects"] if o["device_code"]]
    names = {Path(o["path"]).name.split(".")[0] for o in cuda}
    assert {"_C", "_moe_C"} <= names
    for o in cuda:
        assert o["sass"] == ["8.0"] and o["ptx"] == [], o
        assert "libc10.so" in o["needed"]


def test_canary_smoke_loads_the_extensions(built: dict[str, object]) -> None:
    r = built["result"]
    assert isinstance(r, StageResult)
    tk, tv, work = built["tk"], built["tv"], built["work"]
    assert isinstance(tk, toolkit.Toolkit) and isinstance(tv, env.TorchEnv)
    assert isinstance(work, Path)
    s = audit.smoke(Path(r.details["wheel"]), tv, tk, work)
    assert s.status != FAIL, s.findings
    ext = s.details["extensions"]
    assert ext["vllm._C"]["loaded"] and ext["vllm._moe_C"]["loaded"]
    # facts.md: 4 submodules, 40 functions in 0.4.2's _C (pybind, no torch.ops yet)
    assert len(ext["vllm._C"]["submodules"]) == 4
    assert ext["vllm._C"]["n_functions"] >= 40
    if not s.details["import_vllm"]["ok"]:
        assert s.details["import_vllm"]["requires_missing"]
