"""Partial builds (``--targets``): vLLM's setup.py cut to some CMake extension targets
(``PARTIAL_DRIVER``), the FetchContent sources such a cut needs, and its results, audit
and smoke test, which never show it as a wheel.

vLLM 0.20's CMake includes every external project unconditionally (cutlass,
vllm-flash-attn, FlashMLA, DeepGEMM, qutlass, triton_kernels), so configure needs a
source dir for each even when only ``_C_stable_libtorch`` is built. A dependency that
feeds none of the chosen targets (``knowledge/data/partial.toml``) gets a stand-in: an empty tree
holding, as empty files, exactly the paths the tree's ``cmake/external_projects/*.cmake``
names under ``${<name>_SOURCE_DIR}`` (CMake checks at generate time that a target's
sources exist, and FlashMLA's cmake reads one Python file), plus a CMakeLists.txt that
defines nothing. No chosen target compiles a stand-in's files; a result lists every
stand-in it used, so it is never mistaken for a build with the real sources.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vllm_matrix import workers
from vllm_matrix.infra import datafiles, proc, results, tomlfile
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.infra.results import FAIL, PASS, WARN, Finding, StageResult
from vllm_matrix.knowledge.probe_units import ProbeKnowledge
from vllm_matrix.sources import externals
from vllm_matrix.stages import audit
from vllm_matrix.stages.compile.errors import BuildError
from vllm_matrix.stages.compile.ninja import NinjaProgress, fmt_seconds
from vllm_matrix.stages.compile.plan import JobPlan

if TYPE_CHECKING:
    from vllm_matrix.stages.env import TorchEnv
    from vllm_matrix.stages.facts import SourceFacts
    from vllm_matrix.stages.toolkit import Toolkit

DATA = datafiles.data_path("partial.toml")
STANDIN_MARK = "vllm-matrix stand-in"
ALL = "*"


@dataclass(frozen=True)
class Feeds:
    """dependency name -> the CMake targets it feeds (``*``: all)."""

    feeds: Mapping[str, tuple[str, ...]]
    keep: tuple[str, ...] = ()  # targets every partial build keeps ([keep] targets)

    def needed(self, name: str, targets: Sequence[str]) -> bool:
        """Does a build of ``targets`` (empty: everything) need ``name``'s real sources?
        An unknown dependency is needed (no guess that it is safe to stand in)."""
        fed = self.feeds.get(name)
        if not targets or fed is None or ALL in fed:
            return True
        return any(t in fed for t in targets)


def load(path: Path = DATA) -> Feeds:
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, ("feeds", "keep"), "the file")
    table = doc.data.get("feeds", {})
    keep = doc.data.get("keep", {})
    if not isinstance(table, dict) or not isinstance(keep, dict):
        raise ConfigError(f"{path}: [feeds] and [keep] must be tables", fix="write [feeds]")
    tomlfile.check_keys(doc, keep, ("targets",), "[keep]")
    return Feeds(
        {k: tomlfile.str_list(doc, v, k, "[feeds]") for k, v in table.items()},
        tomlfile.str_list(doc, keep.get("targets", []), "targets", "[keep]"),
    )


def _cmake_var(name: str) -> str:
    # FetchContent lower-cases the declared name for <name>_SOURCE_DIR.
    return name.lower()


def referenced_paths(tree: Path, name: str) -> tuple[str, ...]:
    """Relative paths the tree's external-project cmake files name under
    ``${<name>_SOURCE_DIR}/`` (plain ones only: no further variables), sorted."""
    pat = re.compile(r"\$\{" + re.escape(_cmake_var(name)) + r"_SOURCE_DIR\}/([^\s\"')}]+)")
    found: set[str] = set()
    files = sorted((tree / "cmake" / "external_projects").glob("*.cmake"))
    files.append(tree / "CMakeLists.txt")
    for f in files:
        if not f.is_file():
            continue
        for m in pat.finditer(f.read_text(errors="replace")):
            rel = m.group(1)
            if any(c in rel for c in "$*\\") or ".." in rel.split("/"):
                continue
            found.add(rel)
    return tuple(sorted(found))


def make_standin(tree: Path, name: str, dest: Path) -> Path:
    """An empty source tree for ``name`` at ``dest`` (made afresh each time)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    rels = referenced_paths(tree, name)
    for rel in rels:
        p = dest / rel
        # A directory: named with a trailing slash, a prefix of another path, or no suffix.
        if rel.endswith("/") or any(o.startswith(rel + "/") for o in rels) or "." not in p.name:
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
    (dest / "CMakeLists.txt").write_text(
        f"# {STANDIN_MARK} for {name}: a partial build compiles none of its targets\n"
        f'message(STATUS "{STANDIN_MARK}: {name} (not built)")\n'
    )
    return dest


