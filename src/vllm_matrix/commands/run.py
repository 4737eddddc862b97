"""`run` (cells up to a depth, then the report) and `preflight` (the same at depth preflight,
printed): the matrix's cells, or with ``--env current`` a cell made from the active env."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vllm_matrix.commands.common import exit_for, load_matrix, say, skipped
from vllm_matrix.infra import config, results
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.pipeline import context, grid, plan, runner
from vllm_matrix.pipeline import target as target_mod
from vllm_matrix.report import compat as report
from vllm_matrix.stages import compile as build
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import toolkit
from vllm_matrix.stages.compile import carried


def current_cell(vllm: str, arch: str | None) -> config.Cell:
    """A cell made from what the active env holds (no matrix entry needed); its arches are
    the target's (--arch, else TORCH_CUDA_ARCH_LIST, else the GPUs here: possibly none)."""
    tk = toolkit.current_toolkit()
    tv = env_mod.current_env()
    archs = target_mod.resolve(arch, required=False).archs
    return config.Cell(
        vllm,
        tv.torch,
        tk.version,
        tk.provider,
        tv.python,
        archs,
        note=f"the active env at {tv.root}",
        env="current",
    )


def build_options(
    args: argparse.Namespace, matrix: config.Matrix | None = None
) -> context.BuildOptions:
    targets = build.parse_targets(getattr(args, "targets", None))
    built = Path(args.built) if getattr(args, "built", None) else None
    if built is not None and not targets:  # the carried build's own targets
        targets = tuple(carried.read(built)[0]["targets"])
    return context.BuildOptions(
        max_jobs=getattr(args, "max_jobs", None),
        nvcc_threads=getattr(args, "nvcc_threads", None),
        clean=getattr(args, "clean", False),
        ccache=not getattr(args, "no_ccache", False),
        debug=getattr(args, "debug", False),
        ccache_remote=build.remote_setting(matrix.ccache.remote if matrix else None),
        targets=targets,
        # a carried build was compiled: its units need no probe here
        probe=not getattr(args, "no_probe", False) and built is None,
        built=built,
        probe_units=getattr(args, "units", None) or "selected",
        probe_front_end_cache=not getattr(args, "no_front_end_cache", False),
        probe_depth=getattr(args, "probe_depth", None) or "front-end",
    )


def run(args: argparse.Namespace) -> int:
    if getattr(args, "env", None) == "current":
        opts = build_options(args)
        if not args.vllm:
            raise MatrixError("--env current needs --vllm VERSION", fix="e.g. --vllm 0.8.5")
        grid.check_version(args.vllm, "vllm", "--vllm: ")
        cell = current_cell(args.vllm, args.arch)
        ws = context.Workspace(Path.cwd())
        plan.check_depth(args.depth)
        stages = runner.run_cell(cell, ws, depth=args.depth, force=args.force, echo=say, opts=opts)
        v = results.verdict_of(stages)
        print(
            f"{v.label:15} {cell.id} (at {v.depth})" + (f"\n{'':15} {v.cause}" if v.cause else "")
        )
        return exit_for([v])
    m, ws = load_matrix(args)
    opts = build_options(args, m)
    only = args.cell
    if getattr(args, "vllm", None):  # without --env current: that release's cells
        if only:
            raise MatrixError("--vllm and --cell both pick cells", fix="pass one of them")
        only = f"vllm{args.vllm}-"
    # Two cells side by side up to the probe (their compilers share the process's slots,
    # the earlier cell first): the next cell's first units run on the core a probe's last
    # unit leaves idle. README command 1 on a fresh idle 2-core machine: 297 s (373 s one
    # at a time, on the commit before a85c2b3's probe fix). A build takes every core.
    builds = any(s.name == "build" for s in plan.cut(args.depth))
    at_once = getattr(args, "cells_at_once", None) or (1 if builds else 2)
    done = runner.run_matrix(
        m,
        ws,
        args.depth,
        only,
        echo=say,
        force=getattr(args, "force", False),
        opts=opts,
        at_once=at_once,
        prefetch=not getattr(args, "no_prefetch", False),
    )
    # `preflight` is a query: it prints; only `run` (nox -s matrix) renders reports/
    md: Path | None = None
    unread: list[dict[str, str]] = []
    if args.render:
        _, md, unread = report.write_report(m, ws.results, ws.reports, say)
    if getattr(args, "json", False):
        print(
            json.dumps(
                [
                    {
                        "id": c.id,
                        "verdict": v.verdict,
                        "rests_on": v.rests_on,
                        "depth": v.depth,
                        "cause": v.cause,
                        "fix": v.fix,
                        "evidence": list(v.evidence),
                    }
                    for c, v in done
                ],
                indent=1,
            )
        )
    else:
        for c, v in done:
            print(f"{v.label:15} {c.id}" + (f"\n{'':15} {v.cause}" if v.cause else ""))
            if v.verdict == "ERROR" and v.fix:
                print(f"{'':15} fix: {v.fix}")
        if md:
            print(f"report: {md}", file=sys.stderr)
    return exit_for([v for _, v in done]) or skipped(unread)


__all__ = ["build_options", "current_cell", "run"]
