"""The command line is built from one option table (commands/options.py): each option declared
once, every command's parser a round trip of it, the invoke tasks made from it too."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import need_module

from vllm_matrix import cli
from vllm_matrix.commands import options
from vllm_matrix.commands.options import COMMANDS, Command, Option
from vllm_matrix.infra.config import load_matrix
from vllm_matrix.pipeline import plan, runner

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "vllm_matrix"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in cli.parser()._actions if a.dest == "cmd")
    return dict(sub.choices)  # type: ignore[arg-type]


def test_each_flag_is_declared_once_in_the_table_and_nowhere_else() -> None:
    tree = ast.parse((SRC / "commands" / "options.py").read_text())
    declared: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_opt":
            declared += [a.value for a in node.args if isinstance(a, ast.Constant)]
    assert declared and len(declared) == len(set(declared)), sorted(declared)
    # the command line's own files (workers run by path parse their own few arguments)
    for path in [SRC / "cli.py", *(SRC / "commands").glob("*.py"), ROOT / "tasks.py"]:
        if path.name != "options.py":  # cli.py's --version is argparse's own action
            assert path.read_text().count("add_argument(") == (path.name == "cli.py"), path


def _sample(opt: Option) -> Any:
    """A value unlike the default, of the option's kind."""
    if opt.action == "store_true":
        return True
    if opt.action == "append" or opt.kwargs.get("nargs") == "+":
        return ["a1", "a2"]
    if "choices" in opt.kwargs:
        return [c for c in opt.kwargs["choices"] if c != opt.kwargs.get("default")][-1]
    kind = opt.kwargs.get("type", str)
    return {int: 3, float: 2.5}.get(kind, f"v-{opt.dest}")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_round_trips_through_its_parser(command: Command) -> None:
    """Values -> to_argv -> the command's parser -> the same values; nothing given -> the
    declared defaults; the parser holds exactly the declared options."""
    parse = cli.parser().parse_args
    values = {o.dest: _sample(o) for o in command.options}
    got = vars(parse(options.to_argv(command, values)))
    assert {k: got[k] for k in values} == values
    assert got["fn"] is cli.RUN[command.name]
    assert {k: got[k] for k in command.fixed} == dict(command.fixed)
    needed = {o.dest: _sample(o) for o in command.options if o.kwargs.get("required")}
    needed |= {
        o.dest: _sample(o) for o in command.options if o.positional and o.kwargs.get("nargs") != "?"
    }
    bare = vars(parse(options.to_argv(command, needed)))
    for o in command.options:
        if o.dest not in needed:
            want = o.kwargs.get("default", False if o.action == "store_true" else None)
            assert bare[o.dest] == want, o.dest
    flags = {f for a in _subparsers()[command.name]._actions for f in a.option_strings}
    assert flags - {"-h", "--help"} == {f for o in command.options for f in o.flags if "-" in f[0]}


def test_depth_is_one_of_the_plans_depths_and_a_typo_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("run", "release", "ci-matrix"):
        depth = next(o for o in options.BY_NAME[name].options if o.dest == "depth")
        assert depth.kwargs["choices"] == plan.DEPTHS and depth.kwargs["default"] == "probe"
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(["run", "--depth", "buidl"])
    assert exc.value.code == 2 and "invalid choice: 'buidl'" in capsys.readouterr().err


def test_one_rule_for_the_default_arch() -> None:
    """--arch defaults to the target here (None: pipeline/target.py decides) except in the
    three commands about an arch across releases, which say 12.0 (the module's docstring)."""
    studied = {
        c.name: o.kwargs["default"]
        for c in COMMANDS
        for o in c.options
        if o.dest == "arch" and o.kwargs.get("default") is not None
    }
    assert studied == dict.fromkeys(("map-slice", "currency", "blackwell"), "12.0")
    assert all(f"``{n}``" in (options.__doc__ or "") for n in studied)
    parse = cli.parser().parse_args
    assert parse(["release", "0.9.2"]).arch is None and parse(["newest"]).arch is None


def test_run_vllm_without_env_current_picks_that_releases_cells(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    asked: list[str | None] = []

    def run_matrix(m: object, ws: object, depth: str, only: str | None, **k: object) -> list[Any]:
        asked.append(only)
        return []

    monkeypatch.setattr(runner, "run_matrix", run_matrix)
    # a copy: `run` renders reports/ beside its matrix, and the checkout's are tracked
    shutil.copy(ROOT / "matrix.toml", tmp_path / "matrix.toml")
    m = str(tmp_path / "matrix.toml")
    ids = [c.id for c in load_matrix(tmp_path / "matrix.toml").cells]
    assert cli.main(["preflight", "--matrix", m]) == 0
    assert cli.main(["run", "--matrix", m, "--vllm", "0.8.5", "--json"]) == 0
    assert asked == [None, "vllm0.8.5-"] and any(i.startswith("vllm0.8.5-") for i in ids)
    assert cli.main(["run", "--matrix", m, "--vllm", "0.8.5", "--cell", ids[0]]) == 2
    assert "--vllm and --cell both pick cells" in capsys.readouterr().err


def _tasks() -> ModuleType:
    need_module("invoke", "the dev extra: tasks.py is an invoke file")
    spec = importlib.util.spec_from_file_location("vllm_matrix_tasks", ROOT / "tasks.py")
    assert spec is not None and spec.loader is not None
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    return tasks


def test_the_invoke_tasks_take_the_clis_options_and_pass_them_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tasks = _tasks()
    from invoke import Context, Task

    found = {t.name: t for t in vars(tasks).values() if isinstance(t, Task)}
    assert {"build", "preflight", "facts", "prefetch", "doctor", "release"} <= set(found)
    for name, task in found.items():
        command = options.BY_NAME["run" if name == "build" else name]
        helps = {o.dest: o.help for o in command.options if o.dest != "depth" or name != "build"}
        assert {a.attr_name or a.name: a.help for a in task.get_arguments()} == helps, name
    said: list[list[str]] = []
    monkeypatch.setattr(tasks, "main", lambda argv: said.append(argv) or 0)
    found["build"](Context(), cell="vllm0.8.5-", max_jobs="4", no_ccache=True)
    found["facts"](Context(), "0.8.5", json=True)
    found["prefetch"](Context(), vllm="0.8.5", git=["a", "b"])
    assert said == [
        ["run", "--depth", "build", "--cell", "vllm0.8.5-", "--max-jobs", "4", "--no-ccache"],
        ["facts", "0.8.5", "--json"],
        ["prefetch", "--vllm", "0.8.5", "--git", "a", "--git", "b"],
    ]
