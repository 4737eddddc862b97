"""Command line: `vllm-matrix <command>` (also what tasks.py and noxfile.py call)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from packaging.version import Version

from vllm_matrix import __version__
from vllm_matrix.commands import cimatrix, currency, doctor, pixi
from vllm_matrix.commands import target as target_opts
from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import config, results, tomlfile
from vllm_matrix.infra.arch import Arch, parse_arch_list
from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.errors import (
    EXIT_CELL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    MatrixError,
    SourceError,
    ToolError,
    describe_os_error,
)
from vllm_matrix.knowledge import pins, probe_units
from vllm_matrix.knowledge import toolchains as knowledge
from vllm_matrix.pipeline import context, estimate, grid, mapping, plan, reuse, runner
from vllm_matrix.report import browser, merge
from vllm_matrix.report import compat as report
from vllm_matrix.report import map as mapreport
from vllm_matrix.stages import (
    build,
    externals,
    facts,
    modelopt,
    patches,
    probe,
    source,
    toolkit,
    torchwheel,
)
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import envprefix as env_prefix


def _matrix(args: argparse.Namespace) -> tuple[config.Matrix, context.Workspace]:
    path = Path(args.matrix).resolve()
    m = config.load_matrix(path)
    grid.cells_of(m)  # a bad [grid] axis is an error at load, like a bad [[cell]]
    grid.check_cells(m)  # a [[cell]] naming no real vLLM or torch release: "did you mean"
    return m, context.Workspace(path.parent)


def cmd_facts(args: argparse.Namespace) -> int:
    tree = source.get_tree(args.version)
    f = facts.read_facts(tree.root, tree.version)
    d = f.to_json() | {"origin": tree.origin}
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        for k, v in d.items():
            print(f"{k:16} {v}")
    return 0


def cmd_cells(args: argparse.Namespace) -> int:
    m, _ = _matrix(args)
    for c in m.cells:
        print(c.id)
    return 0


def current_cell(vllm: str, arch: str | None) -> config.Cell:
    """A cell made from what the active env holds (no matrix entry needed)."""
    tk = toolkit.current_toolkit()
    tv = env_mod.current_env()
    archs = _archs(arch)
    if not archs:  # --arch auto (the default where a GPU is present): this machine's GPUs
        archs = gpuinfo.detect().archs
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


def _archs(arch: str | None) -> tuple[str, ...]:
    """--arch: a list, or "auto"/nothing (TORCH_CUDA_ARCH_LIST, else the GPUs here)."""
    if arch and arch != "auto":
        return parse_arch_list(arch)
    return parse_arch_list(os.environ.get("TORCH_CUDA_ARCH_LIST", ""))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_options(
    args: argparse.Namespace, matrix: config.Matrix | None = None
) -> context.BuildOptions:
    return context.BuildOptions(
        max_jobs=getattr(args, "max_jobs", None),
        nvcc_threads=getattr(args, "nvcc_threads", None),
        clean=getattr(args, "clean", False),
        ccache=not getattr(args, "no_ccache", False),
        debug=getattr(args, "debug", False),
        ccache_remote=build.remote_setting(matrix.ccache.remote if matrix else None),
        targets=build.parse_targets(getattr(args, "targets", None)),
        probe=not getattr(args, "no_probe", False),
        probe_units=getattr(args, "units", None) or "selected",
        probe_front_end_cache=not getattr(args, "no_front_end_cache", False),
        probe_depth=getattr(args, "probe_depth", None) or "front-end",
    )


def cmd_run(args: argparse.Namespace) -> int:
    if getattr(args, "env", None) == "current":
        opts = build_options(args)
        if not args.vllm:
            raise MatrixError("--env current needs --vllm VERSION", fix="e.g. --vllm 0.8.5")
        grid.check_version(args.vllm, "vllm", "--vllm: ")
        cell = current_cell(args.vllm, args.arch)
        ws = context.Workspace(Path.cwd())
        plan.check_depth(args.depth)
        stages = runner.run_cell(cell, ws, args.depth, force=args.force, echo=_say, opts=opts)
        v = results.verdict_of(stages)
        print(
            f"{v.label:15} {cell.id} (at {v.depth})" + (f"\n{'':15} {v.cause}" if v.cause else "")
        )
        return _exit_for([v])
    m, ws = _matrix(args)
    opts = build_options(args, m)
    # Side by side is asked for, not the default: on a loaded 2-core machine it gained
    # nothing (the main job: 2316 s and 996 CPU-s against 2290 s and 934 one at a time,
    # load 11), and a probe's CPU share can then not be told from the other cell's.
    at_once = getattr(args, "cells_at_once", None) or 1
    done = runner.run_matrix(
        m,
        ws,
        args.depth,
        args.cell,
        echo=_say,
        force=getattr(args, "force", False),
        opts=opts,
        at_once=at_once,
    )
    # `preflight` is a query: it prints; only `run` (nox -s matrix) renders reports/
    md: Path | None = None
    skipped: list[dict[str, str]] = []
    if args.render:
        _, md, skipped = report.write_report(m, ws.results, ws.reports, _say)
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
    return _exit_for([v for _, v in done]) or _skipped(skipped)


def _skipped(skipped: Sequence[dict[str, str]]) -> int:
    """Warn about result files the report could not read (named, with the reason; their
    cells are shown as not run); EXIT_CELL_ERROR when there were any: the report is not
    the whole answer."""
    for x in skipped:
        _say(f"warning: skipped {x['file']}: {x['reason']}")
    if skipped:
        _say(
            f"error: {len(skipped)} result file(s) could not be read and were left out of the "
            "report; fix: delete or move them, then rerun the cells (`nox -s matrix -- --cell ID`)"
        )
        return EXIT_CELL_ERROR
    return 0


def _exit_for(verdicts: Sequence[results.Verdict]) -> int:
    """Non-zero when a cell ended in ERROR: the tool or the machine failed, so the report
    is not a complete answer (FAIL and PREDICTED-FAIL are answers: exit 0)."""
    bad = sum(1 for v in verdicts if v.verdict == "ERROR")
    if bad:
        print(
            f"error: {bad} cell(s) ended in ERROR (the tool or the machine failed, not vLLM): "
            "see each cell's fix above and compat.md's 'Not answered' section",
            file=sys.stderr,
        )
        return EXIT_CELL_ERROR
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    """The grid at preflight depth, probes at boundaries within --probe-budget, the map."""
    m, ws = _matrix(args)
    committed = mapreport.read(ws.reports / "map.json")
    if args.render:  # the committed data drawn again: no preflight, no probe
        if not committed:
            raise MatrixError("no reports/map.json to render", fix="run `nox -s map` first")
        d = committed
    else:

        def probe_cell(cell: config.Cell, force: bool) -> None:
            runner.run_cell(cell, ws, "probe", force=force, echo=_say)

        # a compile the committed map holds and results/ lacks (a fresh clone) is kept
        earlier = mapreport.compiled_cells(committed)
        if earlier:
            _say(
                f"the committed map's {len(earlier)} compiled cell(s) count where results/ has none"
            )
        run = mapping.run_map(
            mapping.grid_cells(m),
            ws.results,
            probe_cell,
            args.probe_budget,
            echo=_say,
            earlier=earlier,
        )
        d = run.to_json()
        atomic_write_text(ws.results / "map.json", json.dumps(d) + "\n")
    md, page = mapreport.write(d, ws.reports)
    if args.screenshot:
        exe = browser.headless_shell(log=ws.results / "logs" / "browser.log")
        for arch in mapreport.arch_order(d):
            size = mapreport.picture_size(d, arch)
            png = browser.screenshot(
                exe, page, ws.reports / f"map-{arch}.png", size, f"only-{arch}"
            )
            _say(f"picture: {png} ({browser.png_colors(png)} colours)")
    n, p = d["counts"], d["probes"]
    print(
        f"{n['cells']} cells ({n['releases']} releases x {n['torch_builds']} torch builds, "
        f"{n['tables']} tables); preflight {d['preflight_s']:.1f}s; probes {len(p['probed'])} "
        f"({p['spent_s']:.0f}s of {p['budget_s']:.0f}s), boundaries {p['boundaries']}, "
        f"compile-checkable {p['compile_checkable']}, confirmed {len(p['confirmed'])}"
    )
    print(f"map: {md} {page}", file=sys.stderr)
    return 0


def cmd_map_slice(args: argparse.Namespace) -> int:
    """One arch's tables of the committed map (reports/map.json), as markdown."""
    _, ws = _matrix(args)
    d = mapreport.read(ws.reports / "map.json") or mapreport.read(ws.results / "map.json")
    if not d:
        raise MatrixError(
            "no map data: neither reports/map.json nor results/map.json",
            fix="run `nox -s map` first",
        )
    tag = Arch.parse(args.arch).tag
    text = mapreport.slice_md(d, tag)
    if not text:
        have = ", ".join(mapreport.arch_order(d))
        raise MatrixError(f"the map has no {tag} cells", fix=f"pick one of: {have}")
    print(text, end="")
    return 0


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
    know = knowledge.load()
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


