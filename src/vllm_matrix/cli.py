"""Command line: `vllm-matrix <command>` (also what tasks.py and noxfile.py call)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from packaging.version import Version

from . import (
    browser,
    config,
    doctor,
    externals,
    facts,
    index,
    knowledge,
    mapping,
    mapreport,
    pins,
    pixi,
    probe,
    report,
    results,
    runner,
    source,
    tomlfile,
    torchwheel,
)
from .cache import atomic_write_text
from .errors import MatrixError


def _matrix(args: argparse.Namespace) -> tuple[config.Matrix, runner.Workspace]:
    path = Path(args.matrix).resolve()
    m = config.load_matrix(path)
    return m, runner.Workspace(path.parent)


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
    tk = doctor.current_toolkit()
    tv = doctor.current_env()
    archs = config.parse_arch_list(arch or os.environ.get("TORCH_CUDA_ARCH_LIST", ""))
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


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_options(args: argparse.Namespace) -> runner.BuildOptions:
    return runner.BuildOptions(
        max_jobs=getattr(args, "max_jobs", None),
        nvcc_threads=getattr(args, "nvcc_threads", None),
        clean=getattr(args, "clean", False),
        ccache=not getattr(args, "no_ccache", False),
        probe_units=getattr(args, "units", None) or "selected",
    )


def cmd_run(args: argparse.Namespace) -> int:
    opts = build_options(args)
    if getattr(args, "env", None) == "current":
        if not args.vllm:
            raise MatrixError("--env current needs --vllm VERSION", fix="e.g. --vllm 0.8.5")
        cell = current_cell(args.vllm, args.arch)
        ws = runner.Workspace(Path.cwd())
        runner.check_depth(args.depth)
        stages = runner.run_cell(cell, ws, args.depth, force=args.force, echo=_say, opts=opts)
        v = results.verdict_of(stages)
        print(
            f"{v.verdict:15} {cell.id} (at {v.depth})" + (f"\n{'':15} {v.cause}" if v.cause else "")
        )
        return 0
    m, ws = _matrix(args)
    done = runner.run_matrix(
        m, ws, args.depth, args.cell, echo=_say, force=getattr(args, "force", False), opts=opts
    )
    _, md = report.write(m, ws.results, ws.reports)
    if getattr(args, "json", False):
        print(
            json.dumps(
                [
                    {
                        "id": c.id,
                        "verdict": v.verdict,
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
            print(f"{v.verdict:15} {c.id}" + (f"\n{'':15} {v.cause}" if v.cause else ""))
        print(f"report: {md}", file=sys.stderr)
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    """The grid at preflight depth, probes at boundaries within --probe-budget, the map."""
    m, ws = _matrix(args)

    def probe_cell(cell: config.Cell, force: bool) -> None:
        runner.run_cell(cell, ws, "probe", force=force, echo=_say)

    run = mapping.run_map(m, ws.results, probe_cell, args.probe_budget, echo=_say)
    d = run.to_json()
    atomic_write_text(ws.results / "map.json", json.dumps(d) + "\n")
    md, page = mapreport.write(d, ws.reports)
    if args.screenshot:
        exe = browser.headless_shell(log=ws.results / "logs" / "browser.log")
        png = browser.screenshot(exe, page, ws.reports / "map.png", (2400, 1350))
        _say(f"screenshot: {png} ({browser.png_colors(png)} colours)")
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
    """One arch's tables of the last map (results/map.json), as README markdown."""
    _, ws = _matrix(args)
    path = ws.results / "map.json"
    if not path.is_file():
        raise MatrixError(f"no {path.name} under results/", fix="run `nox -s map` first")
    arch = config.arch_tag(config.normalize_arch(args.arch))
    print(mapreport.slice_md(json.loads(path.read_text()), arch), end="")
    return 0


