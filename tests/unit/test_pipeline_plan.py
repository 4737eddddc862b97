from __future__ import annotations

import dataclasses
import importlib.util
import inspect
from pathlib import Path

import pytest
from conftest import need_module

from vllm_matrix.infra import results
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.pipeline import plan
from vllm_matrix.pipeline.context import CellContext

NAMES = [s.name for s in plan.PLAN]


def test_the_plan_is_the_stage_order_results_know() -> None:
    # infra/results.py keeps plain tuples (infra imports nothing above it): they must be
    # the plan's.
    assert tuple(NAMES) == results.STAGE_ORDER
    assert tuple(s.name for s in plan.PLAN if s.compiles) == results.COMPILED
    assert list(plan.STAGES) == NAMES and len(set(NAMES)) == len(NAMES)


def test_depths_and_their_last_stages_come_from_the_plan() -> None:
    assert plan.DEPTHS == ("preflight", "toolkit", "probe", "build", "gpu", "model")
    assert plan.LAST_STAGE == {
        "preflight": "preflight",
        "toolkit": "env",
        "probe": "probe",
        "build": "smoke",
        "gpu": "gpu",
        "model": "model",
    }
    # A depth's stages are one run of the plan: depths never interleave.
    seen = [s.depth for s in plan.PLAN]
    assert seen == sorted(seen, key=plan.DEPTHS.index)
    assert plan.DEFAULT_DEPTH in plan.DEPTHS


def test_long_and_sided_stages() -> None:
    assert [s.name for s in plan.PLAN if s.long] == [
        "toolkit",
        "env",
        "probe",
        "build",
        "smoke",
        "gpu",
        "model",
    ]
    assert [s.name for s in plan.PLAN if s.sided] == ["probe", "build"]
    assert [s.name for s in plan.PLAN if s.interrupted is not None] == ["build"]


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
    for t in (tasks.run, tasks.ci_matrix):
        assert inspect.signature(t.body).parameters["depth"].default == plan.DEFAULT_DEPTH
