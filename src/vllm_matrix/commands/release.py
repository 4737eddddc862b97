"""`release`: any release on its pinned toolchain (or the one given), for the target; and
the cell a release makes, which `estimate` and `pixi-snippet` take too."""

from __future__ import annotations

import argparse
from pathlib import Path

from vllm_matrix.commands import target as target_opts
from vllm_matrix.commands.common import exit_for, say
from vllm_matrix.commands.run import build_options
from vllm_matrix.infra import config, results, tomlfile
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline import context, grid, mapping, plan, runner
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import facts


def release_cell(args: argparse.Namespace) -> config.Cell:
    """A cell for any release: its pinned torch (or --torch), a toolkit for that torch's CUDA
    that a provider can supply here (or --cuda/--provider), Python both accept."""
    v = args.version
    if not v.startswith(("path:", "git:")):
        grid.check_version(v, "vllm")
    if args.torch:
        grid.check_version(args.torch, "torch", "--torch: ")
    tree = source.get_tree(v)
    f = facts.read_facts(tree.root, tree.version)
    env = target_opts.resolve(args, required=False).env
    if env is not None:  # --env PREFIX: its torch, nvcc and Python unless given
        args.torch = args.torch or env.torch
        args.cuda = args.cuda or env.nvcc
        args.python = args.python or env.python
    torch = args.torch or f.torch or pins.load().get(v)
    if not torch:
        raise MatrixError(f"vLLM {v} pins no torch that could be read", fix="pass --torch X")
    know = toolchains.load()
    tf = know.torch.get(torch.partition("+")[0])
    cuda, provider = args.cuda, args.provider
    if cuda is None:
        cuda, provider = mapping.toolchain_for(tf.cuda if tf else None, know, provider)
    elif provider is None:
        provider = know.provider_for(cuda)
    pythons = [p for p in f.python if tf is None or not tf.pythons or p in tf.pythons]
    # the matrix's default Python when both accept it (its envs are likely cached), else
    # the newest both accept
    mpath = Path(args.matrix)
    default = None
    if mpath.is_file():
        default = tomlfile.load(mpath).data.get("defaults", {}).get("python")
    python = args.python or (
        default if default in pythons else (pythons[-1] if pythons else default or "3.12")
    )
    archs = target_opts.resolve(args).archs
    return config.Cell(
        v,
        torch,
        cuda,
        provider,
        python,
        archs,
        note=f"vLLM {v} on {'its pinned' if not args.torch else 'the given'} torch",
    )


def run(args: argparse.Namespace) -> int:
    cell = release_cell(args)
    ws = context.Workspace(Path(args.matrix).resolve().parent)
    plan.check_depth(args.depth)
    say(f"cell {cell.id} (provider {cell.provider}) to depth {args.depth}")
    stages = runner.run_cell(
        cell, ws, depth=args.depth, force=args.force, echo=say, opts=build_options(args)
    )
    v = results.verdict_of(stages)
    print(f"{v.label:15} {cell.id} (at {v.depth})" + (f"\n{'':15} {v.cause}" if v.cause else ""))
    driver = target_opts.resolve(args, required=False).driver_cuda
    lines = target_opts.preflight_lines(stages, driver)
    lines += target_opts.elsewhere_lines(cell, ws.root) + target_opts.driver_lines(cell, driver)
    print("\n".join(lines))
    if v.verdict == "ERROR" and v.fix:
        print(f"{'':15} fix: {v.fix}")
    # 0 answered (it builds, or as far as could be checked), 1 vLLM fails, 3 ERROR
    return exit_for([v]) or (1 if v.verdict in ("FAIL", "PREDICTED-FAIL") else 0)


__all__ = ["release_cell", "run"]
