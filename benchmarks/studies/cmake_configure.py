"""Benchmark: CMake's own configure vs the probe's home-made CMake evaluation (issue 14, item 2).

For each shipped cell that reaches the probe, on the same patched tree, toolkit and torch:

* home-made: ``probe.build_model`` (the lexer/interpreter) + ``probe.explain_flags`` for every
  unit the model says is compiled; caches cleared first, wall and CPU seconds measured;
* CMake: vLLM's configure as its setup.py runs it (``-G Ninja``, ``CMAKE_BUILD_TYPE``
  ``RelWithDebInfo``, ``VLLM_TARGET_DEVICE=cuda``, ``VLLM_PYTHON_EXECUTABLE``,
  ``CMAKE_CUDA_COMPILER``, the fixups' env with ``TORCH_CUDA_ARCH_LIST``) plus
  ``-DCMAKE_EXPORT_COMPILE_COMMANDS=ON``; the FetchContent dependencies from the prefetch
  cache (``--externals cache``), as empty directories (``--externals empty``), or CUTLASS
  from the cache and the rest empty (``--externals cutlass``).

Compared per cell: the set of vLLM's own units (csrc/**.cu|.cpp), and per unit the -gencode
pairs, the -D defines, the include dirs (as a set and in order) and the remaining flags.
Paths are written as $TREE, $CUDA, $TORCH, $PYINC, $EXT/<name>, $BUILD: the JSON names no
path of the machine.

vLLM's CMake imports torch (``run_python``: torch.utils.cmake_prefix_path,
cpp_extension.COMMON_NVCC_FLAGS). The probe's torch envs hold torch without its dependencies
(``headers``), so ``import torch`` fails there; the benchmark first records that, then adds
torch's own runtime requirements (minus triton) with ``uv pip install --target`` into an
overlay dir (``BENCH_CMAKE_OVERLAYS``, default <cache>/bench-cmake), and configures with a
small venv of the same interpreter whose .pth names the env's site-packages and the overlay
(PYTHONPATH would not do: vLLM's CMake runs its kernel generators with
``PYTHONPATH=$PYTHONPATH``, which CMake does not expand).

Needs: the cells' toolkits and headers envs (``run --depth toolkit``), the externals in the
sources cache for ``cache`` (``inv prefetch --vllm X --git DIR...``), about 3 GiB of disk per
torch version for its overlay, and about 40 s per configure on 2 cores.

Run: nox -s bench-cmake [-- --cell ID ... --externals cache|cutlass|empty|all --write]
Prints one JSON object; --write saves reports/bench/cmake-configure.json (and keeps the
other cells' entries already there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra import portable as portable_paths
from vllm_matrix.infra import proc
from vllm_matrix.infra.cache import cache_root
from vllm_matrix.infra.config import Cell, load_matrix
from vllm_matrix.knowledge import probe_units
from vllm_matrix.sources import externals
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import facts as facts_mod
from vllm_matrix.stages import patches, probe, toolkit
from vllm_matrix.stages.env import fixups
from vllm_matrix.stages.probe import configure as probe_configure
from vllm_matrix.stages.probe import includes, torchflags
from vllm_matrix.stages.probe import units as probe_selection
from vllm_matrix.studies.cmake_configure import (
    Flags,
    parse,
    path_roots,
    portable_lines,
    write_md,
)

HERE = Path(__file__).resolve().parents[2]

# The shipped cells that reach the probe (matrix.toml); the others are SKIPPED or
# PREDICTED-FAIL before it.
CELLS = (
    "vllm0.4.2-torch2.3.0-cu12.4-py3.11-sm80",
    "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90",
    "vllm0.10.1-torch2.7.1-cu12.4-py3.12-sm90",
    "vllm0.20.0-torch2.11.0-cu13.0-py3.12-sm120",
)
OUT = HERE / "reports" / "bench" / "cmake-configure.json"
UNIT_SUFFIXES = (".cu", ".cpp", ".cc", ".c")
CONFIGURE_TIMEOUT_S = 1800.0
FILL_ROUNDS = 8
CONFIGURE_EXTRA = ("setuptools>=61", "jinja2")


# ------------------------------------------------------------------ the cell's inputs


@dataclass(frozen=True)
class Ctx:
    cell: Cell
    tree: Path  # a private, patched copy
    facts: facts_mod.SourceFacts
    toolkit: toolkit.Toolkit
    torch_env: env_mod.TorchEnv
    fixups: fixups.Fixups
    ext_dirs: dict[str, Path]  # what the probe would use (fetch=False: nothing new)
    build_dirs: dict[str, Path]  # full trees for CMake (prefetch cache only)


def context(cell: Cell, scratch: Path) -> Ctx:
    cached = source.get_tree(cell.source_spec)
    tree = scratch / "tree"
    # A real copy: configure-time generators write into the tree, and the cache's tree is
    # shared (a hard-linked copy would let them write through).
    shutil.copytree(cached.root, tree, symlinks=True)
    chosen = patches.select(patches.load_series(root=HERE), cached.version)
    patches.apply_all(tree, chosen, version=cached.version)
    facts = facts_mod.read_facts(tree, cached.version)
    toolkit_here = toolkit.provide(cell.provider, cell.cuda)
    torch_env = env_mod.provide(cell.python, cell.torch, "headers")
    fixed = fixups.compute(toolkit_here, torch_env, cell.arch)
    know = probe_units.load_knowledge()
    ext_dirs: dict[str, Path] = {}
    build_dirs: dict[str, Path] = {}
    for ext in facts.external:
        ext_dir = externals.external_dir(facts, ext.name, know, fetch=False)
        if ext_dir.path is not None and any(known.name == ext.name for known in know.externals):
            ext_dirs[ext.name] = ext_dir.path
        tree_dir = externals.external_dir(facts, ext.name, know, fetch=False, need_tree=True)
        if tree_dir.path is not None:
            build_dirs[ext.name] = tree_dir.path
    return Ctx(cell, tree, facts, toolkit_here, torch_env, fixed, ext_dirs, build_dirs)


# ------------------------------------------------------------------ flags, normalised


def path_names(ctx: Ctx, build: Path | None = None) -> dict[str, str]:
    out = {
        os.path.realpath(ctx.tree): "$TREE",
        os.path.realpath(ctx.toolkit.root): "$CUDA",
        os.path.realpath(ctx.torch_env.torch_dir): "$TORCH",
        os.path.realpath(ctx.torch_env.site): "$SITE",
    }
    inc = torchflags.torch_flags(ctx.torch_env).python_include
    if inc:
        out[os.path.realpath(inc)] = "$PYINC"
    for name, folder in {**ctx.ext_dirs, **ctx.build_dirs}.items():
        out[os.path.realpath(folder)] = f"$EXT/{name}"
    if build is not None:
        out[os.path.realpath(build)] = "$BUILD"
        for folder in build.parent.glob("stand-ins-*"):
            out[os.path.realpath(folder)] = "$STANDIN"
        out[os.path.realpath(build.parent)] = "$SCRATCH"
    # the unresolved spellings too (a cache under a symlinked home)
    for spelled, name in [
        (ctx.tree, "$TREE"),
        (ctx.toolkit.root, "$CUDA"),
        (ctx.torch_env.torch_dir, "$TORCH"),
        (ctx.torch_env.site, "$SITE"),
        (ctx.torch_env.root, "$ENV"),
    ]:
        out.setdefault(str(spelled), name)
    out.setdefault(os.path.realpath(ctx.torch_env.root), "$ENV")
    return out


def own_unit(rel: str) -> bool:
    return rel.startswith("csrc/") and rel.endswith(UNIT_SUFFIXES)


# ------------------------------------------------------------------ the home-made model


def _clear_caches() -> None:
    for cached in (
        probe_configure._build_model_cached,
        torchflags.torch_flags,
        torchflags._python_include,
        includes._includes_of,
    ):
        cached.cache_clear()


def homemade(ctx: Ctx) -> dict[str, Any]:
    _clear_caches()
    archs = tuple(ctx.cell.arch)
    know = probe_units.load_knowledge()
    started, cpu0 = time.perf_counter(), _cpu()
    tfl = torchflags.torch_flags(ctx.torch_env)
    model = probe.build_model(
        ctx.tree, ctx.toolkit.full_version, archs, tfl, ctx.cell.python, ctx.ext_dirs, know
    )
    t_model, c_model = time.perf_counter() - started, _cpu() - cpu0
    units: dict[str, list[str]] = {}
    for src in model.built_sources():
        if not own_unit(src):
            continue
        props = model.source_props.get(src, {})
        kind = probe_selection._kind(src, props) or "cxx"
        fam = model.family_of(src)
        target = model.target_of(src)
        unit = probe.Unit(
            src,
            "bench",
            kind,
            (),
            fam.name if fam else "",
            fam.gated if fam else False,
            target.name if target else "",
            probe_selection.unit_archs(model, src),
        )
        flags = probe.explain_flags(
            unit,
            ctx.tree,
            ctx.toolkit,
            ctx.torch_env,
            archs,
            ctx.facts,
            model=model,
            fetch_dirs=ctx.ext_dirs,
        )
        units[src] = [flag for flag, _ in flags]
    return {
        "wall_s": round(time.perf_counter() - started, 3),
        "cpu_s": round(_cpu() - cpu0, 3),
        "model_wall_s": round(t_model, 3),
        "model_cpu_s": round(c_model, 3),
        "units": units,
        "fatal": list(model.fatal),
        "empty_globs": list(model.empty_globs),
        "targets": {target.name: target.where for target in model.targets},
    }


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ------------------------------------------------------------------ CMake's configure


def overlay_for(torch_env: env_mod.TorchEnv, log: Path) -> Path:
    """torch's runtime requirements (not triton) in a --target dir, so ``import torch``
    works in the headers env; made once per env."""
    root = Path(os.environ.get("BENCH_CMAKE_OVERLAYS") or cache_root() / "bench-cmake")
    final = root / f"overlay-{torch_env.root.name}"
    meta = next(torch_env.site.glob("torch-*.dist-info")) / "METADATA"
    # What vLLM's configure itself imports beside torch: setuptools (cpp_extension imports
    # it; torch requires it only for Python >= 3.12) and jinja2 (the kernel generators).
    reqs = list(CONFIGURE_EXTRA)
    for line in meta.read_text().splitlines():
        if not line.startswith("Requires-Dist:") or "extra ==" in line:
            continue
        req = line.split(":", 1)[1].strip()
        name = re.split(r"[ ;<>=!(\[]", req, maxsplit=1)[0]
        if name.lower() == "triton":
            continue
        reqs.append(re.sub(r" \((.*?)\)", r"\1", req))
    done = final / ".done"
    if done.is_file() and done.read_text() == "\n".join(reqs):
        return final
    proc.run(
        [
            sys.executable,
            "-m",
            "uv",
            "pip",
            "install",
            "--python",
            str(torch_env.python_exe),
            "--target",
            str(final),
            *reqs,
        ],
        log=log,
        timeout=3600,
    )
    done.write_text("\n".join(reqs))
    return final


def python_for(torch_env: env_mod.TorchEnv, overlay: Path, log: Path) -> Path:
    """A venv of the env's interpreter that sees the env's site-packages and ``overlay``."""
    venv = overlay.parent / f"venv-{torch_env.root.name}"
    exe = venv / "bin" / "python"
    if not exe.exists():
        proc.run(
            [sys.executable, "-m", "uv", "venv", "--python", str(torch_env.python_exe), str(venv)],
            log=log,
            timeout=600,
        )
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_bench_cmake.pth").write_text(f"{torch_env.site}\n{overlay}\n")
    return exe


def cmake_exe(torch_env: env_mod.TorchEnv) -> str:
    exe = torch_env.python_exe.parent / "cmake"
    if not exe.exists():
        raise SystemExit(f"no cmake in the cell's env ({torch_env.root.name}): env.HEADERS_EXTRA")
    return str(exe)


def configure(ctx: Ctx, build: Path, ext_mode: str, python: Path, log: Path) -> dict[str, Any]:
    """vLLM's configure as setup.py runs it, plus compile_commands export."""
    env = ctx.fixups.env()
    env.pop("CMAKE_ARGS", None)
    env.pop("PYTHONPATH", None)
    env["VLLM_PYTHON_EXECUTABLE"] = str(python)
    ext_env: dict[str, str] = {}
    stand_ins: dict[str, str] = {}
    stand_root = build.parent / f"stand-ins-{ext_mode}"
    for ext in ctx.facts.external:
        var = ext.env_var
        if not var:
            continue
        real = ext_mode == "cache" or (ext_mode == "cutlass" and ext.name == "cutlass")
        if real and ext.name in ctx.build_dirs:
            ext_env[var] = str(ctx.build_dirs[ext.name])
        else:
            stand_in = stand_root / ext.name
            stand_in.mkdir(parents=True, exist_ok=True)
            ext_env[var] = str(stand_in)
            stand_ins[ext.name] = "empty" if not real else "empty (not prefetched)"
    env.update(ext_env)
    # setup.py passes its interpreter's sys.path: generators run from CMake (machete,
    # marlin) get it as their PYTHONPATH (CMake does not expand $PYTHONPATH there).
    sys_path = proc.run(
        [str(python), "-c", "import sys; print(':'.join(sys.path))"],
        env=env,
        timeout=120,
        stderr="drop",
    ).output.strip()
    argv = [
        cmake_exe(ctx.torch_env),
        str(ctx.tree),
        "-G",
        "Ninja",
        f"-DCMAKE_BUILD_TYPE={probe_configure.BUILD_TYPE}",
        "-DVLLM_TARGET_DEVICE=cuda",
        *[
            flag
            for flag in ctx.fixups.cmake_args()
            if not flag.startswith("-DVLLM_PYTHON_EXECUTABLE=")
        ],
        f"-DVLLM_PYTHON_EXECUTABLE={python}",
        f"-DVLLM_PYTHON_PATH={sys_path}",
        f"-DFETCHCONTENT_BASE_DIR={build.parent / 'deps'}",
        "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
    ]
    # Empty stand-ins: the files CMake itself names (add_library sources, file(READ)) are
    # created empty, one round at a time, then the timed configure starts afresh.
    filled: list[str] = []
    rounds = 0
    while stand_ins and rounds < FILL_ROUNDS:
        trial = build.parent / f"fill-{ext_mode}"
        shutil.rmtree(trial, ignore_errors=True)
        trial.mkdir(parents=True)
        done = proc.run(argv, cwd=trial, env=env, log=log, check=False, timeout=CONFIGURE_TIMEOUT_S)
        rounds += 1
        if done.returncode == 0:
            break
        new = [
            named
            for named in dict.fromkeys(
                re.findall(re.escape(str(stand_root)) + r"/[^\s\"'()]+", done.output)
            )
            if not Path(named).exists() and Path(named).suffix
        ]
        if not new:
            break
        for named in new:
            Path(named).parent.mkdir(parents=True, exist_ok=True)
            Path(named).write_text("")
        filled += new
    shutil.rmtree(build.parent / f"fill-{ext_mode}", ignore_errors=True)
    build.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = proc.run(argv, cwd=build, env=env, log=log, check=False, timeout=CONFIGURE_TIMEOUT_S)
    wall = time.perf_counter() - started
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    commands = build / "compile_commands.json"
    errors = [line.strip() for line in done.output.splitlines() if line.startswith("CMake Error")]
    out: dict[str, Any] = {
        "rc": done.returncode,
        "wall_s": round(wall, 2),
        "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
        "load_before": [round(load, 2) for load in load0],
        "load_after": [round(load, 2) for load in os.getloadavg()],
        "externals": {
            ext.name: stand_ins.get(ext.name, "prefetched tree") for ext in ctx.facts.external
        },
        "stand_in_files": len(filled),
        "stand_in_rounds": rounds,
        "compile_commands": commands.is_file(),
        "errors": portable_lines(errors[-5:], path_names(ctx, build)),
        "error_context": _error_context(done.output, ctx, build) if done.returncode else [],
    }
    units: dict[str, list[list[str]]] = {}
    others: list[str] = []
    if commands.is_file():
        tree = os.path.realpath(ctx.tree)
        for entry in json.loads(commands.read_text()):
            unit_file = os.path.realpath(os.path.join(entry["directory"], entry["file"]))
            args = entry.get("arguments") or shlex.split(entry["command"])
            if unit_file.startswith(tree + os.sep) and own_unit(unit_file[len(tree) + 1 :]):
                units.setdefault(unit_file[len(tree) + 1 :], []).append(
                    [*args[1:], "@src", unit_file]
                )
            else:
                others.append(unit_file)
    out["units"] = units
    out["other_entries"] = len(others)
    return out


