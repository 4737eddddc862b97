"""Queries never write a tracked file: every query command, run in a fresh `git clone` of
this repository (no results/ of its own, the committed reports/ and README), leaves
`git status --porcelain` empty. The render commands are the only writers of reports/, and
one from fewer results than the committed report holds writes beside it, not over it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import skip_or_fail

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
CELL = "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90"

# (argv after `python -m vllm_matrix`, the exit codes that answer: 1 = "no" for newest and
# a doctor that found problems)
QUERIES: list[tuple[list[str], tuple[int, ...]]] = [
    (["--version"], (0,)),
    (["facts", "0.8.5", "--json"], (0,)),
    (["cells"], (0,)),
    (["preflight", "--cell", "vllm0.8.5"], (0,)),
    (["preflight", "--cell", "vllm0.8.5", "--json"], (0,)),
    (
        ["newest", "--torch", "2.6.0", "--cuda", "12.4", "--arch", "9.0", "--depth", "preflight"],
        (0, 1),
    ),
    # PREDICTED-FAIL on sm_120 with its pinned torch 2.6.0: exit 1, "vLLM fails"
    (["release", "0.8.5", "--arch", "12.0", "--depth", "preflight"], (1,)),
    (["blackwell", "--vllm", "0.8.5", "--json"], (0,)),
    (["map-slice", "--arch", "12.0"], (0,)),
    (["map-slice", "--arch", "9.0"], (0,)),
    (["doctor", "--cell", CELL], (0, 1)),
    (["pixi-snippet", "--cell", CELL], (0,)),
    (
        ["pixi-snippet", "0.9.2", "--torch", "2.7.0+cu128", "--cuda", "12.8", "--gpu", "RTX 5090"],
        (0,),
    ),
    (["newest", "--torch", "2.6.0", "--cuda", "12.4", "--gpu", "RTX 5090"], (1,)),
    (["estimate", "--cell", CELL], (0,)),
    (["ci-matrix"], (0,)),
    (["ci-matrix", "--format", "gitlab"], (0,)),
    (["modelopt-check", "--vllm", "0.8.5"], (0, 1)),
]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ".git").exists():
        skip_or_fail("not a git checkout")
    dest = tmp_path_factory.mktemp("clone") / "vllm-matrix"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    assert _git(dest, "status", "--porcelain") == ""
    return dest


@pytest.mark.usefixtures("need_index")
@pytest.mark.parametrize(("argv", "answers"), QUERIES, ids=[" ".join(a) for a, _ in QUERIES])
def test_a_query_in_a_fresh_clone_changes_no_tracked_file(
    clone: Path, argv: list[str], answers: tuple[int, ...]
) -> None:
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "vllm_matrix", *argv],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.returncode in answers, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert _git(clone, "status", "--porcelain") == "", argv


@pytest.mark.usefixtures("need_index")
def test_invoke_queries_in_a_fresh_clone_change_nothing(clone: Path) -> None:
    inv = Path(sys.executable).with_name("inv")
    if not inv.exists():
        skip_or_fail("invoke is not installed beside this Python")
    for args in (["facts", "0.8.5"], ["preflight", "--cell", "vllm0.8.5"], ["cells"]):
        r = subprocess.run([str(inv), *args], cwd=clone, capture_output=True, text=True)
        assert r.returncode == 0, (args, r.stderr[-2000:])
        assert _git(clone, "status", "--porcelain") == "", args


@pytest.mark.usefixtures("need_index")
def test_a_render_from_a_fresh_clone_does_not_shrink_the_committed_report(clone: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vllm_matrix", "report"],
        cwd=clone,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not rendering over reports/compat.md" in r.stderr
    assert _git(clone, "status", "--porcelain") == ""
    assert (clone / "results" / "unpublished-reports" / "compat.md").is_file()


@pytest.mark.usefixtures("need_index")
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--depth", "preflight", "--cell", "vllm0.8.5"],  # nox -s matrix, inv run
        ["map", "--render"],  # the committed map drawn again from reports/map.json
    ],
    ids=["run", "map --render"],
)
def test_a_render_in_a_fresh_clone_changes_no_tracked_file(clone: Path, argv: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vllm_matrix", *argv], cwd=clone, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert _git(clone, "status", "--porcelain") == "", argv
