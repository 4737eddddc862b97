"""Every program the tool runs, where it comes from, and one check before it runs.

The registry is data (``knowledge/data/programs.toml``). ``proc.run`` resolves a bare program name
through :func:`require`, so a missing program is a :class:`ProgramMissing` (an ERROR of the
tool or the machine, never a vLLM FAIL) whose fix names the package that provides it.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from vllm_matrix.infra import datafiles, tomlfile
from vllm_matrix.infra.errors import ConfigError, ProgramMissing

HOWS = ("declared", "fetched", "system")
KEYS = ("how", "why", "requirement", "module", "debian", "optional")


@dataclass(frozen=True)
class Program:
    name: str
    how: str
    why: str
    requirement: str = ""  # declared: the pyproject requirement
    module: bool = False  # declared: run as `python -m NAME`
    debian: str = ""  # system: the Debian package that provides it
    optional: bool = False

    def fix(self) -> str:
        if self.how == "declared":
            return (
                f"it is a dependency of vllm-matrix ({self.requirement}): "
                "pip install -e . (in the environment that runs vllm-matrix)"
            )
        if self.how == "system":
            return f"install it (Debian package: {self.debian}) or put it on PATH"
        return (
            "the tool fetches it into the cell's toolkit or torch env: rerun the cell "
            "(a half-made cache entry is rebuilt); with --env current, install it into that env"
        )


def data_path() -> Path:
    return datafiles.data_path("programs.toml")


@cache
def registry() -> dict[str, Program]:
    doc = tomlfile.load(data_path())
    out: dict[str, Program] = {}
    for name, t in doc.data.get("program", {}).items():
        ctx = f"[program.{name}]"
        tomlfile.check_keys(doc, t, KEYS, ctx)
        how = tomlfile.require(doc, t, "how", str, ctx)
        if how not in HOWS:
            raise ConfigError(
                f"{doc.where('how')}: how = '{how}' in {ctx}", fix=tomlfile.did_you_mean(how, HOWS)
            )
        out[name] = Program(
            name,
            how,
            tomlfile.require(doc, t, "why", str, ctx),
            t.get("requirement", ""),
            bool(t.get("module", False)),
            t.get("debian", ""),
            bool(t.get("optional", False)),
        )
    return out


def listed(name: str) -> bool:
    return ("python" if name.startswith("python") else name) in registry()


def lookup(name: str) -> Program:
    """The registry entry for a program name (``python3.12`` is ``python``)."""
    reg = registry()
    key = "python" if name.startswith("python") else name
    if key not in reg:
        raise ProgramMissing(
            f"vllm-matrix runs '{name}', which knowledge/data/programs.toml does not list",
            fix="a bug in vllm-matrix: add the program to knowledge/data/programs.toml "
            "(tests/unit/test_programs.py should have caught it)",
        )
    return reg[key]


def find(name: str, path: str | None = None) -> str | None:
    """The program's path, or None. A declared program is also looked for beside the
    running interpreter: a venv's bin/ need not be on PATH (`venv/bin/python -m ...`)."""
    found = shutil.which(name, path=path)
    if found is None and path is None:
        beside = Path(sys.executable).parent / name
        if beside.is_file():
            found = str(beside)
    return found


def require(name: str, path: str | None = None) -> str:
    """The program's path; :class:`ProgramMissing` naming what provides it when absent."""
    prog = lookup(name)
    found = find(name, path)
    if found is None:
        raise ProgramMissing(f"{name} not found ({prog.why})", fix=prog.fix())
    return found


def python_module(name: str) -> list[str]:
    """``[sys.executable, "-m", name]`` for a declared module, checked first."""
    prog = lookup(name)
    if importlib.util.find_spec(name) is None:
        raise ProgramMissing(
            f"Python module {name} not found in {Path(sys.executable).name} ({prog.why})",
            fix=prog.fix(),
        )
    return [sys.executable, "-m", name]


def uv() -> list[str]:
    """The uv command: its executable, else `python -m uv` (the PyPI wheel has both)."""
    found = find("uv")
    if found is not None:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    prog = lookup("uv")
    raise ProgramMissing(f"uv not found ({prog.why})", fix=prog.fix())
