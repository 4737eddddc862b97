"""matrix.toml → a CI job matrix: one job per cell, for the CI runners a team already has.

No scheduler: GitHub Actions (``strategy.matrix`` from ``{"include": [...]}`` JSON) or
GitLab (``parallel:matrix``) fans the cells out; each job runs
``nox -s matrix -- --cell <id> --depth <D>`` and keeps its ``results/<id>.json``; a last
job merges them (``nox -s report -- --merge DIR...``). ``.github/workflows/matrix.yml``
is the worked example.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

from vllm_matrix.commands.common import load_matrix
from vllm_matrix.infra.config import Matrix
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.pipeline.plan import DEPTHS

FORMATS = ("github", "gitlab")
# GitHub Actions: "A matrix can generate a maximum of 256 jobs per workflow run";
# GitLab: parallel:matrix "cannot create more than 200 jobs".
MAX_JOBS = {"github": 256, "gitlab": 200}
GITLAB_JOB = "vllm-matrix-cell"


@dataclass(frozen=True)
class Job:
    id: str
    vllm: str
    torch: str
    cuda: str
    provider: str
    python: str
    arch: str  # "9.0" or "9.0,12.0": a string, so GitLab can take it as a variable
    depth: str
    command: str


def command(cell_id: str, depth: str) -> str:
    # Cell ids are [A-Za-z0-9.+-] only: safe in a shell word without quoting.
    return f"nox -s matrix -- --cell {cell_id} --depth {depth}"


def jobs(matrix: Matrix, depth: str, cell: str | None = None) -> tuple[Job, ...]:
    """One job per cell of ``matrix`` (those whose id contains ``cell``)."""
    if depth not in DEPTHS:
        raise ConfigError(f"unknown depth '{depth}'", fix=f"use one of {', '.join(DEPTHS)}")
    return tuple(
        Job(
            c.id,
            c.vllm,
            c.torch,
            c.cuda,
            c.provider,
            c.python,
            ",".join(c.arch),
            depth,
            command(c.id, depth),
        )
        for c in matrix.select(cell)
    )


def _check_size(fmt: str, n: int) -> None:
    if n > MAX_JOBS[fmt]:
        raise ConfigError(
            f"{n} cells: more than the {MAX_JOBS[fmt]} jobs one {fmt} matrix may hold",
            fix="split the run with --cell (e.g. one workflow per vLLM version)",
        )


def github(js: tuple[Job, ...]) -> str:
    """``{"include": [...]}`` on one line (for ``$GITHUB_OUTPUT`` and ``fromJSON``)."""
    _check_size("github", len(js))
    return json.dumps({"include": [asdict(j) for j in js]}, separators=(",", ":"))


def _yaml_str(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar (YAML 1.2 is a JSON superset).
    return json.dumps(text, ensure_ascii=False)


def gitlab(js: tuple[Job, ...], source: str = "matrix.toml") -> str:
    """A GitLab job whose ``parallel:matrix`` holds one entry per cell (variables in
    capitals: CELL, VLLM, TORCH, ...), for a child pipeline or ``include:``."""
    _check_size("gitlab", len(js))
    out = [
        f"# Generated from {source} by `inv ci-matrix --format gitlab`: do not edit.",
        f"{GITLAB_JOB}:",
        "  parallel:",
        "    matrix:",
    ]
    for j in js:
        d = asdict(j)
        d["cell"] = d.pop("id")
        keys = ["cell", *(k for k in d if k != "cell")]
        for n, k in enumerate(keys):
            out.append(f"{'      - ' if n == 0 else '        '}{k.upper()}: {_yaml_str(d[k])}")
    out += [
        "  before_script:",
        "    - python3 -m pip install -e '.[dev]'",  # nox is in the dev extra
        "  script:",
        '    - nox -s matrix -- --cell "$CELL" --depth "$DEPTH"',
        "  artifacts:",
        "    when: always",
        "    paths:",
        '      - "results/*.json"',
    ]
    return "\n".join(out) + "\n"


def render(matrix: Matrix, fmt: str, depth: str, cell: str | None = None) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown CI format '{fmt}'", fix=f"use one of {', '.join(FORMATS)}")
    js = jobs(matrix, depth, cell)
    return github(js) + "\n" if fmt == "github" else gitlab(js, matrix.path.name)


def run(args: argparse.Namespace) -> int:
    """`ci-matrix`: the CI job matrix, one job per cell."""
    m, _ = load_matrix(args)
    print(render(m, args.format, args.depth, args.cell), end="")
    return 0