def standins_for(
    tree: Path,
    names_vars: Mapping[str, str | None],
    targets: Sequence[str],
    root: Path,
    feeds: Feeds | None = None,
) -> dict[str, tuple[Path, str]]:
    """Stand-ins for the dependencies a partial build of ``targets`` does not need:
    name -> (dir, the tree's *_SRC_DIR variable). Dependencies without a variable cannot
    be handed to CMake and are left to the normal lookup."""
    feeds = feeds or load()
    out: dict[str, tuple[Path, str]] = {}
    for name, var in names_vars.items():
        if not targets or var is None or feeds.needed(name, targets):
            continue
        out[name] = (make_standin(tree, name, root / name), var)
    return out


def externals_for(
    facts: SourceFacts,
    know: ProbeKnowledge,
    tree: Path,
    targets: Sequence[str],
    work: Path,
) -> tuple[dict[str, externals.ExternalDir], dict[str, tuple[Path, str]]]:
    """The FetchContent sources a build of ``targets`` (empty: all) is handed: the real
    ones it needs (``externals``: a variable the user set, the sources cache, else a
    fetch) and stand-ins for the rest. A dependency whose variable the user set is
    never stood in."""
    if not targets:
        return externals.resolve_all(facts, know, fetch=True), {}
    own = {
        e.name: e.env_var
        for e in facts.external
        if not (e.env_var and os.environ.get(e.env_var) and Path(os.environ[e.env_var]).is_dir())
    }
    stand = standins_for(tree, own, targets, work / "standins")
    dirs = {
        e.name: externals.external_dir(facts, e.name, know, fetch=False, need_tree=True)
        for e in facts.external
        if e.name not in stand
    }
    if any(d.status != "found" for d in dirs.values()):
        fetched = externals.resolve_all(facts, know, fetch=True)
        dirs = {k: fetched[k] for k in dirs}
    return dirs, stand


def probe_skipped(carried: bool = False) -> StageResult:
    why = (
        ("--built", "the build was compiled on another machine")
        if carried
        else ("--no-probe", "the build compiles the units the probe would")
    )
    return StageResult(
        "probe",
        WARN,
        0.0,
        f"not run ({why[0]}): {why[1]}",
        (Finding("probe", "info", f"probe not run ({why[0]})"),),
        {"not_run": True},
    )


def _build_objects(work: Path, targets: Sequence[str]) -> list[Path]:
    """The FP8 GEMM objects the partial build compiled for ``targets``."""
    found: list[Path] = []
    for d in sorted((work / "src" / "build").glob("temp.*")):
        for t in targets:
            found += [
                p
                for p in sorted((d / "CMakeFiles" / f"{t}.dir").rglob("*.o"))
                if audit.FP8_GEMM_OBJECT.search(p.name)
            ]
    return found