def _error_context(output: str, ctx: Ctx, build: Path) -> list[str]:
    lines = output.splitlines()
    at = next((number for number, line in enumerate(lines) if line.startswith("CMake Error")), None)
    context = lines[-8:] if at is None else lines[at : at + 8]
    return portable_lines(context, path_names(ctx, build))


# ------------------------------------------------------------------ comparison


def compare(ctx: Ctx, home: dict[str, Any], cmake: dict[str, Any], build: Path) -> dict[str, Any]:
    names = path_names(ctx, build)
    h_units: dict[str, list[str]] = home["units"]
    c_units: dict[str, list[list[str]]] = cmake["units"]
    if not cmake["compile_commands"]:
        return {"compared": False}
    only_home = sorted(set(h_units) - set(c_units))
    only_cmake = sorted(set(c_units) - set(h_units))
    both = sorted(set(h_units) & set(c_units))
    agree = {
        diff_key: 0
        for diff_key in ("gencode", "defines", "include_set", "include_order", "other", "all")
    }
    diffs: dict[str, dict[str, Any]] = {}
    for unit in both:
        home_flags = parse(h_units[unit], names, None)
        cmds = c_units[unit]
        cfs = []
        for args in cmds:
            src = args[-1]
            cfs.append(parse(args[:-2], names, src))
        # A unit CMake compiles for several targets: agreement with any one of them.
        best = max(cfs, key=lambda flags: _score(home_flags, flags))
        diff: dict[str, Any] = {}
        ok_all = True
        for key, home_value, cmake_value in (
            ("gencode", home_flags.gencode, best.gencode),
            ("defines", home_flags.defines, best.defines),
            (
                "include_set",
                tuple(sorted(set(home_flags.includes))),
                tuple(sorted(set(best.includes))),
            ),
            ("include_order", home_flags.includes, best.includes),
            ("other", home_flags.other, best.other),
        ):
            if home_value == cmake_value:
                agree[key] += 1
            else:
                diff[key] = _delta(home_value, cmake_value)
                if key != "other":
                    ok_all = False
        if ok_all:
            agree["all"] += 1
        if len(cmds) > 1:
            diff["cmake_compiles_it"] = len(cmds)
        if diff:
            diffs[unit] = diff
    classes: dict[str, list[str]] = {}
    for unit, diff in diffs.items():
        classes.setdefault(json.dumps(diff, sort_keys=True), []).append(unit)
    return {
        "compared": True,
        "units_home": len(h_units),
        "units_cmake": len(c_units),
        "units_both": len(both),
        "only_home": only_home,
        "only_cmake": only_cmake,
        "agree": agree,
        # the same difference on many units: one row, with the units it covers
        "diff_classes": [
            {"units": len(units_of), "examples": units_of[:4], "diff": json.loads(diff_key)}
            for diff_key, units_of in sorted(classes.items(), key=lambda item: -len(item[1]))
        ],
    }


