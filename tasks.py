"""invoke tasks: the pipeline's steps by name (`inv --list`), each a call of the CLI.

A task takes its command's options, read from the CLI's option table (never restated here):
`inv <task> --help`, or `python -m vllm_matrix <command> --help`.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from invoke import Task
from invoke.context import Context

from vllm_matrix.cli import main
from vllm_matrix.commands.options import BY_NAME, Option, to_argv


def _param(opt: Option) -> inspect.Parameter:
    kind = inspect.Parameter.KEYWORD_ONLY
    if opt.positional and opt.kwargs.get("nargs") not in ("?", "+"):
        return inspect.Parameter(opt.dest, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    default = False if opt.action == "store_true" else None  # None: not given, the CLI decides
    return inspect.Parameter(opt.dest, kind, default=default)


def _task(command: str, doc: str, *fixed: str, name: str | None = None) -> Task[Any]:
    """A task that runs `python -m vllm_matrix COMMAND FIXED... OPTIONS...` with the
    command's options (less those FIXED gives), as the CLI declares them."""
    cmd = BY_NAME[command]
    opts = [o for o in cmd.options if not set(o.flags) & set(fixed)]

    def body(c: Context, *args: Any, **values: Any) -> None:
        named = dict(zip([o.dest for o in opts if o.positional], args, strict=False))
        argv = to_argv(cmd, {**named, **values})
        rc = main([argv[0], *fixed, *argv[1:]])
        if rc:
            sys.exit(rc)

    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += sorted((_param(o) for o in opts), key=lambda p: p.kind)
    body.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    body.__doc__ = f"{doc} Options: `python -m vllm_matrix {command} --help`."
    lists = [o.dest for o in opts if o.action == "append" or o.kwargs.get("nargs") == "+"]
    return Task(
        body,
        name=name or command,
        help={o.dest: o.help or "" for o in opts},
        iterable=lists,
        auto_shortflags=False,  # the CLI's long options, as they are
    )


facts = _task("facts", "Pins and facts read from a vLLM source tree.")
cells = _task("cells", "List the matrix's cell ids.")
preflight = _task("preflight", "Each cell's verdict from facts and rules, no compile (printed).")
run = _task("run", "Run cells up to a depth (source, patches, probe, build...), then reports/.")
build = _task(
    "run",
    "Build a wheel into dist/: patches, probe, CMake configure and compile, audit, smoke.",
    "--depth",
    "build",
    name="build",
)
release = _task("release", "One release x torch x CUDA for the target: every rule, what to change.")
newest = _task("newest", "The newest vLLM release that builds with a torch, for the target.")
estimate = _task("estimate", "A build's cost before it: edges, CPU-hours, wall, MAX_JOBS, memory.")
doctor = _task("doctor", "An env's toolchain against the target: problems, each with its fix.")
pixi_snippet = _task("pixi-snippet", "A pixi.toml that builds a cell, from facts alone.")
prefetch = _task("prefetch", "FetchContent sources (CUTLASS, FA, FlashMLA) into the cache.")
report = _task("report", "Render reports/compat.* from results/ (or merge many machines').")
ci_matrix = _task("ci-matrix", "The CI job matrix, one job per cell.")
map = _task("map", "The map: the [grid] at preflight, probes at boundaries, reports/map.*.")
currency = _task("currency", "Is the knowledge current with the index? (exit 1 when stale)")
derive_torch = _task("derive-torch", "Torch wheel facts as TOML, read from the real wheels.")
derive_pins = _task("derive-pins", "vLLM release -> torch pin for every sdist on the index.")
derive_facts = _task("derive-facts", "Every release's facts (the advice's) read from its sdist.")
tiny_model = _task("tiny-model", "A tiny Llama checkpoint, bf16 and ModelOpt FP8 ('.[model]').")
model = _task("model", "The model stage: vLLM serves the FP8 and bf16 checkpoints, compared.")