def audit_partial(
    exts: Sequence[Path],
    tk: Toolkit,
    archs: tuple[str, ...],
    targets: Sequence[str],
    work: Path,
) -> StageResult:
    """A partial build's audit: each extension's SASS/PTX per target arch (as the wheel
    audit), and the FP8 GEMM objects' SASS: arches and matrix instructions per arch
    (wgmma ``GMMA`` on sm_90a), with the ``sm90a`` finding."""
    label = f"partial: targets {', '.join(targets)}"
    tool = audit.cuobjdump_of(tk)
    findings: list[Finding] = []
    objects: list[dict[str, Any]] = []
    coverage: dict[str, dict[str, str]] = {}
    if tool is None:
        findings.append(
            Finding(
                "cuobjdump", "warn", "no cuobjdump: SASS/PTX not checked", "use a toolkit with it"
            )
        )
    for p in exts:
        so = audit.inspect_so(p, p.name, tool)
        objects.append(so.to_json())
        got, missing = audit.arch_coverage(
            p.name, archs if so.device_code else (), so.sass, so.ptx, "the arch list"
        )
        findings += missing
        coverage[p.name] = got
        findings += audit.sm90a_findings(p.name, archs, so.sass)
    gemm: list[dict[str, Any]] = []
    for o in _build_objects(work, targets) if tool is not None else []:
        assert tool is not None
        listing = proc.run([tool, "--list-elf", o], check=False).output
        sass = audit.parse_list_elf(listing)
        census = audit.sass_census(o, tool)
        rel = o.name
        gemm.append({"object": rel, "sass": list(sass), "mma": census})
        findings += audit.sm90a_findings(rel, archs, sass)
    findings += audit.wgmma_findings((g["object"], g["mma"]) for g in gemm)
    status = results.status_of(findings)
    parts = [
        f"{o['path']} {o['size_bytes'] / 2**20:.1f} MiB SASS {'+'.join(o['sass']) or '-'}"
        for o in objects
    ]
    wg = [g for g in gemm if any(op.endswith("GMMA") for ops in g["mma"].values() for op in ops)]
    summary = f"{label} (not a wheel): " + "; ".join(parts)
    if gemm:
        per_arch = sorted({a for g in gemm for a in g["sass"]}, key=Arch.parse)
        summary += (
            f"; FP8 GEMM objects: {len(gemm)} (SASS {'+'.join(per_arch)}; {len(wg)} with wgmma)"
        )
    details = {
        "partial": {"targets": list(targets)},
        "targets": list(archs),
        "cuobjdump": tool,
        "objects": objects,
        "coverage": coverage,
        "fp8_gemm_objects": gemm,
    }
    return StageResult("audit", status, 0.0, summary, tuple(findings), details)


def smoke_partial(
    exts: Sequence[Path], tv: TorchEnv, tk: Toolkit, targets: Sequence[str], logdir: Path
) -> StageResult:
    """Load each extension into the env's torch and list the FP8 ops it registers. Without
    an NVIDIA driver here they load against the toolkit's libcuda stub, as the wheel's
    smoke does (vLLM 0.20's extensions link libcuda.so.1: CUTLASS's direct driver calls)."""
    from vllm_matrix.stages import gpu

    label = f"partial: targets {', '.join(targets)}"
    env: dict[str, str] = {}
    notes: list[Finding] = []
    if not audit.real_driver():
        env, stub = audit.stub_driver_env(tk, logdir / "driver-stub")
        notes.append(
            Finding(
                "smoke-no-driver",
                "info",
                "no GPU driver on this machine: the extensions were loaded against "
                + ("the toolkit's libcuda stub" if stub is not None else "no libcuda at all")
                + "; no kernel ran",
            )
        )
    res = gpu.run_worker(
        exts, tv.python_exe, logdir / "smoke.json", logdir / "smoke.log", load_only=True, env=env
    )
    bad = {k: v for k, v in res.get("libs", {}).items() if v != "loaded"}
    if res.get("error") or bad:
        why = res.get("error") or "; ".join(f"{Path(k).name}: {v}" for k, v in bad.items())
        return StageResult(
            "smoke",
            FAIL,
            0.0,
            f"{label}: an extension does not load",
            (Finding("smoke", "fail", f"{label}: {str(why)[-400:]}", "read the smoke log"), *notes),
            res,
        )
    ops = [k for k, v in res.get("ops", {}).items() if v]
    return StageResult(
        "smoke",
        PASS,
        0.0,
        f"{label}: {len(exts)} extensions load; FP8 ops registered: {', '.join(ops) or 'none'}",
        tuple(notes),
        res,
    )