def _score(home: Flags, cmake: Flags) -> int:
    return sum(
        mine == theirs
        for mine, theirs in zip(
            (home.gencode, home.defines, home.includes),
            (cmake.gencode, cmake.defines, cmake.includes),
            strict=True,
        )
    )


def _delta(home: Iterable[str], cmake: Iterable[str]) -> dict[str, list[str]]:
    home_list, cm_list = list(home), list(cmake)
    if sorted(home_list) == sorted(cm_list):
        return {"order_home": home_list, "order_cmake": cm_list}
    return {
        "home_only": [flag for flag in home_list if flag not in cm_list],
        "cmake_only": [flag for flag in cm_list if flag not in home_list],
    }


# ------------------------------------------------------------------ driver


def run_cell(cell: Cell, ext_modes: Sequence[str], keep: Path | None) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-cmake-", dir=keep))
    try:
        ctx = context(cell, scratch)
        home = homemade(ctx)
        row: dict[str, Any] = {
            "cell": cell.id,
            "nvcc": ctx.toolkit.full_version,
            "torch": ctx.torch_env.torch_version,
            "cores": os.cpu_count(),
            "homemade": {key: value for key, value in home.items() if key != "units"},
            "configure": {},
        }
        row["homemade"]["units"] = len(home["units"])
        # 1. the probe's env as it is (headers: torch without its dependencies)
        plain = ctx.torch_env.python_exe
        probe_import = proc.run(
            [plain, "-c", "import torch"], check=False, timeout=300, env=ctx.fixups.env()
        )
        row["headers_env_imports_torch"] = probe_import.returncode == 0
        if probe_import.returncode != 0:
            last = (probe_import.output.strip().splitlines() or [""])[-1]
            row["headers_env_import_error"] = last.split(" [", 1)[0][:160]
        python = plain
        if probe_import.returncode != 0:
            started = time.perf_counter()
            overlay = overlay_for(ctx.torch_env, scratch / "overlay.log")
            python = python_for(ctx.torch_env, overlay, scratch / "overlay.log")
            row["overlay_s"] = round(time.perf_counter() - started, 1)
            row["overlay_gib"] = round(_size(overlay) / 2**30, 2)
        for mode in ext_modes:
            build = scratch / f"build-{mode}"
            log = scratch / f"configure-{mode}.log"
            configured = configure(ctx, build, mode, python, log)
            cmp = compare(ctx, home, configured, build)
            configured.pop("units")
            row["configure"][mode] = {**configured, **cmp}
            print(
                f"{cell.id} [{mode}]: rc {configured['rc']}, {configured['wall_s']} s, "
                f"agree {cmp.get('agree')}",
                file=sys.stderr,
                flush=True,
            )
            if keep is None:
                shutil.rmtree(build, ignore_errors=True)
        return row
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _size(root: Path) -> int:
    return sum(
        entry.stat().st_size
        for entry in root.rglob("*")
        if entry.is_file() and not entry.is_symlink()
    )


