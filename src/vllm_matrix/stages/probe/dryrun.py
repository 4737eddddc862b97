"""``nvcc --dryrun`` output: the pipeline's commands, each in its phase."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    # host-preprocess | front-end | device-preprocess | device-codegen | ptxas | fatbinary
    # | host-compile | rm | other
    phase: str
    argv: tuple[str, ...]


def parse_dryrun(text: str) -> tuple[list[Step], dict[str, str]]:
    """nvcc --dryrun output -> (the commands in order, the environment nvcc gives them)."""
    steps: list[Step] = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#$ "):
            continue
        body = line[3:].strip()
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", body)
        if m:
            env[m.group(1)] = m.group(2).strip()
            continue
        try:
            argv = tuple(_expand(a, env) for a in shlex.split(body))
        except ValueError:
            continue
        if not argv:
            continue
        steps.append(Step(_phase(argv), argv))
    return steps, env


_VAR_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _expand(token: str, env: dict[str, str]) -> str:
    """``$NAME`` / ``${NAME}`` of nvcc's own assignments, as its shell would expand them
    (nvcc 13 calls ``"$CICC_PATH/cicc"``; 12.x found cicc on its PATH)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(sub, token)


def _phase(argv: Sequence[str]) -> str:
    prog = Path(argv[0]).name
    if prog == "cudafe++":
        return "front-end"
    if prog == "cicc":
        return "device-codegen"
    if prog in ("ptxas", "fatbinary", "nvlink"):
        return "ptxas" if prog == "ptxas" else "fatbinary"
    if prog == "rm":
        return "rm"
    if "-E" in argv:
        device = any(a.startswith("-D__CUDA_ARCH__=") for a in argv)
        return "device-preprocess" if device else "host-preprocess"
    if "-c" in argv:
        return "host-compile"
    return "other"