def release_cell(args: argparse.Namespace) -> config.Cell:
    """A cell for any release: its pinned torch (or --torch), a toolkit for that torch's CUDA
    that a provider can supply here (or --cuda/--provider), Python both accept."""
    v = args.version
    tree = source.get_tree(v)
    f = facts.read_facts(tree.root, tree.version)
    torch = args.torch or f.torch or pins.load().get(v)
    if not torch:
        raise MatrixError(f"vLLM {v} pins no torch that could be read", fix="pass --torch X")
    know = knowledge.load()
    tf = know.torch.get(torch.partition("+")[0])
    cuda, provider = args.cuda, args.provider
    if cuda is None:
        cuda, provider = mapping.toolchain_for(tf.cuda if tf else None, know, provider)
    elif provider is None:
        provider = mapping.provider_for(cuda, know)
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
    archs = config.parse_arch_list(args.arch or os.environ.get("TORCH_CUDA_ARCH_LIST") or "9.0")
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
    ws = runner.Workspace(Path(args.matrix).resolve().parent)
    runner.check_depth(args.depth)
    _say(f"cell {cell.id} (provider {cell.provider}) to depth {args.depth}")
    stages = runner.run_cell(
        cell, ws, args.depth, force=args.force, echo=_say, opts=build_options(args)
    )
    v = results.verdict_of(stages)
    print(f"{v.verdict:15} {cell.id} (at {v.depth})" + (f"\n{'':15} {v.cause}" if v.cause else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    m, ws = _matrix(args)
    _, md = report.write(m, ws.results, ws.reports)
    print(md)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.env == "current":
        archs = config.parse_arch_list(args.arch or os.environ.get("TORCH_CUDA_ARCH_LIST", ""))
        rep = doctor.for_current(archs)
    elif args.env:
        raise MatrixError(f"unknown --env '{args.env}'", fix="use --env current, or --cell ID")
    else:
        m, _ = _matrix(args)
        cells = m.select(args.cell)
        if len(cells) != 1:
            raise MatrixError(
                f"--cell '{args.cell or ''}' matches {len(cells)} cells",
                fix="name one: " + ", ".join(c.id for c in cells),
            )
        rep = doctor.for_cell(cells[0])
    print(json.dumps(rep.to_json(), indent=1) if args.json else rep.render())
    return 1 if rep.problems else 0


def cmd_pixi_snippet(args: argparse.Namespace) -> int:
    m, ws = _matrix(args)
    cells = m.select(args.cell)
    if len(cells) != 1:
        raise MatrixError(
            f"--cell '{args.cell}' matches {len(cells)} cells",
            fix="name one: " + ", ".join(c.id for c in cells),
        )
    cell = cells[0]
    used = pixi.used_fixups(ws.results, cell)
    tree = source.get_tree(cell.source_spec)
    f = facts.read_facts(tree.root, tree.version)
    nv = knowledge.load().nvcc_for(cell.cuda)
    text = pixi.snippet(
        cell,
        used,
        max_jobs=cell.options.max_jobs,
        cmake_min=f.cmake,
        max_gcc=nv.max_gcc if nv else None,
    )
    pixi.parse(text)  # never print TOML that does not parse
    print(text, end="")
    return 0


def cmd_derive_torch(args: argparse.Namespace) -> int:
    for v in args.versions:
        print(torchwheel.toml_entry(torchwheel.read_facts(v)))
    return 0


def cmd_derive_pins(args: argparse.Namespace) -> int:
    rows: dict[str, tuple[str | None, str]] = {}
    vs = sorted(
        {
            f.version
            for f in index.project_files("vllm")
            if f.kind == "sdist"
            and not f.version.is_prerelease
            and f.version >= Version(args.since)
        }
    )
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
        probe.load_knowledge(),
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm-matrix", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
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
    s.add_argument("--depth", default=runner.DEFAULT_DEPTH, help="|".join(runner.DEPTHS))
    s.add_argument("--cell", help="only cells whose id contains this")
    s.add_argument(
        "--force",
        action="store_true",
        help="go on past a predicted failure (to check the prediction)",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument("--env", help="'current': use the active env's toolkit and torch")
    s.add_argument("--vllm", help="with --env current: the vLLM version to check")
    s.add_argument("--arch", help="with --env current: arches (default TORCH_CUDA_ARCH_LIST)")
    s.add_argument(
        "--units",
        choices=probe.UNITS_MODES,
        help="probe: the units it selects (default) or all the build compiles (slow)",
    )
    b = s.add_argument_group("--depth build")
    b.add_argument("--max-jobs", type=int, help="MAX_JOBS (default: from cores and free RAM)")
    b.add_argument("--nvcc-threads", type=int, help="NVCC_THREADS (default: from free RAM)")
    b.add_argument("--clean", action="store_true", help="remake the work copy (no resume)")
    b.add_argument("--no-ccache", action="store_true", help="build without ccache")
    s.set_defaults(fn=cmd_run)

    s = with_matrix(sub.add_parser("preflight", help="run = --depth preflight"))
    s.add_argument("--cell", help="only cells whose id contains this")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_run, depth="preflight")

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
        help="also draw reports/map.png with Debian's headless Chromium (fetched into the cache)",
    )
    s.set_defaults(fn=cmd_map)

    s = with_matrix(sub.add_parser("map-slice", help="one arch's map tables as markdown"))
    s.add_argument("--arch", default="12.0", help="the arch (default 12.0: Blackwell)")
    s.set_defaults(fn=cmd_map_slice)

    s = with_matrix(
        sub.add_parser("release", help="any release on its pinned toolchain or the one given")
    )
    s.add_argument("version", help="a vLLM release, e.g. 0.9.2")
    s.add_argument("--torch", help="default: the release's pin (data/vllm_pins.toml)")
    s.add_argument("--cuda", help="default: the torch's CUDA, or the nearest obtainable here")
    s.add_argument("--provider", help="debian | pypi | system | conda-prefix")
    s.add_argument("--arch", help="GPU arches (default TORCH_CUDA_ARCH_LIST, else 9.0)")
    s.add_argument("--python", help="default: the newest both vLLM and torch accept")
    s.add_argument("--depth", default=runner.DEFAULT_DEPTH, help="|".join(runner.DEPTHS))
    s.add_argument("--force", action="store_true", help="go on past a predicted failure")
    b = s.add_argument_group("--depth build")
    b.add_argument("--max-jobs", type=int, help="MAX_JOBS (default: from cores and free RAM)")
    b.add_argument("--nvcc-threads", type=int, help="NVCC_THREADS (default: from free RAM)")
    b.add_argument("--clean", action="store_true", help="remake the work copy (no resume)")
    b.add_argument("--no-ccache", action="store_true", help="build without ccache")
    s.set_defaults(fn=cmd_release)

    s = with_matrix(sub.add_parser("report", help="re-render reports/ from results/"))
    s.set_defaults(fn=cmd_report)

    s = with_matrix(sub.add_parser("doctor", help="a cell's or the current env's toolchain"))
    s.add_argument("--cell", help="the cell (id or a unique part of it)")
    s.add_argument("--env", help="'current': the active env (conda/pixi/venv) instead of a cell")
    s.add_argument("--arch", help="arches for --env current (default: TORCH_CUDA_ARCH_LIST)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_doctor)

    s = with_matrix(sub.add_parser("pixi-snippet", help="pyproject.toml pieces for a Pixi project"))
    s.add_argument("--cell", required=True, help="the cell (id or a unique part of it)")
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

    s = sub.add_parser("derive-torch", help="torch wheel facts as TOML (from the real wheels)")
    s.add_argument("versions", nargs="+")
    s.set_defaults(fn=cmd_derive_torch)

    s = sub.add_parser("derive-pins", help="regenerate data/vllm_pins.toml from real sdists")
    s.add_argument("--since", default="0.4.0")
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
        return 2
    except KeyboardInterrupt:
        print("interrupted: results written so far are valid; rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
