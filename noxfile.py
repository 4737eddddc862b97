"""nox sessions of vllm-matrix: each calls the `python -m vllm_matrix` CLI.

The user's sessions come first. `bench-*` and `device-*` sessions are the project's own
measurements and GPU-machine runs, for developers (nox has no groups: the prefix and the
first word of the description say it). Sessions run in the current environment
(`pip install -e '.[tasks]'` once; '.[dev]' for the tests); the cells' toolkits and
torch envs live in the cache.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["matrix"]

HERE = Path(__file__).parent
MATRIX = HERE / "matrix.toml"


def _versions() -> list[str]:
    try:
        cells = tomllib.loads(MATRIX.read_text()).get("cell", [])
    except (OSError, tomllib.TOMLDecodeError):
        return []  # the CLI reports a broken matrix properly
    return list(dict.fromkeys(str(c.get("vllm")) for c in cells if c.get("vllm")))


def _cli(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "vllm_matrix", *args, external=True)


@nox.session(python=False)
def matrix(session: nox.Session) -> None:
    """Run every [[cell]] of matrix.toml to a depth, then render the report.

    Options: `python -m vllm_matrix run --help`; a release first (`-- 0.9.2 ...`) runs that
    one release instead: `python -m vllm_matrix release --help`.
    """
    args = session.posargs
    if args and not args[0].startswith("-"):  # a release: one cell on its pinned toolchain
        _cli(session, "release", "--matrix", str(MATRIX), *args)
        return
    _cli(session, "run", "--matrix", str(MATRIX), *args)


@nox.session(python=False, name="map")
def map_(session: nox.Session) -> None:
    """Preflight the [grid] of matrix.toml (~7,000 cells) and render reports/map.*.

    Options: `python -m vllm_matrix map --help`.
    """
    _cli(session, "map", "--matrix", str(MATRIX), *session.posargs)


@nox.session(python=False)
def build(session: nox.Session) -> None:
    """Build any release into a wheel in dist/ (audited, smoke-tested), matrix or not.

    `release --depth build`; options: `python -m vllm_matrix release --help`.
    """
    if not session.posargs:
        session.error("name a release: nox -s build -- 0.9.2 [--torch ...] [--cuda ...]")
    _cli(session, "release", "--matrix", str(MATRIX), "--depth", "build", *session.posargs)


@nox.session(python=False)
def estimate(session: nox.Session) -> None:
    """Estimate a build's cost before it starts, from measured per-unit costs.

    Options: `python -m vllm_matrix estimate --help`.
    """
    _cli(session, "estimate", "--matrix", str(MATRIX), *session.posargs)


@nox.session(python=False)
def newest(session: nox.Session) -> None:
    """Find the newest vLLM release that builds with a given torch.

    Options: `python -m vllm_matrix newest --help`.
    """
    _cli(session, "newest", *session.posargs)


@nox.session(python=False)
def report(session: nox.Session) -> None:
    """Render reports/compat.{md,json} and blackwell.md from results/ or merged results.

    Options: `python -m vllm_matrix report --help`.
    """
    _cli(session, "report", "--matrix", str(MATRIX), *session.posargs)


@nox.session(python=False, name="ci-matrix")
def ci_matrix(session: nox.Session) -> None:
    """Print the CI job matrix of matrix.toml (GitHub include JSON, GitLab parallel:matrix).

    Options: `python -m vllm_matrix ci-matrix --help`.
    """
    _cli(session, "ci-matrix", "--matrix", str(MATRIX), *session.posargs)


@nox.session(python=False)
def currency(session: nox.Session) -> None:
    """Check the knowledge against the index: new releases, patch ranges, knowledge gaps.

    Not part of `tests`: the suite never depends on what the index holds today. Options:
    `python -m vllm_matrix currency --help`.
    """
    _cli(session, "currency", "--matrix", str(MATRIX), *session.posargs)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run the checks: ruff, mypy --strict, import-linter and pytest (args go to pytest)."""
    session.run(
        "ruff", "check", "src", "tests", "benchmarks", "noxfile.py", "tasks.py", external=True
    )
    session.run("mypy", external=True)
    session.run("lint-imports", external=True)
    args = session.posargs or ["-m", "not heavy"]
    session.run("python", "-m", "pytest", "-n", "2", *args, external=True)


def _build(session: nox.Session, version: str) -> None:
    _cli(
        session,
        "run",
        "--matrix",
        str(MATRIX),
        "--cell",
        f"vllm{version}-",
        "--depth",
        "build",
        *session.posargs,
    )


@nox.session(python=False)
def current(session: nox.Session) -> None:
    """Check a vLLM release against the active env (Pixi, conda or venv): its torch, toolkit.

    `run --env current`; options: `python -m vllm_matrix run --help`.
    """
    _cli(session, "run", "--env", "current", *session.posargs)


def _build_session(version: str) -> None:
    def session_fn(session: nox.Session) -> None:
        _build(session, version)

    session_fn.__doc__ = f"Build vLLM {version}'s matrix cells into wheels in dist/, audited."
    nox.session(python=False, name=f"build-{version}")(session_fn)


for _v in _versions():
    _build_session(_v)


@nox.session(python=False, name="bench-provision")
def bench_provision(session: nox.Session) -> None:
    """Bench (developers): toolkit/env provisioning cold, warm, killed and recovered."""
    session.run("python", "benchmarks/provision.py", *session.posargs, external=True)


@nox.session(python=False, name="bench-preflight")
def bench_preflight(session: nox.Session) -> None:
    """Bench (developers): the shipped matrix at preflight, warm, median of 5 runs."""
    session.run("python", "benchmarks/preflight.py", *session.posargs, external=True)


@nox.session(python=False, name="bench-probe")
def bench_probe(session: nox.Session) -> None:
    """Bench (developers): the probe's three cells, warm, median of 3 (--write saves)."""
    session.run("python", "benchmarks/probe.py", *session.posargs, external=True)


@nox.session(python=False, name="bench-build")
def bench_build(session: nox.Session) -> None:
    """Bench (developers): the canary's build against raw pip wheel, rebuild, resume."""
    session.run("python", "benchmarks/build.py", *session.posargs, external=True)


@nox.session(python=False, name="bench-faults")
def bench_faults(session: nox.Session) -> None:
    """Bench (developers): faults end as designed, one table row per case (needs root).

    Issue 22 item 3: bad result files, damaged caches, kill -9 and Ctrl-C, bad inputs,
    --merge, exit codes, and broken setups (no uv, read-only cache, index down, disk full)
    end in ERROR cells; prints case / expected / observed / held.
    """
    session.run("python", "tests/acceptance/broken.py", *session.posargs, external=True)


@nox.session(python=False, name="device-wheels")
def device_wheels(session: nox.Session) -> None:
    """Device run (developers): the runtime wheels the GPU machine lacks, into .whl/GROUP.

    nox -s device-wheels -- 0.20.0 core
    """
    args = list(session.posargs)
    version = args[0] if args else "0.20.0"
    group = args[1] if len(args) > 1 else "core"
    session.run("python", "benchmarks/device/device_wheels.py", "--vllm", version, external=True)
    session.run("bash", "benchmarks/device/wheels_for_device.sh", version, group, external=True)


@nox.session(python=False, name="bench-cmake")
def bench_cmake(session: nox.Session) -> None:
    """Bench (developers): CMake's own configure against the probe's CMake model.

    Units and flags per shipped cell, and the cost of each (-- --write saves it)."""
    session.run("python", "benchmarks/studies/cmake_configure.py", *session.posargs, external=True)
