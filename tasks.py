"""invoke tasks: the stages, callable one by one (`inv --list`). Thin: parse, call the library."""

from __future__ import annotations

import sys

from invoke import task
from invoke.context import Context

from vllm_matrix.cli import main


def _run(argv: list[str]) -> None:
    rc = main(argv)
    if rc:
        sys.exit(rc)


@task(help={"version": "release (0.8.5), path:DIR or git:URL@TAG", "json": "print JSON"})
def facts(c: Context, version: str, json: bool = False) -> None:
    """Pins and facts read from a vLLM source tree."""
    _run(["facts", version] + (["--json"] if json else []))


@task(
    help={
        "matrix": "matrix file",
        "cell": "only cells whose id contains this",
        "json": "print JSON",
    }
)
def preflight(c: Context, matrix: str = "matrix.toml", cell: str = "", json: bool = False) -> None:
    """Predict each cell's verdict from source facts and toolchain knowledge (no compile)."""
    _run(
        ["preflight", "--matrix", matrix]
        + (["--cell", cell] if cell else [])
        + (["--json"] if json else [])
    )


@task(
    help={
        "matrix": "matrix file",
        "depth": "preflight|toolkit|probe|build",
        "cell": "only cells whose id contains this",
    }
)
def run(c: Context, matrix: str = "matrix.toml", depth: str = "preflight", cell: str = "") -> None:
    """Run cells up to a depth and render reports/."""
    _run(["run", "--matrix", matrix, "--depth", depth] + (["--cell", cell] if cell else []))


@task(
    help={
        "cell": "the cell (id or a unique part of it)",
        "vllm": "a release: its cells in the matrix, or with --env current the version to build",
        "env": "'current': build in the active env (its torch, its toolkit) instead of a cell's",
        "arch": "with --env current: arches (default TORCH_CUDA_ARCH_LIST)",
        "matrix": "matrix file",
        "max_jobs": "MAX_JOBS (default: from cores and free RAM)",
        "nvcc_threads": "NVCC_THREADS (default: from free RAM)",
        "clean": "remake the work copy (no resume)",
        "no_ccache": "build without ccache",
        "force": "go on past a predicted failure",
    }
)
def build(
    c: Context,
    cell: str = "",
    vllm: str = "",
    env: str = "",
    arch: str = "",
    matrix: str = "matrix.toml",
    max_jobs: int = 0,
    nvcc_threads: int = 0,
    clean: bool = False,
    no_ccache: bool = False,
    force: bool = False,
) -> None:
    """Build a wheel into dist/ (probe first, then the build, audit and smoke stages)."""
    argv = ["run", "--matrix", matrix, "--depth", "build"]
    if env:
        argv += ["--env", env, "--vllm", vllm] + (["--arch", arch] if arch else [])
    else:
        argv += ["--cell", cell or (f"vllm{vllm}-" if vllm else "")]
    argv += (["--max-jobs", str(max_jobs)] if max_jobs else []) + (
        ["--nvcc-threads", str(nvcc_threads)] if nvcc_threads else []
    )
    argv += (["--clean"] if clean else []) + (["--no-ccache"] if no_ccache else [])
    _run(argv + (["--force"] if force else []))


@task(help={"matrix": "matrix file"})
def cells(c: Context, matrix: str = "matrix.toml") -> None:
    """List the matrix's cell ids."""
    _run(["cells", "--matrix", matrix])


@task(help={"matrix": "matrix file"})
def report(c: Context, matrix: str = "matrix.toml") -> None:
    """Re-render reports/compat.{json,md} from results/."""
    _run(["report", "--matrix", matrix])


@task(
    help={
        "cell": "the cell (id or a unique part of it)",
        "env": "'current': the active env instead of a cell",
        "arch": "arches for --env current",
        "matrix": "matrix file",
        "json": "print JSON",
    }
)
def doctor(
    c: Context,
    cell: str = "",
    env: str = "",
    arch: str = "",
    matrix: str = "matrix.toml",
    json: bool = False,
) -> None:
    """nvcc, host gcc, torch (CUDA, arches, ABI), cmake/ninja, fixups and problems."""
    _run(
        ["doctor", "--matrix", matrix]
        + (["--cell", cell] if cell else [])
        + (["--env", env] if env else [])
        + (["--arch", arch] if arch else [])
        + (["--json"] if json else [])
    )


@task(help={"cell": "the cell (id or a unique part of it)", "matrix": "matrix file"})
def pixi_snippet(c: Context, cell: str, matrix: str = "matrix.toml") -> None:
    """[tool.pixi.*] tables that reproduce a cell, from the fixups its run used."""
    _run(["pixi-snippet", "--matrix", matrix, "--cell", cell])


@task(iterable=["version"], help={"version": "torch version (repeatable)"})
def derive_torch(c: Context, version: list[str]) -> None:
    """Torch wheel facts (CUDA, SASS/PTX arches, Pythons) as TOML, read from the real wheels."""
    _run(["derive-torch", *version])


@task(help={"write": "write data/vllm_pins.toml instead of printing"})
def derive_pins(c: Context, write: bool = False) -> None:
    """vLLM release → torch pin for every sdist on the index."""
    _run(["derive-pins"] + (["--write"] if write else []))


@task(
    iterable=["git"],
    help={
        "vllm": "release (0.8.5), path:DIR or git:URL@TAG",
        "git": "a local clone or mirror to export from (repeatable)",
        "offline": "no git fetch: only --git dirs",
        "json": "print JSON",
    },
)
def prefetch(
    c: Context,
    vllm: str,
    git: list[str] | None = None,
    offline: bool = False,
    json: bool = False,
) -> None:
    """Bring a vLLM version's FetchContent sources (CUTLASS, FA, FlashMLA) into the cache."""
    _run(
        ["prefetch", "--vllm", vllm]
        + [a for d in git or [] for a in ("--git", d)]
        + (["--offline"] if offline else [])
        + (["--json"] if json else [])
    )


@task(
    help={
        "matrix": "matrix file (its [grid])",
        "probe_budget": "seconds for probes at verdict boundaries (default 0: preflight only)",
        "screenshot": "also draw reports/map.png in headless Chromium",
    }
)
def map(
    c: Context, matrix: str = "matrix.toml", probe_budget: float = 0.0, screenshot: bool = False
) -> None:
    """The map: matrix.toml's [grid] at preflight, probes at boundaries, reports/map.*."""
    _run(
        ["map", "--matrix", matrix, "--probe-budget", str(probe_budget)]
        + (["--screenshot"] if screenshot else [])
    )
