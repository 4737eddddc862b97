"""invoke tasks: the stages, callable one by one (`inv --list`). Thin: parse, call the library."""

from __future__ import annotations

import sys

from invoke import task
from invoke.context import Context

from vllm_matrix.cli import main
from vllm_matrix.pipeline.plan import DEFAULT_DEPTH, DEPTHS


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
        "depth": "|".join(DEPTHS),
        "cell": "only cells whose id contains this",
    }
)
def run(
    c: Context, matrix: str = "matrix.toml", depth: str = DEFAULT_DEPTH, cell: str = ""
) -> None:
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
        "targets": "CMake targets only, e.g. _C,_C_stable_libtorch: a partial build, no wheel",
        "no_probe": "skip the probe (the build compiles those units anyway)",
        "gpu": "then the gpu stage: run the FP8 kernels on this machine's GPU",
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
    targets: str = "",
    no_probe: bool = False,
    gpu: bool = False,
) -> None:
    """Build a wheel into dist/ (probe first, then the build, audit and smoke stages)."""
    argv = ["run", "--matrix", matrix, "--depth", "gpu" if gpu else "build"]
    argv += (["--targets", targets] if targets else []) + (["--no-probe"] if no_probe else [])
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


@task(
    iterable=["merge"],
    help={"matrix": "matrix file", "merge": "a dir of result files from a machine (repeatable)"},
)
def report(c: Context, matrix: str = "matrix.toml", merge: list[str] | None = None) -> None:
    """Re-render reports/compat.{json,md} from results/ (or merge many machines' files)."""
    _run(["report", "--matrix", matrix] + (["--merge", *merge] if merge else []))


@task(
    help={
        "format": "github (strategy.matrix include JSON) | gitlab (parallel:matrix YAML)",
        "depth": f"the depth each job runs to: {'|'.join(DEPTHS)}",
        "cell": "only cells whose id contains this",
        "matrix": "matrix file",
    }
)
def ci_matrix(
    c: Context,
    format: str = "github",
    depth: str = DEFAULT_DEPTH,
    cell: str = "",
    matrix: str = "matrix.toml",
) -> None:
    """The CI job matrix, one job per cell (see .github/workflows/matrix.yml)."""
    _run(
        ["ci-matrix", "--matrix", matrix, "--format", format, "--depth", depth]
        + (["--cell", cell] if cell else [])
    )


TARGET_HELP = {
    "arch": "the target's GPU arches, e.g. 12.0 (default: the GPU here)",
    "gpu": 'the target\'s GPU by name, e.g. "RTX 5090" (instead of --arch)',
    "driver_cuda": "the newest CUDA the target's driver runs, e.g. 12.8",
    "env": "an env prefix (venv, conda/Pixi prefix or Pixi project), read from its files",
}


def _target(arch: str, gpu: str, driver_cuda: str, env: str) -> list[str]:
    return (
        (["--arch", arch] if arch else [])
        + (["--gpu", gpu] if gpu else [])
        + (["--driver-cuda", driver_cuda] if driver_cuda else [])
        + (["--env", env] if env else [])
    )


@task(
    help={
        "cell": "the cell (id or a unique part of it)",
        "version": "a release instead of a cell (its pinned toolchain)",
        "cores": "the building machine's cores (default: this one's)",
        "mem": "its available memory in GiB (default: this one's)",
        "targets": "a partial build's targets (default _C,_C_stable_libtorch)",
        "matrix": "matrix file",
        "json": "print JSON",
    }
)
def estimate(
    c: Context,
    cell: str = "",
    version: str = "",
    cores: int = 0,
    mem: float = 0.0,
    targets: str = "",
    matrix: str = "matrix.toml",
    json: bool = False,
) -> None:
    """A build's cost before it: edges, CPU-hours, wall on N cores, MAX_JOBS, memory, disk."""
    _run(
        ["estimate", "--matrix", matrix]
        + ([version] if version else [])
        + (["--cell", cell] if cell else [])
        + (["--cores", str(cores)] if cores else [])
        + (["--mem", str(mem)] if mem else [])
        + (["--targets", targets] if targets else [])
        + (["--json"] if json else [])
    )


@task(
    help={
        "cell": "the cell (id or a unique part of it)",
        "matrix": "matrix file",
        "json": "print JSON",
        **TARGET_HELP,
        "env": "an env prefix to read (default: $CONDA_PREFIX, $VIRTUAL_ENV, "
        "$PIXI_PROJECT_ROOT), or 'current' (this interpreter)",
    }
)
def doctor(
    c: Context,
    cell: str = "",
    env: str = "",
    arch: str = "",
    gpu: str = "",
    driver_cuda: str = "",
    matrix: str = "matrix.toml",
    json: bool = False,
) -> None:
    """An env's toolchain against the target: nvcc, torch's arch list, problems with fixes."""
    _run(
        ["doctor", "--matrix", matrix]
        + (["--cell", cell] if cell else [])
        + _target(arch, gpu, driver_cuda, env)
        + (["--json"] if json else [])
    )