MD = OUT.with_suffix(".md")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cell", action="append", help="a cell id (default: the shipped four)")
    parser.add_argument(
        "--externals",
        choices=("cache", "empty", "cutlass", "all"),
        default="all",
        help="prefetched trees, empty dirs, CUTLASS only (the rest empty), or all three",
    )
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep scratch dirs under this dir")
    parser.add_argument(
        "--render", action="store_true", help="only re-render the .md from the JSON"
    )
    args = parser.parse_args(argv)
    if args.render:
        write_md(json.loads(OUT.read_text()), MD)
        return 0
    matrix = load_matrix(HERE / "matrix.toml")
    by_id = {cell.id: cell for cell in matrix.cells}
    ids = args.cell or list(CELLS)
    modes = ("cache", "cutlass", "empty") if args.externals == "all" else (args.externals,)
    unknown = [cell_id for cell_id in ids if cell_id not in by_id]
    if unknown:
        parser.error(f"unknown cell {unknown[0]}; cells: {', '.join(by_id)}")
    rows = {cell_id: run_cell(by_id[cell_id], modes, args.keep) for cell_id in ids}
    out: dict[str, Any] = {"schema": 1, "cells": rows}
    if args.write:
        if OUT.is_file():
            old = json.loads(OUT.read_text())
            out["cells"] = {**old.get("cells", {}), **rows}
        # what no reader's machine has: the home dir (error lines quote sys.path)
        out = portable_paths.doc(out, path_roots({}))
        OUT.write_text(json.dumps(out, indent=1) + "\n")
        write_md(out, MD)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