# ------------------------------------------------------------------ the setup.py driver

# The driver runs in the env's python inside the work copy: vLLM's own setup.py with
# ext_modules cut to the asked targets (vllm_matrix.workers' partial_driver.py, run by path).
PARTIAL_DRIVER = workers.PARTIAL_DRIVER
PARTIAL_DIR = "partial"  # under the work dir: OUT of the driver
_TARGET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def parse_targets(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"_C,_C_stable_libtorch"`` -> ("_C", "_C_stable_libtorch"); empty: all (a wheel)."""
    items = text.split(",") if isinstance(text, str) else list(text or ())
    out: list[str] = []
    for raw in items:
        t = raw.strip()
        if not t:
            continue
        if not _TARGET_NAME.match(t):
            raise BuildError(
                f"not a CMake target name: {t!r}",
                fix="name extension targets as vLLM's CMake does, e.g. --targets _C,_moe_C",
            )
        if t not in out:
            out.append(t)
    return tuple(out)


def partial_label(targets: Sequence[str]) -> str:
    """What every result of a partial build says, so it is never taken for a wheel."""
    return "partial: targets " + ", ".join(targets)


def partial_argv(
    tv_full: TorchEnv, targets: Sequence[str], out: Path, keep: Sequence[str] = ()
) -> list[str | os.PathLike[str]]:
    """``keep``: targets kept when the tree has them (``knowledge/data/partial.toml`` [keep])."""
    return [tv_full.python_exe, PARTIAL_DRIVER, ",".join(targets), out, ",".join(keep)]


def partial_extensions(out: Path) -> list[Path]:
    """The extension files a partial build installed under ``out``."""
    return sorted(p for p in out.rglob("*.so") if p.is_file())


def _partial_result(
    targets: Sequence[str],
    out: Path,
    details: dict[str, Any],
    findings: list[Finding],
    steps: Mapping[str, Any],
    tracker: NinjaProgress,
    plan: JobPlan,
    t0: float,
    log: Path,
) -> StageResult:
    """A partial build's result: the extensions it installed, never a wheel."""
    exts = partial_extensions(out)
    if not exts:
        raise BuildError(
            f"{partial_label(targets)}: the build succeeded but installed no extension under {out}",
            fix=f"read {log}: the targets may produce no .so (Python-only components)",
        )
    size = sum(p.stat().st_size for p in exts)
    details["partial"] = {
        "targets": list(targets),
        "out": str(out),
        "extensions": [str(p) for p in exts],
        "size_bytes": size,
    }
    how = "resumed; " if steps.get("resumed") else ""
    summary = (
        f"{partial_label(targets)} (not a wheel): {len(exts)} extensions "
        f"({', '.join(p.name for p in exts)}, {size / 2**20:.1f} MiB) in "
        f"{fmt_seconds(time.monotonic() - t0)}; {how}{tracker.steps_run} ninja steps, "
        f"MAX_JOBS={plan.max_jobs_env}"
    )
    status = WARN if any(f.level == "warn" for f in findings) else PASS
    return StageResult("build", status, 0.0, summary, tuple(findings), details, str(log))


__all__ = [
    "PARTIAL_DIR",
    "PARTIAL_DRIVER",
    "Feeds",
    "audit_partial",
    "externals_for",
    "load",
    "make_standin",
    "parse_targets",
    "partial_argv",
    "partial_extensions",
    "partial_label",
    "probe_skipped",
    "referenced_paths",
    "smoke_partial",
    "standins_for",
]
