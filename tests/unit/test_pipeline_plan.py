from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_module

from vllm_matrix.infra import results
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.pipeline import plan
from vllm_matrix.pipeline.context import CellContext

NAMES = [s.name for s in plan.PLAN]


def test_the_plan_is_the_stage_order_results_know() -> None:
    # infra/results.py holds what the plan registered (infra imports nothing above it).
    assert tuple(NAMES) == results.STAGE_ORDER
    assert tuple(s.name for s in plan.PLAN if s.compiles) == results.COMPILED
    assert list(plan.STAGES) == NAMES and len(set(NAMES)) == len(NAMES)
    assert results.STAGE_ORDER[-1] == NAMES[-1] and "probe" in results.COMPILED


def test_the_stage_order_read_before_the_plan_registered_it_is_a_bug() -> None:
    unset = results.PlanNames("STAGE_ORDER")
    with pytest.raises(RuntimeError, match=r"import vllm_matrix\.pipeline\.plan first"):
        "probe" in unset  # noqa: B015
    code = (
        "import vllm_matrix.cli, vllm_matrix.infra.results as r; "
        "print(len(r.STAGE_ORDER), r.COMPILED[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == [str(len(NAMES)), "probe"], out.stderr


def test_depths_are_runs_of_the_plan_and_the_docs_name_each() -> None:
    # A depth's stages are one run of the plan: depths never interleave.
    seen = [s.depth for s in plan.PLAN]
    assert seen == sorted(seen, key=plan.DEPTHS.index)
    assert all(plan.STAGES[plan.LAST_STAGE[d]].depth == d for d in plan.DEPTHS)
    assert plan.DEFAULT_DEPTH in plan.DEPTHS
    # The user reads the depths in docs/commands.md: every one of the plan's, in its order.
    docs = (Path(__file__).parents[2] / "docs" / "commands.md").read_text()
    sentence = " ".join(docs.split("Depths: ", 1)[1].split(". A depth")[0].split())
    named = re.findall(r"(?:^|→ )`([a-z]+)`", sentence)
    assert tuple(named) == plan.DEPTHS


def test_what_a_stage_is_follows_from_what_it_does() -> None:
    """The flags' meaning, not a copy of the table: a stage that provisions a toolkit or
    an env takes minutes, so it is long (an "interrupted" result is written before it);
    only a long compiling stage's FAIL can be the machine's (sided); a Ctrl-C report of
    progress belongs to a long stage."""
    for s in plan.PLAN:
        if set(s.makes) & {"toolkit", "env"}:
            assert s.long, s.name
        assert not s.sided or (s.compiles and s.long), s.name
        assert s.interrupted is None or s.long, s.name
    assert any(s.sided for s in plan.PLAN) and any(s.interrupted for s in plan.PLAN)


def test_every_need_is_made_by_an_earlier_stage() -> None:
    products = {f.name for f in dataclasses.fields(CellContext)}
    made: set[str] = set()
    for s in plan.PLAN:
        assert set(s.needs) <= made, (s.name, set(s.needs) - made)
        assert set(s.makes) <= products, (s.name, set(s.makes) - products)
        made |= set(s.makes)


@pytest.mark.parametrize(
    ("depth", "last"),
    [("preflight", "preflight"), ("toolkit", "env"), ("probe", "probe"), ("build", "smoke")],
)
def test_the_cut_ends_with_the_depths_last_stage(depth: str, last: str) -> None:
    walk = plan.cut(depth)
    assert [s.name for s in walk] == NAMES[: NAMES.index(last) + 1]


def test_the_deepest_cut_is_the_whole_plan() -> None:
    assert plan.cut("model") == plan.PLAN
    assert plan.cut("gpu") == plan.PLAN[:-1]


def test_an_unknown_depth_says_what_exists() -> None:
    with pytest.raises(MatrixError, match="did you mean 'build'"):
        plan.cut("buidl")


def test_one_default_depth_everywhere() -> None:
    from vllm_matrix import cli

    p = cli.parser()
    for argv in (["run"], ["release", "0.9.2"], ["ci-matrix"]):
        assert p.parse_args(argv).depth == plan.DEFAULT_DEPTH, argv
    need_module("invoke", "the invoke tasks: tasks.py")
    path = Path(__file__).parents[2] / "tasks.py"
    spec = importlib.util.spec_from_file_location("vllm_matrix_tasks", path)
    assert spec is not None and spec.loader is not None
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    for t in (tasks.run, tasks.ci_matrix):  # the CLI's default, not restated: None passes none
        assert inspect.signature(t.body).parameters["depth"].default is None
