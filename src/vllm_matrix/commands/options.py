"""Every command-line option, declared once, and which command takes which (options as data,
as cibuildwheel and nox keep them): cli.py builds argparse from this table, tasks.py builds
the invoke tasks from it, and ``to_argv`` turns values back into a command line.

An option is declared here once: its flags, its kind (flag, value, list) and its help. A
command may give an option its own help or default where the option means something more
precise there (``.but(...)``); it never declares the flag again.

The default arch, one rule: ``--arch`` names the machine an answer is for, and with no
``--arch`` (nor ``--gpu``) that machine is this one: TORCH_CUDA_ARCH_LIST, else the GPUs
here (pipeline/target.py); a command that needs an arch and finds none stops with exit 2.
The three commands that answer about an arch across releases rather than about a machine
(``map-slice``, ``currency``, ``blackwell``) take ``STUDIED_ARCH`` (12.0, Blackwell) instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vllm_matrix.commands import cimatrix, pixi
from vllm_matrix.commands import newest as newest_mod
from vllm_matrix.knowledge import pins
from vllm_matrix.pipeline import plan
from vllm_matrix.stages import probe

# The arch the arch-study commands default to: sm_120, the arch this project is about.
STUDIED_ARCH = "12.0"
SOURCE_SPEC = "release (0.8.5), path:DIR or git:URL@TAG"

TARGET = "target (the machine the answer is for; default: this one)"
TOOLCHAIN = "the release's toolchain (default: its pins)"
BUILD = "the build (--depth build)"
PROBE = "the probe (--depth probe)"
ESTIMATED = "the build estimated"


@dataclass(frozen=True)
class Option:
    """One option: ``flags`` as argparse takes them (``("version",)`` for a positional), its
    help, the help group it is listed under, and argparse's other keywords."""

    flags: tuple[str, ...]
    help: str | None = None
    group: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return str(self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_"))

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    @property
    def action(self) -> str | None:
        return self.kwargs.get("action")

    def but(self, help: str | None = None, group: str | None = None, **kwargs: Any) -> Option:
        """The same flags with a command's own help, group, default, choices, nargs, action or
        required: what the option means there, never another flag."""
        return replace(
            self,
            help=self.help if help is None else help,
            group=self.group if group is None else group,
            kwargs={**self.kwargs, **kwargs},
        )

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        parser.add_argument(*self.flags, help=self.help, **self.kwargs)


def _opt(*flags: str, help: str | None = None, group: str | None = None, **kw: Any) -> Option:
    return Option(tuple(flags), help, group, kw)


FLAG = {"action": "store_true"}

# ---------------------------------------------------------------------------- the options
DEBUG = _opt("--debug", help="show tracebacks", **FLAG)
MATRIX = _opt("--matrix", help="matrix file (default ./matrix.toml)", default="matrix.toml")
JSON = _opt("--json", help="print JSON", **FLAG)
VERSION = _opt("version", help=SOURCE_SPEC)
VERSIONS = _opt("versions", help="2.6.0, or a variant 2.7.1+cu128 (its index set)", nargs="+")
VLLM = _opt("--vllm", help=SOURCE_SPEC)
CELL = _opt("--cell", help="only cells whose id contains this")
ONE_CELL = CELL.but(help="a matrix cell (id or a unique part of it)")
DEPTH = _opt(
    "--depth",
    help=f"how far each cell goes (default {plan.DEFAULT_DEPTH})",
    default=plan.DEFAULT_DEPTH,
    choices=plan.DEPTHS,
)
FORCE = _opt("--force", help="go on past a predicted failure (to check the prediction)", **FLAG)

ARCH = _opt(
    "--arch",
    help="GPU arches, e.g. 12.0 or '9.0;12.0' (default: TORCH_CUDA_ARCH_LIST, else the GPUs here)",
    group=TARGET,
)
ARCH_STUDIED = ARCH.but(
    help=f"the arch (default {STUDIED_ARCH}: Blackwell)", group="", default=STUDIED_ARCH
)
GPU = _opt("--gpu", help='a GPU name, e.g. "RTX 5090" (knowledge/data/gpus.toml)', group=TARGET)
DRIVER_CUDA = _opt(
    "--driver-cuda",
    help="the newest CUDA the target's driver runs (nvidia-smi's banner)",
    group=TARGET,
)
ENV = _opt(
    "--env",
    help="an environment prefix (venv, conda/Pixi prefix or Pixi project): its torch, nvcc "
    "and Python are read from its files, without running it",
    group=TARGET,
)
TARGET_OPTIONS = (ARCH, GPU, DRIVER_CUDA, ENV)

TORCH = _opt("--torch", help="default: the release's pin; a variant 2.7.0+cu128 for a build")
CUDA = _opt("--cuda", help="nvcc version (default: the torch's CUDA, or the nearest obtainable)")
PROVIDER = _opt("--provider", help="debian | pypi | system | conda-prefix")
PYTHON = _opt(
    "--python",
    help="default: the matrix's if vLLM and torch both accept it, else the newest both accept",
)
TOOLCHAIN_OPTIONS = tuple(o.but(group=TOOLCHAIN) for o in (TORCH, CUDA, PROVIDER, PYTHON))

MAX_JOBS = _opt(
    "--max-jobs", help="MAX_JOBS (default: from cores and free RAM)", group=BUILD, type=int
)
NVCC_THREADS = _opt(
    "--nvcc-threads", help="NVCC_THREADS (default: from free RAM)", group=BUILD, type=int
)
CLEAN = _opt("--clean", help="remake the work copy (no resume)", group=BUILD, **FLAG)
NO_CCACHE = _opt("--no-ccache", help="build without ccache", group=BUILD, **FLAG)
TARGETS = _opt(
    "--targets",
    help="CMake targets only (e.g. _C,_C_stable_libtorch): a partial build, never a wheel",
    group=BUILD,
)
NO_PROBE = _opt(
    "--no-probe", help="skip the probe (the build compiles its units)", group=BUILD, **FLAG
)
BUILT = _opt(
    "--built",
    help="a partial build compiled on another machine (the directory export-build wrote): "
    "the build stage takes it, checked against the cell, instead of compiling",
    group=BUILD,
    metavar="DIR",
)
BUILD_OPTIONS = (MAX_JOBS, NVCC_THREADS, CLEAN, NO_CCACHE)

UNITS = _opt(
    "--units",
    help="the units it selects (default) or all the build compiles (slow)",
    group=PROBE,
    choices=probe.UNITS_MODES,
)
NO_FRONT_END_CACHE = _opt(
    "--no-front-end-cache",
    help="neither read nor fill the front-end cache (a cold cost, to measure)",
    group=PROBE,
    **FLAG,
)
PROBE_DEPTH = _opt(
    "--probe-depth",
    help="front-end (default: it decided every verdict the probe study saw), auto (then code "
    "generation of arch-gated units within 180 s) or codegen (every unit)",
    group=PROBE,
    choices=probe.PROBE_DEPTHS,
)
CELLS_AT_ONCE = _opt(
    "--cells-at-once",
    help="cells run side by side (default 2 up to --depth probe, else 1): the next cell's "
    "downloads and units fill the cores a probe's last unit leaves idle; their compilers "
    "share the process's slots (builds take every core: one at a time)",
    type=int,
)
NO_PREFETCH = _opt(
    "--no-prefetch",
    help="fetch each cell's source, toolkit and env only when it runs (default: those of the "
    "cells ahead are fetched in the background while a cell probes)",
    **FLAG,
)

PROBE_BUDGET = _opt(
    "--probe-budget",
    "--budget",
    help="time for probes at verdict boundaries (default 0: preflight only; ~200 s each)",
    type=float,
    default=0.0,
    metavar="SECONDS",
)
SCREENSHOT = _opt(
    "--screenshot",
    help="also draw reports/map-<arch>.png, one per arch, with Debian's headless Chromium "
    "(fetched into the cache)",
    **FLAG,
)
RENDER = _opt(
    "--render",
    help="only draw reports/map.{md,html} (and pictures) again from reports/map.json: "
    "no preflight, seconds",
    **FLAG,
)
CORES = _opt("--cores", help="the building machine's cores (default: this one's)", type=int)
MEM = _opt("--mem", help="its available memory, GiB (default: this one's)", type=float)
MERGE = _opt(
    "--merge",
    help="render from the result files under these dirs (made on many machines) instead of "
    "results/",
    nargs="+",
    metavar="DIR",
)
FORMAT = _opt("--format", help="the CI system", default="github", choices=cimatrix.FORMATS)
VERIFY = _opt(
    "--verify",
    help="also hash every file of the cell's cached toolkit and env against its manifest",
    **FLAG,
)
TORCH_CHANNEL = _opt(
    "--torch-channel",
    help=f"torch from this conda channel, not the index (default: ${pixi.TORCH_CHANNEL_ENV})",
)
TOOL_PATH = _opt(
    "--tool-path",
    help="where the Pixi workspace has a vllm-matrix checkout (its tasks run it)",
    default="vllm-matrix",
)
GIT = _opt(
    "--git",
    help="a local clone or mirror (bare or not) to export from; repeatable",
    action="append",
    default=[],
    metavar="DIR",
)
OFFLINE = _opt("--offline", help="no git fetch: only --git dirs", **FLAG)
LOG = _opt("--log", help="append every git command and its output here")
CONFIG = _opt("--config", help="hf_quant_config.json (default: a ModelOpt FP8 export's)")
OUT = _opt("--out", help="directory to write OUT/bf16 and OUT/fp8 into", required=True)
SEED = _opt("--seed", help="weights' seed", type=int, default=0)
COMPARE = _opt("--compare", help="also compare fp8 with bf16 on CPU (plain torch)", **FLAG)
DIR = _opt("--dir", help="what tiny-model --out wrote", required=True)
WORK = _opt("--work", help="worker outputs and the log", default="results/model")
SINCE = _opt("--since", help="only releases from this one on (default: all)")
NO_PREFLIGHT = _opt("--no-preflight", help="releases and patches only", **FLAG)
VERBOSE = _opt("--verbose", help="also list every release of the walk", **FLAG)
STRIP_DEBUG = _opt(
    "--strip-debug",
    help="drop the extensions' host debug info (objcopy --strip-debug; symbols stay)",
    **FLAG,
)
WRITE = _opt("--write", help="write knowledge/data/vllm_pins.toml instead of printing", **FLAG)


@dataclass(frozen=True)
class Command:
    """A command: its name, its one-line help, its options in help order, and the values it
    fixes (``preflight`` is ``run`` at depth preflight, printed)."""

    name: str
    help: str
    options: tuple[Option, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)


COMMANDS: tuple[Command, ...] = (
    Command("facts", "pins and facts read from a vLLM source tree", (VERSION, JSON)),
    Command("cells", "list the matrix's cell ids", (MATRIX,)),
    Command(
        "run",
        "run cells up to a depth, then render the report",
        (
            MATRIX,
            DEPTH,
            CELL,
            FORCE,
            JSON,
            ENV.but(help="'current': use the active env's toolkit and torch", group=""),
            VLLM.but(
                help="with --env current: the vLLM version to check; else only that release's cells"
            ),
            ARCH.but(
                help="with --env current: arches or auto (TORCH_CUDA_ARCH_LIST, else the GPUs "
                "here)",
                group="",
            ),
            UNITS,
            NO_FRONT_END_CACHE,
            CELLS_AT_ONCE,
            NO_PREFETCH,
            PROBE_DEPTH,
            *BUILD_OPTIONS,
            TARGETS,
            NO_PROBE,
            BUILT,
        ),
        {"render": True},
    ),
    Command(
        "preflight",
        "run --depth preflight, printed (no report written)",
        (MATRIX, CELL, JSON),
        {"depth": "preflight", "render": False},
    ),
    Command(
        "map",
        "the [grid] at preflight, probes at boundaries",
        (MATRIX, PROBE_BUDGET, SCREENSHOT, RENDER),
    ),
    Command("map-slice", "one arch's map tables as markdown", (MATRIX, ARCH_STUDIED)),
    Command(
        "release",
        "any release on its pinned toolchain or the one given",
        (MATRIX, VERSION, *TOOLCHAIN_OPTIONS, *TARGET_OPTIONS, DEPTH, FORCE, *BUILD_OPTIONS),
    ),
    Command(
        "estimate",
        "a build's cost (edges, CPU, wall, memory, disk) before it",
        (
            MATRIX,
            VERSION.but(help=f"{SOURCE_SPEC} (else --cell)", nargs="?"),
            ONE_CELL,
            *TOOLCHAIN_OPTIONS,
            ARCH,
            CORES,
            MEM,
            MAX_JOBS.but(help="MAX_JOBS (default: what the build would pick)", group=ESTIMATED),
            TARGETS.but(
                help="a partial build's targets (default _C,_C_stable_libtorch)", group=ESTIMATED
            ),
            JSON,
        ),
    ),
    Command("report", "re-render reports/ from results/", (MATRIX, MERGE)),
    Command("ci-matrix", "the CI job matrix, one job per cell", (MATRIX, FORMAT, DEPTH, CELL)),
    Command(
        "doctor",
        "an env's toolchain against a target: the active env ($CONDA_PREFIX, $VIRTUAL_ENV, "
        "$PIXI_PROJECT_ROOT), --env PATH, or a --cell",
        (
            MATRIX,
            ONE_CELL,
            *TARGET_OPTIONS[:3],
            ENV.but(help=f"{ENV.help}; or 'current' (this interpreter)"),
            VERIFY,
            JSON,
        ),
    ),
    Command(
        "pixi-snippet",
        "a pixi.toml that builds a cell (from facts alone)",
        (
            MATRIX,
            VERSION.but(help=f"{SOURCE_SPEC} (else --cell)", nargs="?"),
            ONE_CELL,
            *TOOLCHAIN_OPTIONS,
            *TARGET_OPTIONS,
            TORCH_CHANNEL,
            TOOL_PATH,
        ),
    ),
    Command(
        "prefetch",
        "bring the FetchContent sources (CUTLASS, FA, FlashMLA) into the cache",
        (VLLM.but(required=True), GIT, OFFLINE, LOG, JSON),
    ),
    Command(
        "modelopt-check",
        "a ModelOpt hf_quant_config.json through the release's parser",
        (VLLM.but(required=True), CONFIG, JSON),
    ),
    Command(
        "tiny-model",
        "a tiny Llama checkpoint in bf16 and ModelOpt FP8 (OUT/bf16, OUT/fp8)",
        (OUT, SEED, COMPARE),
    ),
    Command(
        "model",
        "the model stage: vLLM serves DIR/fp8 (modelopt) and DIR/bf16, compared",
        (
            DIR,
            WORK,
            PYTHON.but(help="the Python that has vLLM (default: this one)", default=sys.executable),
            JSON,
        ),
    ),
    Command(
        "export-build",
        "a cell's installable partial build, with its build record, for another machine "
        "(`run --built DIR` there)",
        (
            MATRIX,
            ONE_CELL,
            OUT.but(help="directory to write it into (OUT/vllm-<V>-partial-<targets>)"),
            STRIP_DEBUG,
        ),
    ),
    Command(
        "currency",
        "is the knowledge current? new releases, patch ranges, knowledge gaps "
        "(exit 0 current, 1 stale, 3 no answer)",
        (
            MATRIX.but(help="its directory holds patches/"),
            ARCH_STUDIED.but(
                help=f"the arch each release is preflighted for (default {STUDIED_ARCH})"
            ),
            SINCE.but(help="preflight only releases from this one on (default: all)"),
            NO_PREFLIGHT,
            JSON,
        ),
    ),
    Command(
        "newest",
        "the newest vLLM release that builds with a given torch (walks releases)",
        (
            TORCH.but(help="2.6.0 (the index's wheel) or 2.7.1+cu128 (default: --env's torch)"),
            CUDA.but(help="nvcc version (default: --env's nvcc, else the torch's CUDA)"),
            PYTHON.but(help="default: --env's Python, else 3.12"),
            PROVIDER.but(help="toolkit provider (default: one that can supply --cuda)"),
            DEPTH.but(
                help="preflight (the default: every rule, seconds) | probe (also compile the "
                "answer and the next newer release: minutes, GBs of downloads)",
                default="preflight",
                choices=newest_mod.NEWEST_DEPTHS,
            ),
            *TARGET_OPTIONS,
            VERBOSE,
            JSON,
        ),
    ),
    Command(
        "blackwell",
        "per release: the cheapest toolchain serving an arch (preflight)",
        (
            MATRIX,
            ARCH_STUDIED,
            VLLM.but(help="release (repeatable; default 0.8.5, 0.9.2, 0.10.1)", action="append"),
            JSON,
        ),
    ),
    Command(
        "derive-torch",
        "torch wheel facts as TOML (from the real wheels)",
        (VERSIONS, MATRIX.but(help="read [torch-index] from it if present")),
    ),
    Command(
        "derive-pins",
        "regenerate knowledge/data/vllm_pins.toml from real sdists",
        (
            SINCE.but(
                help=f"releases from this one on (default {pins.FIRST})", default=str(pins.FIRST)
            ),
            WRITE,
        ),
    ),
    Command(
        "derive-facts",
        "regenerate knowledge/data/release_facts.json (every release's facts) from real sdists",
        (WRITE.but(help="write knowledge/data/release_facts.json instead of printing"),),
    ),
)
BY_NAME = {c.name: c for c in COMMANDS}


def add_options(parser: argparse.ArgumentParser, command: Command) -> None:
    """The command's options on its parser, each under its group (in order of first use)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for opt in command.options:
        if opt.group:
            if opt.group not in groups:
                groups[opt.group] = parser.add_argument_group(opt.group)
            opt.add_to(groups[opt.group])
        else:
            opt.add_to(parser)
    parser.set_defaults(**command.fixed)


def to_argv(command: Command, values: Mapping[str, Any]) -> list[str]:
    """A command line that gives the command these values (by dest; None, False and [] are
    left out): what tasks.py passes, and the parser's round trip in the tests."""
    head: list[str] = [command.name]
    tail: list[str] = []
    for opt in command.options:
        value = values.get(opt.dest)
        if value is None or value is False or value == []:
            continue
        items = (
            [str(v) for v in value]
            if isinstance(value, Sequence) and not isinstance(value, str)
            else [str(value)]
        )
        if opt.positional:
            head += items
        elif opt.action == "store_true":
            tail.append(opt.flags[0])
        elif opt.action == "append":
            tail += [a for item in items for a in (opt.flags[0], item)]
        else:
            tail += [opt.flags[0], *items]
    return head + tail


__all__ = [
    "BY_NAME",
    "COMMANDS",
    "DEBUG",
    "STUDIED_ARCH",
    "Command",
    "Option",
    "add_options",
    "to_argv",
]
