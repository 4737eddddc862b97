"""The build stage's setup.py driver for a partial build (``--targets``): vLLM's own
setup.py (its CMake arguments, its jobs, its install step), with ext_modules cut to the
asked CMake targets, run as ``setup.py build_ext --build-lib OUT``: the extensions land in
OUT/vllm/, no wheel is made. setup.py names a target by its extension's name less "vllm."
and "vllm_flash_attn." (0.4 ... 0.20: ``target_name``).

    python3 partial_driver.py TARGET,... OUT KEEP,...      (cwd: the work copy of the tree)

With ``VLLM_MATRIX_SCHEDULE`` (the path of stages/compile/schedule.py, loaded by path:
this Python may not have vllm_matrix) build.ninja is reordered, longest edges first,
between CMake's configure and ``cmake --build``.

Run by: the cell's full torch env's python (``stages/compile/partial.py``,
``partial_argv``), inside the work copy.
May import: the standard library, setuptools (vLLM's setup.py needs it in that env).
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

import setuptools

wanted = [t for t in sys.argv[1].split(",") if t]
out = sys.argv[2]
keep = [t for t in sys.argv[3].split(",") if t]
real = setuptools.setup


def name(ext: Any) -> str:
    return str(ext.name).removeprefix("vllm.").removeprefix("vllm_flash_attn.")


def setup(**kw: Any) -> Any:
    exts = list(kw.get("ext_modules") or [])
    have = [name(e) for e in exts]
    missing = [t for t in wanted if t not in have]
    if missing:
        print(
            "vllm-matrix: no such extension target: "
            + ", ".join(missing)
            + "; this tree builds: "
            + ", ".join(have),
            flush=True,
        )
        sys.exit(3)
    kept = [t for t in keep if t in have and t not in wanted]
    kw["ext_modules"] = [e for e in exts if name(e) in wanted or name(e) in kept]
    print(
        "vllm-matrix: partial build of "
        + ", ".join(wanted)
        + " (of "
        + ", ".join(have)
        + ")"
        + (", keeping " + ", ".join(kept) if kept else ""),
        flush=True,
    )
    return real(**kw)


setuptools.setup = setup
sched = os.environ.get("VLLM_MATRIX_SCHEDULE")
if sched:
    import importlib.util
    import json
    import subprocess
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("vllm_matrix_schedule", sched)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    real_check_call = subprocess.check_call

    def check_call(args: Any, *a: Any, **kw: Any) -> int:
        if (
            isinstance(args, (list, tuple))
            and args
            and str(args[0]).endswith("cmake")
            and "--build" in args
        ):
            try:
                times = os.environ.get("VLLM_MATRIX_EDGE_TIMES")
                rec = json.loads(Path(times).read_text()) if times else {}
                info = mod.plan_for(
                    Path(kw.get("cwd") or os.getcwd()),
                    rec,
                    int(os.environ.get("VLLM_MATRIX_JOBS", "1")),
                    int(os.environ.get("VLLM_MATRIX_THREADS_MAX", "1")),
                    targets=wanted + keep,
                )
                p = info.get("predicted", {})
                line = (
                    "vllm-matrix: schedule: %d compile edges, longest first (%d recorded "
                    "times); predicted makespan %ss before, %ss after, packed limit %ss"
                )
                args_ = (
                    info.get("compile_edges", 0),
                    info.get("recorded", 0),
                    p.get("makespan_before_s"),
                    p.get("makespan_after_s"),
                    p.get("packed_limit_s"),
                )
                print(line % args_, flush=True)
            except Exception as exc:
                print(f"vllm-matrix: schedule not applied: {exc!r}", flush=True)
        return real_check_call(args, *a, **kw)

    subprocess.check_call = check_call
sys.argv = ["setup.py", "build_ext", "--build-lib", out]
sys.path.insert(0, os.getcwd())
runpy.run_path("setup.py", run_name="__main__")
