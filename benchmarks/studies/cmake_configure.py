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
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import externals, fixups, patches, probe, source, toolkit
from vllm_matrix.stages import facts as facts_mod
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
    tk: toolkit.Toolkit
    tv: env_mod.TorchEnv
    fx: fixups.Fixups
    ext_dirs: dict[str, Path]  # what the probe would use (fetch=False: nothing new)
    build_dirs: dict[str, Path]  # full trees for CMake (prefetch cache only)


def context(cell: Cell, scratch: Path) -> Ctx:
    st = source.get_tree(cell.source_spec)
    tree = scratch / "tree"
    # A real copy: configure-time generators write into the tree, and the cache's tree is
    # shared (a hard-linked copy would let them write through).
    shutil.copytree(st.root, tree, symlinks=True)
    chosen = patches.select(patches.load_series(root=HERE), st.version)
    patches.apply_all(tree, chosen, version=st.version)
    f = facts_mod.read_facts(tree, st.version)
    tk = toolkit.provide(cell.provider, cell.cuda)
    tv = env_mod.provide(cell.python, cell.torch, "headers")
    fx = fixups.compute(tk, tv, cell.arch)
    know = probe_units.load_knowledge()
    ext_dirs: dict[str, Path] = {}
    build_dirs: dict[str, Path] = {}
    for e in f.external:
        d = externals.external_dir(f, e.name, know, fetch=False)
        if d.path is not None and any(k.name == e.name for k in know.externals):
            ext_dirs[e.name] = d.path
        t = externals.external_dir(f, e.name, know, fetch=False, need_tree=True)
        if t.path is not None:
            build_dirs[e.name] = t.path
    return Ctx(cell, tree, f, tk, tv, fx, ext_dirs, build_dirs)


# ------------------------------------------------------------------ flags, normalised


def path_names(ctx: Ctx, build: Path | None = None) -> dict[str, str]:
    out = {
        os.path.realpath(ctx.tree): "$TREE",
        os.path.realpath(ctx.tk.root): "$CUDA",
        os.path.realpath(ctx.tv.torch_dir): "$TORCH",
        os.path.realpath(ctx.tv.site): "$SITE",
    }
    inc = torchflags.torch_flags(ctx.tv).python_include
    if inc:
        out[os.path.realpath(inc)] = "$PYINC"
    for name, d in {**ctx.ext_dirs, **ctx.build_dirs}.items():
        out[os.path.realpath(d)] = f"$EXT/{name}"
    if build is not None:
        out[os.path.realpath(build)] = "$BUILD"
        for d in build.parent.glob("stand-ins-*"):
            out[os.path.realpath(d)] = "$STANDIN"
        out[os.path.realpath(build.parent)] = "$SCRATCH"
    # the unresolved spellings too (a cache under a symlinked home)
    for p, name in [
        (ctx.tree, "$TREE"),
        (ctx.tk.root, "$CUDA"),
        (ctx.tv.torch_dir, "$TORCH"),
        (ctx.tv.site, "$SITE"),
        (ctx.tv.root, "$ENV"),
    ]:
        out.setdefault(str(p), name)
    out.setdefault(os.path.realpath(ctx.tv.root), "$ENV")
    return out


def own_unit(rel: str) -> bool:
    return rel.startswith("csrc/") and rel.endswith(UNIT_SUFFIXES)


# ------------------------------------------------------------------ the home-made model


def _clear_caches() -> None:
    for fn in (
        probe_configure._build_model_cached,
        torchflags.torch_flags,
        torchflags._python_include,
        includes._includes_of,
    ):
        fn.cache_clear()


def homemade(ctx: Ctx) -> dict[str, Any]:
    _clear_caches()
    archs = tuple(ctx.cell.arch)
    know = probe_units.load_knowledge()
    t0, c0 = time.perf_counter(), _cpu()
    tfl = torchflags.torch_flags(ctx.tv)
    model = probe.build_model(
        ctx.tree, ctx.tk.full_version, archs, tfl, ctx.cell.python, ctx.ext_dirs, know
    )
    t_model, c_model = time.perf_counter() - t0, _cpu() - c0
    units: dict[str, list[str]] = {}
    for src in model.built_sources():
        if not own_unit(src):
            continue
        props = model.source_props.get(src, {})
        kind = probe_selection._kind(src, props) or "cxx"
        fam = model.family_of(src)
        t = model.target_of(src)
        u = probe.Unit(
            src,
            "bench",
            kind,
            (),
            fam.name if fam else "",
            fam.gated if fam else False,
            t.name if t else "",
            probe_selection.unit_archs(model, src),
        )
        fl = probe.explain_flags(
            u, ctx.tree, ctx.tk, ctx.tv, archs, ctx.facts, model=model, fetch_dirs=ctx.ext_dirs
        )
        units[src] = [f for f, _ in fl]
    return {
        "wall_s": round(time.perf_counter() - t0, 3),
        "cpu_s": round(_cpu() - c0, 3),
        "model_wall_s": round(t_model, 3),
        "model_cpu_s": round(c_model, 3),
        "units": units,
        "fatal": list(model.fatal),
        "empty_globs": list(model.empty_globs),
        "targets": {t.name: t.where for t in model.targets},
    }


