"""The build stage itself: ``build_wheel`` (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vllm_matrix.infra import proc
from vllm_matrix.infra import progress as progress_mod
from vllm_matrix.infra.cache import cache_root, locked
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.host import cpu_count, mem_available_gib
from vllm_matrix.infra.results import FAIL, PASS, WARN, Finding, StageResult
from vllm_matrix.knowledge import classify
from vllm_matrix.sources.sdist import SourceTree
from vllm_matrix.stages import patches as patches_mod
from vllm_matrix.stages.compile import partial, schedule
from vllm_matrix.stages.compile.ccache import (
    CCACHE_MAXSIZE,
    _ccache_delta,
    ccache_env,
    ccache_remote_checked,
    ccache_stats,
    redact,
)
from vllm_matrix.stages.compile.errors import BuildError
from vllm_matrix.stages.compile.ninja import (
    PROGRESS_INTERVAL,
    ConfigureClock,
    NinjaProgress,
    OverallProgress,
    _build_dirs,
    _ninja_logged,
    edge_log,
    fmt_seconds,
    ninja_work_edges,
    target_figures,
)
from vllm_matrix.stages.compile.partial import (
    PARTIAL_DIR,
    _partial_result,
    partial_argv,
    partial_label,
)
from vllm_matrix.stages.compile.plan import plan_jobs
from vllm_matrix.stages.compile.wheel import _clear_partials, local_label, relabel_wheel
from vllm_matrix.stages.compile.workcopy import prepare_work_copy
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.env.fixups import Fixups
from vllm_matrix.stages.toolkit import Toolkit


def _classified(log: Path) -> list[Finding]:
    try:
        return [classify.classify_file(log).to_finding(str(log))]
    except (MatrixError, OSError, ValueError) as exc:
        return [Finding("classify", "info", f"could not classify the log: {exc}")]


def _rotate(log: Path) -> None:
    if log.exists():
        os.replace(log, log.with_name(log.stem + ".prev" + log.suffix))


def pip_wheel_argv(tv_full: TorchEnv, src: Path, wheelhouse: Path) -> list[str | os.PathLike[str]]:
    """The command the build wraps: vLLM's documented build with an existing torch.

    ``--no-build-isolation`` keeps the env's torch (the whole point); ``--no-deps`` and
    ``--no-index`` keep pip from resolving or downloading anything: the env already holds
    the build requirements (env variant "full").
    """
    return [
        tv_full.python_exe,
        "-m",
        "pip",
        "wheel",
        "-v",
        "--no-build-isolation",
        "--no-deps",
        "--no-index",
        src,
        "-w",
        wheelhouse,
    ]


def _default_series() -> tuple[patches_mod.Patch, ...]:
    path = patches_mod.default_series()
    return patches_mod.load_series(path) if path.is_file() else ()


def build_wheel(
    cell: Cell,
    tree: SourceTree,
    tk: Toolkit,
    tv_full: TorchEnv,
    fx: Fixups,
    work: Path,
    dist: Path,
    *,
    jobs: int | None = None,
    nvcc_threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    series: Sequence[patches_mod.Patch] | None = None,
    log: Path | None = None,
    clean: bool = False,
    ccache: bool = True,
    ccache_dir: Path | None = None,
    ccache_remote: str | None = None,
    meminfo: Path = Path("/proc/meminfo"),
    interval: float = PROGRESS_INTERVAL,
    timeout: float | None = None,
    extra_env: Mapping[str, str] | None = None,
    targets: Sequence[str] = (),
) -> StageResult:
    """Build the cell's wheel into ``dist`` (see the module docstring).

    ``targets`` (CMake extension targets, e.g. ``("_C", "_C_stable_libtorch")``) makes it a
    partial build: vLLM's setup.py builds only those extensions (``PARTIAL_DRIVER``) into
    ``<work>/partial/vllm/``; no wheel is made and the result says "partial: targets ...".

    ``jobs`` / ``nvcc_threads`` override the sizing (default: the cell's options, else
    computed); ``series`` the patch series (default: the project's patches/series.toml);
    ``clean`` remakes the work copy (a from-scratch build); ``ccache=False`` keeps
    ccache out (CCACHE_DISABLE) for a cold measurement; ``extra_env`` adds variables (the
    FetchContent dependencies' ``*_SRC_DIR``, from ``externals.build_env``). Ctrl-C stops
    the build, removes temporary files and re-raises; kill -9 leaves only the work dir,
    which the next run resumes.
    """
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    work = work.resolve()
    dist = dist.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = (log or work / "build.log").resolve()
    src = work / "src"
    findings: list[Finding] = []
    details: dict[str, Any] = {"work": str(work), "log": str(log)}
    # "current": the user's own env (--env current), which holds what it holds; a missing
    # build requirement shows as setup.py's import error in the log.
    if tv_full.variant not in ("full", "current"):
        raise BuildError(
            f"the build needs the cell's full torch env, got the {tv_full.variant!r} variant "
            f"at {tv_full.root}",
            fix='pass env.provide(python, torch, "full"): vLLM\'s setup.py imports torch',
        )
    if fx.problems:
        raise BuildError(
            "the fixups report problems: " + "; ".join(p.message for p in fx.problems),
            fix="; ".join(p.fix for p in fx.problems),
        )
    with locked(src):
        # A killed run's compilers (ninja starts each in a process group of its own) may
        # still be writing objects into the build dir: end them before ninja starts.
        stale = proc.working_in(src) if src.exists() else []
        for pid in stale:
            proc.kill_tree(pid)
        if stale:
            details["ended_orphans"] = stale
            if progress is not None:
                progress(f"build: ended {len(stale)} processes a killed run left in {src}")
        _rotate(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        left = _clear_partials(dist) if dist.is_dir() else []
        if left:
            details["removed_partials"] = left
        chosen = patches_mod.select(
            series if series is not None else _default_series(), tree.version
        )
        wc = prepare_work_copy(tree, src, chosen, log, clean=clean)
        details["work_copy"] = {
            "root": str(wc.root),
            "reused": wc.reused,
            "remade_because": wc.remade_because,
            "patches": list(wc.applied),
            "pins_removed": [c.to_json() for c in wc.pins],
        }
        logged_before = _ninja_logged(src)
        resumed = wc.reused and logged_before > 0

        text = meminfo.read_text() if meminfo.is_file() else ""
        plan = plan_jobs(
            cpu_count(),
            mem_available_gib(text),
            len(cell.arch),
            jobs=jobs if jobs is not None else cell.options.max_jobs,
            nvcc_threads=nvcc_threads if nvcc_threads is not None else cell.options.nvcc_threads,
        )
        details["jobs"] = plan.to_json()
        if plan.low_memory:
            findings.append(
                Finding(
                    "jobs",
                    "warn",
                    f"MemAvailable {plan.mem_available_gib:.1f} GiB is less than one nvcc "
                    f"job needs (~{plan.per_job_gib:g} GiB): the build may be OOM-killed",
                    "free memory or build on a larger machine",
                )
            )

        env = fx.env()
        env.update(plan.env())
        env.update(extra_env or {})
        # The status format progress parsing relies on (a user's NINJA_STATUS may differ).
        env["NINJA_STATUS"] = "[%f/%t] "
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PIP_NO_INPUT"] = "1"
        ccache_exe = shutil.which("ccache", path=env.get("PATH"))
        cc_info: dict[str, Any] = {"exe": ccache_exe}
        if ccache_exe is None:
            cc_info["note"] = "ccache is not on the build PATH: vLLM's setup.py builds without"
        else:
            cdir = ccache_dir or cache_root() / "ccache"
            cdir.mkdir(parents=True, exist_ok=True)
            remote = ccache_remote_checked(ccache_remote if ccache else None, progress, findings)
            env.update(
                ccache_env(src, cdir, remote.url, shared_root=cache_root())
                | {"CCACHE_MAXSIZE": env.get("CCACHE_MAXSIZE", CCACHE_MAXSIZE)}
            )
            if not ccache:
                env["CCACHE_DISABLE"] = "1"
            cc_info |= {"dir": str(cdir), "enabled": ccache}
            if remote.asked:
                cc_info["remote"] = redact(remote.url or "") or None
                cc_info["remote_asked"] = redact(remote.asked)
        stats_before = ccache_stats(ccache_exe, env) if ccache_exe and ccache else {}
        details["env"] = (
            fx.vars()
            | plan.env()
            | dict(extra_env or {})
            | {
                k: env[k]
                for k in ("CCACHE_DIR", "CCACHE_BASEDIR", "CCACHE_NOHASHDIR", "CCACHE_DISABLE")
                if k in env
            }
            | (
                {
                    "CCACHE_REMOTE_STORAGE": redact(env["CCACHE_REMOTE_STORAGE"]),
                    "CCACHE_COMPILERCHECK": env.get("CCACHE_COMPILERCHECK", ""),
                }
                if "CCACHE_REMOTE_STORAGE" in env
                else {}
            )
        )

        wheelhouse = work / "wheelhouse"
        shutil.rmtree(wheelhouse, ignore_errors=True)
        wheelhouse.mkdir()
        overall = OverallProgress(src, targets)
        tracker = NinjaProgress(
            emit=progress,
            interval=interval,
            overall=overall,
            jobs=plan.jobs,
            label=f"targets {', '.join(targets)}" if targets else None,
            left=overall.left,
            timed_eta=overall.eta,
        )
        partial_out = work / PARTIAL_DIR
        if targets:
            shutil.rmtree(partial_out, ignore_errors=True)
            argv = partial_argv(tv_full, targets, partial_out, partial.load().keep)
            details["partial"] = {"targets": list(targets), "out": str(partial_out)}
            # Longest edges first (schedule.py, run by the driver after configure).
            times = work / "edge-times.json"
            times.write_text(json.dumps(schedule.recorded_times(tree.version)))
            env.update(
                {
                    "VLLM_MATRIX_SCHEDULE": str(Path(schedule.__file__).resolve()),
                    "VLLM_MATRIX_EDGE_TIMES": str(times),
                    "VLLM_MATRIX_JOBS": str(plan.jobs),
                    "VLLM_MATRIX_THREADS_MAX": str(max(plan.nvcc_threads, schedule.MAX_THREADS)),
                }
            )
        else:
            argv = pip_wheel_argv(tv_full, src, wheelhouse)
        with log.open("a", encoding="utf-8") as fh:
            fh.write(
                f"# vllm-matrix build of {cell.id}: work copy "
                f"{'reused' if wc.reused else 'made'} ({wc.remade_because or 'ok'})\n"
                f"# jobs: {plan.reason}\n# ccache: {cc_info}\n"
            )
        if progress is not None:
            progress(
                f"build: {'resuming' if resumed else 'starting'} in {src} "
                f"(MAX_JOBS={plan.max_jobs_env}, NVCC_THREADS={plan.nvcc_threads}; log {log})"
            )
        setup = ConfigureClock()

        def on_line(line: str) -> None:
            setup.feed(line)
            tracker.on_line(line)

        try:
            with progress_mod.every(tracker.quiet, max(1.0, interval)):
                done = proc.run(
                    argv,
                    log=log,
                    env=env,
                    cwd=src,
                    check=False,
                    capture=False,
                    on_line=on_line,
                    timeout=timeout,
                )
        except BaseException:  # Ctrl-C: ninja got SIGINT too; leave no wheel behind
            shutil.rmtree(wheelhouse, ignore_errors=True)
            raise
        finally:
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            details["resources"] = {
                "wall_s": round(time.monotonic() - t0, 1),
                "cpu_user_s": round(ru1.ru_utime - ru0.ru_utime, 1),
                "cpu_sys_s": round(ru1.ru_stime - ru0.ru_stime, 1),
                # The largest single descendant over this process's life (getrusage).
                "peak_child_rss_mib": round(ru1.ru_maxrss / 1024),
                "loadavg": list(os.getloadavg()),
            }
            details["configure"] = setup.to_json()
        dirs = _build_dirs(src)
        total_edges = sum(ninja_work_edges(d / "build.ninja", targets) for d in dirs)
        details["targets"] = {k: v for d in dirs for k, v in target_figures(d).items()}
        # each edge's times: the cost model's calibration data (stages/compile/cost.py)
        logs = [edge_log(d) for d in dirs]
        details["edge_log"] = [e for log_ in logs for e in log_]
        first = next((log_ for log_ in logs if log_), [])  # the build ninja printed first
        if first:
            details["configure"] = setup.to_json(min(e["end_s"] for e in first))
        if targets:
            details["schedule"] = schedule.outcome(dirs)
        whole = OverallProgress(src, targets)()  # ninja has exited: .ninja_log is complete
        if progress is not None and whole is not None:
            progress(
                f"build: {'setup.py build_ext' if targets else 'pip wheel'} exited "
                f"{done.returncode} after "
                f"{fmt_seconds(time.monotonic() - t0)}; all targets {whole[0]}/{whole[1]} "
                f"({100 * whole[0] // max(1, whole[1])}%)"
            )
        steps = {
            "runs": [r.to_json() for r in tracker.runs],
            "no_work_runs": tracker.no_work,
            "steps_run": tracker.steps_run,
            "work_edges": total_edges,
            "resumed": resumed,
            "logged_before": logged_before,
        }
        if resumed and total_edges:
            steps["steps_skipped"] = max(0, total_edges - tracker.steps_run)
        details["steps"] = steps
        if ccache_exe and ccache:
            cc_info["delta"] = _ccache_delta(stats_before, ccache_stats(ccache_exe, env))
        details["ccache"] = cc_info

        if done.returncode != 0:
            shutil.rmtree(wheelhouse, ignore_errors=True)
            what = f"{partial_label(targets)}: setup.py build_ext" if targets else "pip wheel"
            found = _classified(log) or [
                Finding(
                    "build",
                    "fail",
                    f"{what} exited with {done.returncode}",
                    "read the log's tail",
                    (str(log),),
                )
            ]
            details["tail"] = _tail(log)
            return StageResult(
                "build",
                FAIL,
                0.0,
                f"{partial_label(targets) + ': ' if targets else ''}"
                f"build failed after {fmt_seconds(time.monotonic() - t0)} "
                f"(exit {done.returncode}); log {log}",
                tuple(findings + found),
                details,
                str(log),
            )
        if targets:
            shutil.rmtree(wheelhouse, ignore_errors=True)
            return _partial_result(
                targets, partial_out, details, findings, steps, tracker, plan, t0, log
            )
        built = sorted(wheelhouse.glob("*.whl"))
        if len(built) != 1:
            raise BuildError(
                f"pip wheel succeeded but left {len(built)} wheels in {wheelhouse}",
                fix=f"read {log}",
            )
        label = local_label(tk.version, tv_full.torch_version)
        final = relabel_wheel(built[0], label, dist)
        shutil.rmtree(wheelhouse, ignore_errors=True)
    size = final.stat().st_size
    details |= {
        "wheel": str(final),
        "built_as": built[0].name,
        "size_bytes": size,
        "label": label,
        "sha256": hashlib.sha256(final.read_bytes()).hexdigest(),
    }
    how = f"resumed, {steps.get('steps_skipped', '?')} steps skipped; " if resumed else ""
    summary = (
        f"{final.name} ({size / 2**20:.1f} MiB) in {fmt_seconds(time.monotonic() - t0)}; "
        f"{how}{tracker.steps_run} ninja steps, MAX_JOBS={plan.max_jobs_env}"
    )
    status = WARN if any(f.level == "warn" for f in findings) else PASS
    return StageResult("build", status, 0.0, summary, tuple(findings), details, str(log))


def _tail(log: Path, lines: int = 60) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
