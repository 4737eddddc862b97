"""nox sessions, generated from matrix.toml. Thin: each calls the vllm-matrix CLI.

Sessions run in the current environment (`pip install -e '.[dev]'` once): the cells'
own toolchains and torch envs are created by the library in its cache, not by nox.
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
    """Every cell of matrix.toml up to --depth (default: what fits here), then the report.

    nox -s matrix -- --depth preflight --cell vllm0.8.5
    nox -s matrix -- 0.9.2 [--torch ...] [--cuda ...] [--arch ...]   (any release, one cell)

    Only the [[cell]] tables: the [grid] is `nox -s map`'s.
    """
    args = session.posargs
    if args and not args[0].startswith("-"):  # a release: one cell on its pinned toolchain
        _cli(session, "release", "--matrix", str(MATRIX), *args)
        return
    _cli(session, "run", "--matrix", str(MATRIX), *args)


@nox.session(python=False, name="map")
def map_(session: nox.Session) -> None:
    """The [grid] of matrix.toml (not run by `matrix`): preflight of every cell, probes at
    verdict boundaries within a budget, reports/map.{md,html}.

    nox -s map -- [--probe-budget SECONDS] [--screenshot]
    """
    _cli(session, "map", "--matrix", str(MATRIX), *session.posargs)


@nox.session(python=False)
def build(session: nox.Session) -> None:
    """Any release, in or out of the matrix: its pinned torch and a toolkit obtainable here,
    or the ones given; wheel into dist/, audit, smoke.

    nox -s build -- 0.9.2 [--torch 2.7.0] [--cuda 12.4 --provider debian] [--arch 9.0]
    """
    if not session.posargs:
        session.error("name a release: nox -s build -- 0.9.2 [--torch ...] [--cuda ...]")
    _cli(session, "release", "--matrix", str(MATRIX), "--depth", "build", *session.posargs)


@nox.session(python=False)
def newest(session: nox.Session) -> None:
    """The newest vLLM release that builds with a given torch.

    nox -s newest -- --torch 2.6.0 [--cuda 12.4] [--arch 9.0] [--depth preflight] [--json]
    """
    _cli(session, "newest", *session.posargs)


@nox.session(python=False)
def report(session: nox.Session) -> None:
    """Re-render reports/compat.{md,json} from results/ (or from many machines' files).

    nox -s report -- --merge DIR [DIR ...]
    """
    _cli(session, "report", "--matrix", str(MATRIX), *session.posargs)


@nox.session(python=False, name="ci-matrix")
def ci_matrix(session: nox.Session) -> None:
    """The CI job matrix from matrix.toml (GitHub include JSON or GitLab parallel:matrix).

    nox -s ci-matrix -- --format gitlab --depth build --cell vllm0.8.5
    """
    _cli(session, "ci-matrix", "--matrix", str(MATRIX), *session.posargs)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """ruff, mypy (strict on src/), import-linter (the layers in pyproject.toml) and pytest;
    extra args go to pytest."""
    session.run("ruff", "check", "src", "tests", "noxfile.py", "tasks.py", external=True)
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
    """vLLM in the active env (a Pixi/conda env or venv): its torch and toolkit, no env made.

    nox -s current -- --vllm 0.8.5 [--depth build] [--arch 12.0]
    """
    _cli(session, "run", "--env", "current", *session.posargs)


def _build_session(version: str) -> None:
    def session_fn(session: nox.Session) -> None:
        _build(session, version)

    session_fn.__doc__ = f"Build vLLM {version}'s matrix cells: wheel into dist/, audit, smoke."
    nox.session(python=False, name=f"build-{version}")(session_fn)


for _v in _versions():
    _build_session(_v)


@nox.session(python=False, name="bench-provision")
def bench_provision(session: nox.Session) -> None:
    """Cold toolkit/env provisioning (fresh caches), warm reuse, kill-and-recover."""
    session.run("python", "benchmarks/provision.py", *session.posargs, external=True)


@nox.session(python=False, name="bench-preflight")
def bench_preflight(session: nox.Session) -> None:
    """The shipped matrix at --depth preflight, warm caches: median of 5 wall times."""
    session.run("python", "benchmarks/preflight.py", *session.posargs, external=True)


@nox.session(python=False, name="bench-probe")
def bench_probe(session: nox.Session) -> None:
    """The probe's three cells, warm toolkit/env, median of 3 (-- --write saves it)."""
    session.run("python", "benchmarks/probe.py", *session.posargs, external=True)


@nox.session(python=False, name="bench-build")
def bench_build(session: nox.Session) -> None:
    """The canary's build: tool vs the raw pip wheel it wraps, no-change rebuild, resume."""
    session.run("python", "benchmarks/build.py", *session.posargs, external=True)


@nox.session(python=False, name="bench-faults")
def bench_faults(session: nox.Session) -> None:
    """Faults end as designed, one table row per case (developers; needs root).

    Issue 22 item 3: bad result files, damaged caches, kill -9 and Ctrl-C, bad inputs,
    --merge, exit codes, and broken setups (no uv, read-only cache, index down, disk full)
    end in ERROR cells; prints case / expected / observed / held.
    """
    session.run("python", "benchmarks/broken.py", *session.posargs, external=True)


@nox.session(python=False, name="device-wheels")
def device_wheels(session: nox.Session) -> None:
    """vLLM's runtime wheels the GPU machine lacks, listed and downloaded into .whl/GROUP.

    nox -s device-wheels -- 0.20.0 core
    """
    args = list(session.posargs)
    version = args[0] if args else "0.20.0"
    group = args[1] if len(args) > 1 else "core"
    session.run("python", "benchmarks/device_wheels.py", "--vllm", version, external=True)
    session.run("bash", "benchmarks/wheels_for_device.sh", version, group, external=True)


@nox.session(python=False, name="bench-cmake")
def bench_cmake(session: nox.Session) -> None:
    """CMake's own configure (compile_commands.json) vs the probe's home-made CMake model:
    units and flags per shipped cell, and the cost of each (-- --write saves it)."""
    session.run("python", "benchmarks/cmake_configure.py", *session.posargs, external=True)