def _cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# ------------------------------------------------------------------ CMake's configure


def overlay_for(tv: env_mod.TorchEnv, log: Path) -> Path:
    """torch's runtime requirements (not triton) in a --target dir, so ``import torch``
    works in the headers env; made once per env."""
    root = Path(os.environ.get("BENCH_CMAKE_OVERLAYS") or cache_root() / "bench-cmake")
    final = root / f"overlay-{tv.root.name}"
    meta = next(tv.site.glob("torch-*.dist-info")) / "METADATA"
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
            str(tv.python_exe),
            "--target",
            str(final),
            *reqs,
        ],
        log=log,
        timeout=3600,
    )
    done.write_text("\n".join(reqs))
    return final


def python_for(tv: env_mod.TorchEnv, overlay: Path, log: Path) -> Path:
    """A venv of the env's interpreter that sees the env's site-packages and ``overlay``."""
    venv = overlay.parent / f"venv-{tv.root.name}"
    exe = venv / "bin" / "python"
    if not exe.exists():
        proc.run(
            [sys.executable, "-m", "uv", "venv", "--python", str(tv.python_exe), str(venv)],
            log=log,
            timeout=600,
        )
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_bench_cmake.pth").write_text(f"{tv.site}\n{overlay}\n")
    return exe


def cmake_exe(tv: env_mod.TorchEnv) -> str:
    exe = tv.python_exe.parent / "cmake"
    if not exe.exists():
        raise SystemExit(f"no cmake in the cell's env ({tv.root.name}): env.HEADERS_EXTRA")
    return str(exe)


def configure(ctx: Ctx, build: Path, ext_mode: str, python: Path, log: Path) -> dict[str, Any]:
    """vLLM's configure as setup.py runs it, plus compile_commands export."""
    env = ctx.fx.env()
    env.pop("CMAKE_ARGS", None)
    env.pop("PYTHONPATH", None)
    env["VLLM_PYTHON_EXECUTABLE"] = str(python)
    ext_env: dict[str, str] = {}
    stand_ins: dict[str, str] = {}
    stand_root = build.parent / f"stand-ins-{ext_mode}"
    for e in ctx.facts.external:
        var = e.env_var
        if not var:
            continue
        real = ext_mode == "cache" or (ext_mode == "cutlass" and e.name == "cutlass")
        if real and e.name in ctx.build_dirs:
            ext_env[var] = str(ctx.build_dirs[e.name])
        else:
            d = stand_root / e.name
            d.mkdir(parents=True, exist_ok=True)
            ext_env[var] = str(d)
            stand_ins[e.name] = "empty" if not real else "empty (not prefetched)"
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
        cmake_exe(ctx.tv),
        str(ctx.tree),
        "-G",
        "Ninja",
        f"-DCMAKE_BUILD_TYPE={probe_configure.BUILD_TYPE}",
        "-DVLLM_TARGET_DEVICE=cuda",
        *[a for a in ctx.fx.cmake_args() if not a.startswith("-DVLLM_PYTHON_EXECUTABLE=")],
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
            p
            for p in dict.fromkeys(
                re.findall(re.escape(str(stand_root)) + r"/[^\s\"'()]+", done.output)
            )
            if not Path(p).exists() and Path(p).suffix
        ]
        if not new:
            break
        for p in new:
            Path(p).parent.mkdir(parents=True, exist_ok=True)
            Path(p).write_text("")
        filled += new
    shutil.rmtree(build.parent / f"fill-{ext_mode}", ignore_errors=True)
    build.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = proc.run(argv, cwd=build, env=env, log=log, check=False, timeout=CONFIGURE_TIMEOUT_S)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cc = build / "compile_commands.json"
    errors = [ln.strip() for ln in done.output.splitlines() if ln.startswith("CMake Error")]
    out: dict[str, Any] = {
        "rc": done.returncode,
        "wall_s": round(wall, 2),
        "cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "externals": {e.name: stand_ins.get(e.name, "prefetched tree") for e in ctx.facts.external},
        "stand_in_files": len(filled),
        "stand_in_rounds": rounds,
        "compile_commands": cc.is_file(),
        "errors": portable_lines(errors[-5:], path_names(ctx, build)),
        "error_context": _error_context(done.output, ctx, build) if done.returncode else [],
    }
    units: dict[str, list[list[str]]] = {}
    others: list[str] = []
    if cc.is_file():
        tree = os.path.realpath(ctx.tree)
        for entry in json.loads(cc.read_text()):
            f = os.path.realpath(os.path.join(entry["directory"], entry["file"]))
            args = entry.get("arguments") or shlex.split(entry["command"])
            if f.startswith(tree + os.sep) and own_unit(f[len(tree) + 1 :]):
                units.setdefault(f[len(tree) + 1 :], []).append([*args[1:], "@src", f])
            else:
                others.append(f)
    out["units"] = units
    out["other_entries"] = len(others)
    return out