@task(
    help={
        "version": "a vLLM release, e.g. 0.8.5",
        "torch": "default: the release's pin; 2.6.0 or a variant 2.7.0+cu128",
        "cuda": "nvcc version (default: the torch's CUDA)",
        "python": "default: the newest both vLLM and torch accept",
        "depth": "preflight (every rule, seconds) | toolkit | probe | build ...",
        "matrix": "matrix file",
        **TARGET_HELP,
    }
)
def release(
    c: Context,
    version: str,
    torch: str = "",
    cuda: str = "",
    python: str = "",
    depth: str = "preflight",
    arch: str = "",
    gpu: str = "",
    driver_cuda: str = "",
    env: str = "",
    matrix: str = "matrix.toml",
) -> None:
    """One release x torch x CUDA for the target: every preflight rule, what to change."""
    _run(
        ["release", version, "--matrix", matrix, "--depth", depth]
        + (["--torch", torch] if torch else [])
        + (["--cuda", cuda] if cuda else [])
        + (["--python", python] if python else [])
        + _target(arch, gpu, driver_cuda, env)
    )


@task(
    help={
        "cell": "the cell (id or a unique part of it)",
        "matrix": "matrix file",
        "torch_channel": "torch from this conda channel (default: $VLLM_MATRIX_TORCH_CHANNEL)",
        "tool_path": "where the Pixi workspace has a vllm-matrix checkout (default vllm-matrix)",
    }
)
def pixi_snippet(
    c: Context,
    cell: str,
    matrix: str = "matrix.toml",
    torch_channel: str = "",
    tool_path: str = "vllm-matrix",
) -> None:
    """A pixi.toml that builds the cell's vLLM, from facts alone (no local toolkit needed)."""
    extra = ["--torch-channel", torch_channel] if torch_channel else []
    extra += ["--tool-path", tool_path]
    _run(["pixi-snippet", "--matrix", matrix, "--cell", cell, *extra])


@task(
    help={
        "torch": "the torch you have: 2.6.0 (the index's wheel) or a variant 2.7.1+cu128",
        "cuda": "nvcc version (default: --env's nvcc, else the torch build's CUDA)",
        "python": "Python version (default: --env's, else 3.12)",
        "depth": "preflight (default: seconds) | probe (also compile the answer and the next "
        "newer release: minutes)",
        "verbose": "also list every release of the walk",
        "json": "print JSON",
        **TARGET_HELP,
    }
)
def newest(
    c: Context,
    torch: str = "",
    cuda: str = "",
    arch: str = "",
    gpu: str = "",
    driver_cuda: str = "",
    env: str = "",
    python: str = "",
    depth: str = "preflight",
    verbose: bool = False,
    json: bool = False,
) -> None:
    """The newest vLLM release that builds with this torch for the target, else what to change."""
    _run(
        ["newest", "--depth", depth]
        + (["--torch", torch] if torch else [])
        + (["--cuda", cuda] if cuda else [])
        + (["--python", python] if python else [])
        + _target(arch, gpu, driver_cuda, env)
        + (["--verbose"] if verbose else [])
        + (["--json"] if json else [])
    )


@task(iterable=["version"], help={"version": "torch version (repeatable)"})
def derive_torch(c: Context, version: list[str]) -> None:
    """Torch wheel facts (CUDA, SASS/PTX arches, Pythons) as TOML, read from the real wheels."""
    _run(["derive-torch", *version])


@task(help={"since": "preflight only releases from this one on", "arch": "default 12.0"})
def currency(c: Context, since: str = "", arch: str = "12.0") -> None:
    """Is the knowledge current with the index? (exit 0 current, 1 stale, 3 no answer)"""
    _run(["currency", "--arch", arch] + (["--since", since] if since else []))


@task(help={"write": "write knowledge/data/vllm_pins.toml instead of printing"})
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
        "out": "directory for OUT/bf16 and OUT/fp8",
        "seed": "weights' seed",
        "compare": "also compare fp8 with bf16 on CPU (plain torch)",
    }
)
def tiny_model(c: Context, out: str, seed: int = 0, compare: bool = False) -> None:
    """A tiny Llama checkpoint, bf16 and ModelOpt FP8, made locally (needs '.[model]')."""
    _run(["tiny-model", "--out", out, "--seed", str(seed)] + (["--compare"] if compare else []))


@task(
    help={
        "dir": "what tiny-model --out wrote",
        "work": "worker outputs and the log",
        "python": "the Python that has vLLM",
        "json": "print JSON",
    }
)
def model(
    c: Context, dir: str, work: str = "results/model", python: str = "", json: bool = False
) -> None:
    """The model stage: vLLM serves the FP8 (modelopt) and bf16 checkpoints; compared."""
    _run(
        ["model", "--dir", dir, "--work", work]
        + (["--python", python] if python else [])
        + (["--json"] if json else [])
    )


@task(
    help={
        "matrix": "matrix file (its [grid])",
        "probe_budget": "seconds for probes at verdict boundaries (default 0: preflight only)",
        "screenshot": "also draw reports/map-<arch>.png (one per arch) in headless Chromium",
        "render": "only redraw reports/map.* from reports/map.json (no preflight, seconds)",
    }
)
def map(
    c: Context,
    matrix: str = "matrix.toml",
    probe_budget: float = 0.0,
    screenshot: bool = False,
    render: bool = False,
) -> None:
    """The map: matrix.toml's [grid] at preflight, probes at boundaries, reports/map.*."""
    _run(
        ["map", "--matrix", matrix, "--probe-budget", str(probe_budget)]
        + (["--screenshot"] if screenshot else [])
        + (["--render"] if render else [])
    )