def cmd_release(args: argparse.Namespace) -> int:
    cell = release_cell(args)
    ws = context.Workspace(Path(args.matrix).resolve().parent)
    plan.check_depth(args.depth)
    _say(f"cell {cell.id} (provider {cell.provider}) to depth {args.depth}")
    stages = runner.run_cell(
        cell, ws, args.depth, force=args.force, echo=_say, opts=build_options(args)
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
    return _exit_for([v]) or (1 if v.verdict in ("FAIL", "PREDICTED-FAIL") else 0)


def _one_cell(m: config.Matrix, name: str | None, also: str = "") -> config.Cell:
    """The one matrix cell ``--cell NAME`` names (an id or a unique part of it)."""
    cells = m.select(name)
    if len(cells) != 1:
        raise MatrixError(
            f"--cell '{name or ''}' matches {len(cells)} cells",
            fix=f"name one{also}: " + ", ".join(c.id for c in cells),
        )
    return cells[0]


def cmd_estimate(args: argparse.Namespace) -> int:
    """What building a cell or release costs on a machine, before building (a query)."""
    m, ws = _matrix(args)
    if args.version:
        cell = release_cell(args)
    else:
        cell = _one_cell(m, args.cell, " (or a release: estimate 0.8.5)")
    tree = source.get_tree(cell.source_spec)
    est = estimate.estimate_cell(
        cell,
        tree.root,
        previous=reuse.previous(ws, cell),
        cores=args.cores,
        mem_gib=args.mem,
        jobs=args.max_jobs,
        targets=build.parse_targets(args.targets),
    )
    if args.json:
        print(json.dumps(est, indent=1))
        return 0
    where = f"{est['cores']} cores" + (
        f", {est['mem_gib']:g} GiB available" if est["mem_gib"] is not None else ""
    )
    print(f"{cell.id} on {where}:")
    for kind in ("wheel", "partial"):
        if kind in est:
            print(f"  {estimate.say(est, kind)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    m, ws = _matrix(args)
    if not args.merge:
        _, md, skipped = report.write_report(m, ws.results, ws.reports, _say)
        print(md)
        return _skipped(skipped)
    dirs = [Path(d) for d in args.merge]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise MatrixError(
            f"--merge: not a directory: {', '.join(missing)}",
            fix="pass the directories holding the result files (results/ of each machine)",
        )
    doc, refused = merge.collect(m, dirs, ws.reports / report.OTHER_DIR)
    _, md = report.write_doc(doc, ws.reports, echo=_say)
    print(md)
    for x in refused:
        _say(f"error: refused {x.file}: {x.reason}")
    if refused:
        # The report holds every readable file; exit 3 (not a complete answer, and not a
        # fact about vLLM) so a CI job does not publish a map with cells silently missing
        # (the refused files are listed in it too).
        _say(f"{len(refused)} result file(s) refused; the other {doc['merged']['files']} merged")
        return EXIT_CELL_ERROR
    return 0


def cmd_ci_matrix(args: argparse.Namespace) -> int:
    m, _ = _matrix(args)
    print(cimatrix.render(m, args.format, args.depth, args.cell), end="")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    prefix = doctor.active_prefix() if not args.env and not args.cell else None
    if args.env == "current" or (not args.env and not args.cell and prefix is None):
        tgt = target_opts.resolve(args, required=False)
        rep = doctor.for_current(tgt.archs)
    elif args.env or prefix is not None:
        tgt = target_opts.resolve(args, required=False)
        pf = tgt.env or env_prefix.read_prefix(prefix or Path(args.env))
        rep = doctor.for_prefix(pf, tgt)
    else:
        m, _ = _matrix(args)
        rep = doctor.for_cell(_one_cell(m, args.cell), verify=args.verify)
    print(json.dumps(rep.to_json(), indent=1) if args.json else rep.render())
    return 1 if rep.problems else 0


def cmd_pixi_snippet(args: argparse.Namespace) -> int:
    if (args.version is None) == (args.cell is None):
        raise MatrixError(
            "name the cell to build: a release with its toolchain, or a matrix cell",
            fix='pixi-snippet 0.9.2 --torch 2.7.0+cu128 --cuda 12.8 --gpu "RTX 5090"  '
            "or  pixi-snippet --cell ID",
        )
    if args.version is not None:  # any release, as `release` makes its cell: no matrix needed
        cell = release_cell(args)
        ws = context.Workspace(Path(args.matrix).resolve().parent)
    else:
        m, ws = _matrix(args)
        cell = _one_cell(m, args.cell)
    note = target_opts.advice_note(cell, ws.root)  # the one advice, as every command gives it
    if note:
        _say(f"note: {note}")
    used = pixi.used_fixups(ws.results, cell)
    tree = source.get_tree(cell.source_spec)
    f = facts.read_facts(tree.root, tree.version)
    nv = knowledge.load().nvcc_for(cell.cuda)
    series = patches.select(patches.load_series(), tree.version)
    text = pixi.snippet(
        cell,
        used,
        max_jobs=cell.options.max_jobs,
        cmake_min=f.cmake,
        max_gcc=nv.max_gcc if nv else None,
        build_reqs=pixi.build_requirements(tree.root),
        patches=[p.name for p in series],
        channel=pixi.torch_channel(args.torch_channel),
        tool_path=args.tool_path,
    )
    pixi.parse(text)  # never print TOML that does not parse
    print(text, end="")
    return 0


def cmd_currency(args: argparse.Namespace) -> int:
    """The outside world against the project's knowledge: 0 current, 1 stale, 3 no answer."""
    root = Path(args.matrix).resolve().parent
    try:
        rep = currency.check(
            root, Arch.parse(args.arch).name, args.since, not args.no_preflight, echo=_say
        )
    except (ToolError, SourceError) as exc:  # no answer from the index: the machine's side
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return EXIT_CELL_ERROR
    if args.json:
        print(json.dumps(rep.to_json(), indent=1))
    else:
        print(currency.render(rep), end="")
    return 1 if rep.items else 0


def cmd_newest(args: argparse.Namespace) -> int:
    from vllm_matrix.commands import newest

    if args.depth not in newest.DEPTHS:
        from vllm_matrix.infra.tomlfile import did_you_mean

        raise MatrixError(
            f"unknown depth '{args.depth}'", fix=did_you_mean(args.depth, newest.DEPTHS)
        )
    tgt = target_opts.resolve(args)
    torch, cuda, python = newest.from_env(tgt, args.torch, args.cuda, args.python)
    if torch:
        grid.check_version(torch, "torch", "--torch: ")
    echo = _say if args.verbose else None
    ans = newest.walk(
        torch, cuda, tgt.archs, python, args.provider, echo=echo, driver_cuda=tgt.driver_cuda
    )
    ans = replace(ans, target=tgt.line())
    if args.depth == "probe" and ans.newest:
        ws = context.Workspace(Path.cwd())

        def run_cell(cell: config.Cell, force: bool) -> list[results.StageResult]:
            _say(f"probing {cell.id}" + (" (past its predicted failure)" if force else ""))
            return runner.run_cell(cell, ws, "probe", force=force, echo=_say)

        ans = newest.probe_boundary(ans, run_cell)
    wheel_torch = None
    if ans.newest:
        try:
            wheel_torch = newest.wheel_torch_requirement(ans.newest)
        except MatrixError as exc:
            _say(f"the wheel metadata of vLLM {ans.newest} could not be read: {exc.message}")
    ans = newest.explain(ans, wheel_torch)
    if ans.newest:  # the answer compiled on another machine counts, with that machine named
        cell = newest.make_cell(ans.newest, ans.torch, ans.cuda, ans.provider, ans.python, ans.arch)
        more = target_opts.elsewhere_lines(cell, Path.cwd())
        ans = replace(ans, rests_on=(*ans.rests_on, *more))
    print(json.dumps(ans.to_json(), indent=1) if args.json else newest.render(ans, args.verbose))
    return 0 if ans.newest else 1


def cmd_blackwell(args: argparse.Namespace) -> int:
    from vllm_matrix.commands import newest

    _, ws = _matrix(args)
    arch = parse_arch_list(args.arch)[0]
    rows = []
    for v in args.vllm or ["0.8.5", "0.9.2", "0.10.1"]:
        _say(f"vLLM {v}: cheapest toolchain for {arch}")
        rows.append(newest.cheapest(v, arch, ws=ws).to_json())
    top = newest.newest_serving(arch)
    doc = {
        "arch": arch,
        "depth": "preflight",
        "releases": rows,
        "newest": top.to_json() if top else None,
    }
    # results/ is not tracked: `nox -s report` puts it into reports/ (a query writes no report)
    path = ws.results / "blackwell.json"
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    print(
        json.dumps(doc, indent=1)
        if args.json
        else f"wrote results/{path.name}; `nox -s report` puts it into reports/blackwell.md"
    )
    return 0


def cmd_derive_torch(args: argparse.Namespace) -> int:
    table: dict[str, str] = {}
    path = Path(args.matrix)
    if path.is_file():  # its [torch-index] table, for variants ("2.7.1+cu128")
        table = dict(next(iter(config.load_matrix(path).cells)).torch_index)
    for v in args.versions:
        variant = config.split_torch(v)[1]
        base = torchwheel.variant_index(variant, table) if variant else None
        print(torchwheel.toml_entry(torchwheel.read_facts(v, base)))
    return 0


def cmd_derive_pins(args: argparse.Namespace) -> int:
    rows: dict[str, tuple[str | None, str]] = {}
    listed = pins.release_list(refresh=True)
    if listed.index is None:
        raise MatrixError(
            "derive-pins needs the index's list of releases: " + listed.origin,
            fix="check the network / pip's index-url (and VLLM_MATRIX_RELEASES is not pinned)",
        )
    vs = [v for v in map(Version, listed.versions) if v >= Version(args.since)]
    for n, v in enumerate(vs, 1):
        tree = source.sdist_tree(str(v))
        f = facts.read_facts(tree.root, tree.version)
        rows[str(v)] = (f.torch, f.torch_evidence or "")
        print(f"[{n}/{len(vs)}] {v}: torch {f.torch}", file=sys.stderr, flush=True)
    text = pins.render(rows)
    if args.write:
        atomic_write_text(pins.data_path(), text)
        print(f"wrote {pins.data_path()}", file=sys.stderr)
    else:
        print(text)
    return 0


def cmd_prefetch(args: argparse.Namespace) -> int:
    tree = source.get_tree(args.vllm)
    f = facts.read_facts(tree.root, tree.version)
    log = Path(args.log).resolve() if args.log else None
    dirs = externals.prefetch(
        f,
        probe_units.load_knowledge(),
        git_dirs=[Path(d) for d in args.git],
        network=not args.offline,
        log=log,
    )
    if args.json:
        out = {
            k: {
                "pin": d.pin,
                "status": d.status,
                "path": str(d.path) if d.path else None,
                "origin": d.origin,
                "env_var": d.env_var,
                "incomplete": list(d.incomplete),
                "repo": d.repo,
            }
            for k, d in dirs.items()
        }
        print(json.dumps(out, indent=1))
    else:
        for d in dirs.values():
            pin = d.pin if d.pin and len(d.pin) < 40 else (d.pin or "?")[:12]
            where = f"{d.path}  ({d.origin})" if d.path else externals.reason(d)
            print(f"{d.name:16} {pin:12} {d.status:10} {where}")
    err = externals.missing_error(tree.version, dirs)
    if err is None:
        return 0
    print(f"error: {err.message}", file=sys.stderr)
    print(f"  fix: {err.fix}", file=sys.stderr)
    return 1


def cmd_modelopt_check(args: argparse.Namespace) -> int:
    tree = source.get_tree(args.vllm)
    cfg = json.loads(Path(args.config).read_text()) if args.config else modelopt.EXAMPLE
    c = modelopt.check(tree.root, cfg)
    print(json.dumps(c.to_json(), indent=1) if args.json else f"{c.message}\n  ({c.how})")
    return 0 if c.accepted else 1


def cmd_tiny_model(args: argparse.Namespace) -> int:
    try:
        from vllm_matrix.stages import tinymodel
    except ImportError as exc:
        raise MatrixError(
            f"tiny-model needs torch, safetensors, numpy and tokenizers ({exc})",
            fix="pip install -e '.[model]'",
        ) from exc
    made = tinymodel.make(Path(args.out), tinymodel.TinySpec(seed=args.seed))
    d = made.to_json()
    if args.compare:
        d["cpu_fp8_vs_bf16"] = tinymodel.compare_cpu(made).to_json()
    print(json.dumps(d, indent=1))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from vllm_matrix.stages import modelstage

    d = Path(args.dir)
    res = modelstage.run(d / "bf16", d / "fp8", Path(args.work), python=args.python)
    if args.json:
        print(json.dumps(res.to_json(), indent=1))
    else:
        print(f"{res.status:8} {res.summary}")
        for f in res.findings:
            print(f"{'':8} {f.message}")
    return {results.PASS: 0, results.SKIP: 0, results.ERROR: EXIT_CELL_ERROR}.get(res.status, 1)


def _release_or_cell(s: argparse.ArgumentParser) -> None:
    """A release with its toolchain (as `release` makes its cell), or a matrix cell."""
    s.add_argument("version", nargs="?", help="a vLLM release, e.g. 0.9.2 (else --cell)")
    s.add_argument("--cell", help="a matrix cell (id or a unique part of it)")
    s.add_argument("--torch", help="with a release: default its pin; 2.7.0+cu128 for a build")
    s.add_argument("--cuda", help="with a release: default the torch's CUDA")
    s.add_argument("--provider", help="with a release: debian | pypi | system | conda-prefix")
    s.add_argument("--python", help="with a release: the matrix's if both accept it, else newest")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm-matrix", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_matrix(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--matrix", default="matrix.toml", help="matrix file (default ./matrix.toml)"
        )
        return sp

    s = sub.add_parser("facts", help="pins and facts read from a vLLM source tree")
    s.add_argument("version", help="release (0.8.5), path:DIR or git:URL@TAG")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_facts)

    s = with_matrix(sub.add_parser("cells", help="list the matrix's cell ids"))
    s.set_defaults(fn=cmd_cells)

    s = with_matrix(sub.add_parser("run", help="run cells up to a depth, then render the report"))
    s.add_argument("--depth", default=plan.DEFAULT_DEPTH, help="|".join(plan.DEPTHS))
    s.add_argument("--cell", help="only cells whose id contains this")
    s.add_argument(
        "--force",
        action="store_true",
        help="go on past a predicted failure (to check the prediction)",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument("--env", help="'current': use the active env's toolkit and torch")
    s.add_argument("--vllm", help="with --env current: the vLLM version to check")
    s.add_argument(
        "--arch",
        help="with --env current: arches or auto (TORCH_CUDA_ARCH_LIST, else the GPUs here)",
    )
    s.add_argument(
        "--units",
        choices=probe.UNITS_MODES,
        help="probe: the units it selects (default) or all the build compiles (slow)",
    )
    s.add_argument(
        "--no-front-end-cache",
        action="store_true",
        help="probe: neither read nor fill the front-end cache (a cold cost, to measure)",
    )
    s.add_argument(
        "--cells-at-once",
        type=int,
        help="cells run side by side (default 1): the next cell's downloads and units "
        "fill the cores a probe's last unit leaves idle (not for builds: they take every core)",
    )
    s.add_argument(
        "--probe-depth",
        choices=probe.DEPTHS,
        help="probe: front-end (default: it decided every verdict the probe study saw), auto "
        "(then code generation of arch-gated units within 180 s) or codegen (every unit)",
    )
    b = s.add_argument_group("--depth build")
    b.add_argument("--max-jobs", type=int, help="MAX_JOBS (default: from cores and free RAM)")
    b.add_argument("--nvcc-threads", type=int, help="NVCC_THREADS (default: from free RAM)")
    b.add_argument("--clean", action="store_true", help="remake the work copy (no resume)")
    b.add_argument("--no-ccache", action="store_true", help="build without ccache")
    b.add_argument(
        "--targets",
        help="CMake targets only (e.g. _C,_C_stable_libtorch): a partial build, never a wheel",
    )
    b.add_argument(
        "--no-probe", action="store_true", help="skip the probe (the build compiles its units)"
    )
    s.set_defaults(fn=cmd_run, render=True)

    s = with_matrix(
        sub.add_parser("preflight", help="run --depth preflight, printed (no report written)")
    )
    s.add_argument("--cell", help="only cells whose id contains this")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_run, depth="preflight", render=False)

    s = with_matrix(sub.add_parser("map", help="the [grid] at preflight, probes at boundaries"))
    s.add_argument(
        "--probe-budget",
        "--budget",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="time for probes at verdict boundaries (default 0: preflight only; ~200 s each)",
    )
    s.add_argument(
        "--screenshot",
        action="store_true",
        help="also draw reports/map-<arch>.png, one per arch, with Debian's headless Chromium "
        "(fetched into the cache)",
    )
    s.add_argument(
        "--render",
        action="store_true",
        help="only draw reports/map.{md,html} (and pictures) again from reports/map.json: "
        "no preflight, seconds",
    )
    s.set_defaults(fn=cmd_map)

    s = with_matrix(sub.add_parser("map-slice", help="one arch's map tables as markdown"))
    s.add_argument("--arch", default="12.0", help="the arch (default 12.0: Blackwell)")
    s.set_defaults(fn=cmd_map_slice)

    s = with_matrix(
        sub.add_parser("release", help="any release on its pinned toolchain or the one given")
    )
    s.add_argument("version", help="a vLLM release, e.g. 0.9.2")
    s.add_argument("--torch", help="default: the release's pin (knowledge/data/vllm_pins.toml)")
    s.add_argument("--cuda", help="default: the torch's CUDA, or the nearest obtainable here")
    s.add_argument("--provider", help="debian | pypi | system | conda-prefix")
    s.add_argument("--python", help="default: the newest both vLLM and torch accept")
    target_opts.add_options(s)
    s.add_argument("--depth", default=plan.DEFAULT_DEPTH, help="|".join(plan.DEPTHS))
    s.add_argument("--force", action="store_true", help="go on past a predicted failure")
    b = s.add_argument_group("--depth build")
    b.add_argument("--max-jobs", type=int, help="MAX_JOBS (default: from cores and free RAM)")
    b.add_argument("--nvcc-threads", type=int, help="NVCC_THREADS (default: from free RAM)")
    b.add_argument("--clean", action="store_true", help="remake the work copy (no resume)")
    b.add_argument("--no-ccache", action="store_true", help="build without ccache")
    s.set_defaults(fn=cmd_release)

    s = with_matrix(
        sub.add_parser("estimate", help="a build's cost (edges, CPU, wall, memory, disk) before it")
    )
    _release_or_cell(s)
    s.add_argument("--arch", help="with a release: GPU arches (default 9.0)")
    s.add_argument("--cores", type=int, help="the building machine's cores (default: this one's)")
    s.add_argument("--mem", type=float, help="its available memory, GiB (default: this one's)")
    s.add_argument("--max-jobs", type=int, help="MAX_JOBS (default: what the build would pick)")
    s.add_argument("--targets", help="a partial build's targets (default _C,_C_stable_libtorch)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_estimate)

    s = with_matrix(sub.add_parser("report", help="re-render reports/ from results/"))
    s.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="render from the result files under these dirs (made on many machines) "
        "instead of results/",
    )
    s.set_defaults(fn=cmd_report)

    s = with_matrix(sub.add_parser("ci-matrix", help="the CI job matrix, one job per cell"))
    s.add_argument("--format", default="github", choices=cimatrix.FORMATS)
    s.add_argument("--depth", default=plan.DEFAULT_DEPTH, help="|".join(plan.DEPTHS))
    s.add_argument("--cell", help="only cells whose id contains this")
    s.set_defaults(fn=cmd_ci_matrix)

    s = with_matrix(
        sub.add_parser(
            "doctor",
            help="an env's toolchain against a target: the active env ($CONDA_PREFIX, "
            "$VIRTUAL_ENV, $PIXI_PROJECT_ROOT), --env PATH, or a --cell",
        )
    )
    s.add_argument("--cell", help="the cell (id or a unique part of it)")
    target_opts.add_options(s)
    s.add_argument(
        "--verify",
        action="store_true",
        help="also hash every file of the cell's cached toolkit and env against its manifest",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_doctor)

    s = with_matrix(
        sub.add_parser("pixi-snippet", help="a pixi.toml that builds a cell (from facts alone)")
    )
    _release_or_cell(s)
    target_opts.add_options(s)
    s.add_argument(
        "--torch-channel",
        help=f"torch from this conda channel, not the index (default: ${pixi.TORCH_CHANNEL_ENV})",
    )
    s.add_argument(
        "--tool-path",
        default="vllm-matrix",
        help="where the Pixi workspace has a vllm-matrix checkout (its tasks run it)",
    )
    s.set_defaults(fn=cmd_pixi_snippet)

    s = sub.add_parser(
        "prefetch", help="bring the FetchContent sources (CUTLASS, FA, FlashMLA) into the cache"
    )
    s.add_argument("--vllm", required=True, help="release (0.8.5), path:DIR or git:URL@TAG")
    s.add_argument(
        "--git",
        action="append",
        default=[],
        metavar="DIR",
        help="a local clone or mirror (bare or not) to export from; repeatable",
    )
    s.add_argument("--offline", action="store_true", help="no git fetch: only --git dirs")
    s.add_argument("--log", help="append every git command and its output here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_prefetch)

    s = sub.add_parser(
        "modelopt-check", help="a ModelOpt hf_quant_config.json through the release's parser"
    )
    s.add_argument("--vllm", required=True, help="release (0.20.0), path:DIR or git:URL@TAG")
    s.add_argument("--config", help="hf_quant_config.json (default: a ModelOpt FP8 export's)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_modelopt_check)

    s = sub.add_parser(
        "tiny-model", help="a tiny Llama checkpoint in bf16 and ModelOpt FP8 (OUT/bf16, OUT/fp8)"
    )
    s.add_argument("--out", required=True, help="directory to write OUT/bf16 and OUT/fp8 into")
    s.add_argument("--seed", type=int, default=0, help="weights' seed")
    s.add_argument(
        "--compare", action="store_true", help="also compare fp8 with bf16 on CPU (plain torch)"
    )
    s.set_defaults(fn=cmd_tiny_model)

    s = sub.add_parser(
        "model", help="the model stage: vLLM serves DIR/fp8 (modelopt) and DIR/bf16, compared"
    )
    s.add_argument("--dir", required=True, help="what tiny-model --out wrote")
    s.add_argument("--work", default="results/model", help="worker outputs and the log")
    s.add_argument("--python", default=sys.executable, help="the Python that has vLLM")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_model)

    s = sub.add_parser(
        "currency",
        help="is the knowledge current? new releases, patch ranges, knowledge gaps "
        "(exit 0 current, 1 stale, 3 no answer)",
    )
    s.add_argument("--matrix", default="matrix.toml", help="its directory holds patches/")
    s.add_argument("--arch", default="12.0", help="the arch each release is preflighted for")
    s.add_argument("--since", help="preflight only releases from this one on (default: all)")
    s.add_argument("--no-preflight", action="store_true", help="releases and patches only")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_currency)

    s = sub.add_parser(
        "newest", help="the newest vLLM release that builds with a given torch (walks releases)"
    )
    s.add_argument(
        "--torch", help="2.6.0 (the index's wheel) or 2.7.1+cu128 (default: --env's torch)"
    )
    s.add_argument("--cuda", help="nvcc version (default: --env's nvcc, else the torch's CUDA)")
    s.add_argument("--python", help="default: --env's Python, else 3.12")
    s.add_argument("--provider", help="toolkit provider (default: one that can supply --cuda)")
    s.add_argument(
        "--depth",
        default="preflight",
        help="preflight (the default: every rule, seconds) | probe (also compile the answer "
        "and the next newer release: minutes, GBs of downloads)",
    )
    target_opts.add_options(s)
    s.add_argument("--verbose", action="store_true", help="also list every release of the walk")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_newest)

    s = with_matrix(
        sub.add_parser(
            "blackwell", help="per release: the cheapest toolchain serving an arch (preflight)"
        )
    )
    s.add_argument("--arch", default="12.0")
    s.add_argument(
        "--vllm",
        action="append",
        default=None,
        help="release (repeatable; default 0.8.5, 0.9.2, 0.10.1)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_blackwell)

    s = sub.add_parser("derive-torch", help="torch wheel facts as TOML (from the real wheels)")
    s.add_argument("versions", nargs="+", help="2.6.0, or a variant 2.7.1+cu128 (its index set)")
    s.add_argument("--matrix", default="matrix.toml", help="read [torch-index] from it if present")
    s.set_defaults(fn=cmd_derive_torch)

    s = sub.add_parser(
        "derive-pins", help="regenerate knowledge/data/vllm_pins.toml from real sdists"
    )
    s.add_argument("--since", default=str(pins.FIRST))
    s.add_argument("--write", action="store_true")
    s.set_defaults(fn=cmd_derive_pins)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        rc: int = args.fn(args)
        return rc
    except MatrixError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return EXIT_CELL_ERROR if isinstance(exc, ToolError) else EXIT_USAGE
    except OSError as exc:  # disk full, read-only cache, outside any cell
        if args.debug:
            raise
        message, fix = describe_os_error(exc)
        print(f"error: {message}\n  fix: {fix}", file=sys.stderr)
        return EXIT_CELL_ERROR
    except KeyboardInterrupt:
        print("interrupted: results written so far are valid; rerun to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