def _error_context(output: str, ctx: Ctx, build: Path) -> list[str]:
    lines = output.splitlines()
    at = next((n for n, line in enumerate(lines) if line.startswith("CMake Error")), None)
    context = lines[-8:] if at is None else lines[at : at + 8]
    return portable_lines(context, path_names(ctx, build))


# ------------------------------------------------------------------ comparison


def compare(ctx: Ctx, home: dict[str, Any], cm: dict[str, Any], build: Path) -> dict[str, Any]:
    names = path_names(ctx, build)
    h_units: dict[str, list[str]] = home["units"]
    c_units: dict[str, list[list[str]]] = cm["units"]
    if not cm["compile_commands"]:
        return {"compared": False}
    only_home = sorted(set(h_units) - set(c_units))
    only_cmake = sorted(set(c_units) - set(h_units))
    both = sorted(set(h_units) & set(c_units))
    agree = {k: 0 for k in ("gencode", "defines", "include_set", "include_order", "other", "all")}
    diffs: dict[str, dict[str, Any]] = {}
    for u in both:
        hf = parse(h_units[u], names, None)
        cmds = c_units[u]
        cfs = []
        for args in cmds:
            src = args[-1]
            cfs.append(parse(args[:-2], names, src))
        # A unit CMake compiles for several targets: agreement with any one of them.
        best = max(cfs, key=lambda cf: _score(hf, cf))
        d: dict[str, Any] = {}
        ok_all = True
        for key, a, b in (
            ("gencode", hf.gencode, best.gencode),
            ("defines", hf.defines, best.defines),
            ("include_set", tuple(sorted(set(hf.includes))), tuple(sorted(set(best.includes)))),
            ("include_order", hf.includes, best.includes),
            ("other", hf.other, best.other),
        ):
            if a == b:
                agree[key] += 1
            else:
                d[key] = _delta(a, b)
                if key != "other":
                    ok_all = False
        if ok_all:
            agree["all"] += 1
        if len(cmds) > 1:
            d["cmake_compiles_it"] = len(cmds)
        if d:
            diffs[u] = d
    classes: dict[str, list[str]] = {}
    for u, d in diffs.items():
        classes.setdefault(json.dumps(d, sort_keys=True), []).append(u)
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
            {"units": len(us), "examples": us[:4], "diff": json.loads(k)}
            for k, us in sorted(classes.items(), key=lambda kv: -len(kv[1]))
        ],
    }


def _score(a: Flags, b: Flags) -> int:
    return sum(
        x == y
        for x, y in zip(
            (a.gencode, a.defines, a.includes), (b.gencode, b.defines, b.includes), strict=True
        )
    )


def _delta(home: Iterable[str], cmake: Iterable[str]) -> dict[str, list[str]]:
    h, c = list(home), list(cmake)
    if sorted(h) == sorted(c):
        return {"order_home": h, "order_cmake": c}
    return {
        "home_only": [x for x in h if x not in c],
        "cmake_only": [x for x in c if x not in h],
    }


# ------------------------------------------------------------------ driver


def run_cell(cell: Cell, ext_modes: Sequence[str], keep: Path | None) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-cmake-", dir=keep))
    try:
        ctx = context(cell, scratch)
        home = homemade(ctx)
        row: dict[str, Any] = {
            "cell": cell.id,
            "nvcc": ctx.tk.full_version,
            "torch": ctx.tv.torch_version,
            "cores": os.cpu_count(),
            "homemade": {k: v for k, v in home.items() if k != "units"},
            "configure": {},
        }
        row["homemade"]["units"] = len(home["units"])
        # 1. the probe's env as it is (headers: torch without its dependencies)
        plain = ctx.tv.python_exe
        probe_import = proc.run(
            [plain, "-c", "import torch"], check=False, timeout=300, env=ctx.fx.env()
        )
        row["headers_env_imports_torch"] = probe_import.returncode == 0
        if probe_import.returncode != 0:
            last = (probe_import.output.strip().splitlines() or [""])[-1]
            row["headers_env_import_error"] = last.split(" [", 1)[0][:160]
        python = plain
        if probe_import.returncode != 0:
            t0 = time.perf_counter()
            overlay = overlay_for(ctx.tv, scratch / "overlay.log")
            python = python_for(ctx.tv, overlay, scratch / "overlay.log")
            row["overlay_s"] = round(time.perf_counter() - t0, 1)
            row["overlay_gib"] = round(_size(overlay) / 2**30, 2)
        for mode in ext_modes:
            build = scratch / f"build-{mode}"
            log = scratch / f"configure-{mode}.log"
            cm = configure(ctx, build, mode, python, log)
            cmp = compare(ctx, home, cm, build)
            cm.pop("units")
            row["configure"][mode] = {**cm, **cmp}
            print(
                f"{cell.id} [{mode}]: rc {cm['rc']}, {cm['wall_s']} s, agree {cmp.get('agree')}",
                file=sys.stderr,
                flush=True,
            )
            if keep is None:
                shutil.rmtree(build, ignore_errors=True)
        return row
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


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
