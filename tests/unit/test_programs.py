"""Every program the code runs is accounted for in knowledge/data/programs.toml.

The scan reads src/ as the code is written: argument lists handed to the subprocess wrapper
(proc.run, proc.output_of, and the small helpers that wrap them), programs.require/find,
shutil.which and `python -m MODULE`. A new program that is not declared, fetched or checked
fails here, in CI, instead of on a user's fresh machine.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from vllm_matrix.infra import programs
from vllm_matrix.infra.errors import ProgramMissing

SRC = Path(__file__).resolve().parents[2] / "src" / "vllm_matrix"
PYPROJECT = SRC.parents[1] / "pyproject.toml"
RUNNERS = {"run", "output_of", "_apt", "_git"}
LOOKUPS = {"require", "find", "which", "python_module"}


ARGV_NAMES = {"argv", "cmd", "command"}


def _owner(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id
    return ""


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _literal_head(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:  # f"python{version}"
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def collect(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name, arg = _name(node.func), node.args[0]
            if name in RUNNERS and isinstance(arg, ast.List | ast.Tuple) and arg.elts:
                head = _literal_head(arg.elts[0])
                if head is not None:
                    found.add(head)
            elif name in LOOKUPS and _owner(node.func) in ("programs", "shutil"):
                head = _literal_head(arg)
                if head is not None:
                    found.add(head)
        if isinstance(node, ast.Assign | ast.AnnAssign):  # argv = ["patch", ...]; run(argv)
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            if (
                any(isinstance(t, ast.Name) and t.id in ARGV_NAMES for t in targets)
                and isinstance(value, ast.List | ast.Tuple)
                and value.elts
            ):
                head = _literal_head(value.elts[0])
                if head is not None:
                    found.add(head)
        if isinstance(node, ast.List | ast.Tuple):  # [..., "-m", "pip", ...]
            for a, b in zip(node.elts, node.elts[1:], strict=False):
                if _literal_head(a) == "-m" and _literal_head(b):
                    found.add(_literal_head(b) or "")
    return found


def _all_programs() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for prog in collect(ast.parse(path.read_text(), str(path))):
            out.setdefault(prog, set()).add(path.name)
    return out


def test_scan_sees_the_programs_the_code_runs() -> None:
    # The scan itself must work, or the test below could never fail.
    seen = set(_all_programs())
    assert {"uv", "pip", "git", "patch", "readelf", "apt-get", "dpkg"} <= seen


def test_every_program_is_declared_fetched_or_checked() -> None:
    reg = programs.registry()
    missing = {
        prog: sorted(files)
        for prog, files in _all_programs().items()
        if ("python" if prog.startswith("python") else prog) not in reg
    }
    assert not missing, (
        f"programs run by the code but not in knowledge/data/programs.toml: {missing}"
    )


def test_declared_programs_are_dependencies() -> None:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in deps}
    for p in programs.registry().values():
        if p.how == "declared":
            assert p.requirement in names, f"{p.name}: declared but not in pyproject dependencies"


def test_system_programs_name_their_package() -> None:
    for p in programs.registry().values():
        if p.how == "system":
            assert p.debian, f"{p.name}: a system program must name the package providing it"


def test_subprocess_only_in_the_wrapper() -> None:
    """Workers run in another interpreter, without vllm_matrix (so without proc.py): the
    partial build's driver wraps setup.py's own subprocess.check_call, the model worker
    runs cuobjdump and c++filt with proc.output_of's rule."""
    users = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "workers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if "subprocess" in names:
                users.append(path.name)
    assert users == ["proc.py"], users


def test_missing_program_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(programs.sys, "executable", "/nonexistent/python")
    with pytest.raises(ProgramMissing) as info:
        programs.require("readelf")
    assert "binutils" in (info.value.fix or "")
    with pytest.raises(ProgramMissing) as info:
        programs.require("readelf", path="/nonexistent")
    assert "readelf not found" in info.value.message


def test_uv_missing_says_it_is_a_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(programs.sys, "executable", "/nonexistent/python")
    monkeypatch.setattr(programs.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ProgramMissing) as info:
        programs.uv()
    assert info.value.message.startswith("uv not found")
    assert "dependency of vllm-matrix" in (info.value.fix or "")
    assert "pip install -e ." in (info.value.fix or "")


def test_unlisted_program_is_a_bug_not_a_traceback() -> None:
    with pytest.raises(ProgramMissing) as info:
        programs.require("definitely-not-listed")
    assert "programs.toml" in info.value.message
