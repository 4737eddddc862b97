"""The one subprocess wrapper: argument lists only, logged, teed, typed errors."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.infra import programs
from vllm_matrix.infra.errors import CommandError, ProgramMissing

TAIL_LINES = 40

# Children die with the tool: each one asks the kernel for SIGKILL when the process that
# started it ends (prctl PR_SET_PDEATHSIG), so a kill -9 of vllm-matrix does not leave
# apt-get, dpkg-deb, uv or nvcc running on (and writing into a staging dir the next run
# removes). Ctrl-C reaches them anyway: they share the terminal's process group.
PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = (
        ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
    )
except OSError:  # no libc to ask: children are then only killed on a timeout or Ctrl-C
    _LIBC = None


def _die_with(parent: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child, between fork and exec
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the tool died before the request was made
            os._exit(137)

    return setup


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    output: str
    seconds: float
    # user + system CPU of the command and the descendants it waited for (nvcc's cicc,
    # ptxas, ...), from wait4: this command's own, whatever else the process runs beside it
    cpu_seconds: float = 0.0


def _ppid_pgrp(pid: int) -> tuple[int, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
    return int(fields[1]), int(fields[2])


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc), also those in process groups of
    their own (ninja starts each compile in one)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            pp = _ppid_pgrp(int(d.name))
            if pp is not None:
                children.setdefault(pp[0], []).append(int(d.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal ``pid`` and everything below it, children first seen, so none escapes."""
    for p in [*descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def working_in(path: Path) -> list[int]:
    """Live processes (not this one) whose working directory is inside ``path``: what a
    killed run left running there (orphaned compilers keep writing into its build dir)."""
    root = os.path.realpath(path)
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            found.append(int(d.name))
    return found


def _reap(proc: subprocess.Popen[str]) -> tuple[int, float]:
    """Wait for ``proc`` with wait4: its return code (as Popen gives it: -N for signal N)
    and the CPU seconds it and its waited-for descendants used."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    capture: bool = True,
    stderr: str = "merge",
) -> Completed:
    """Run ``argv`` (never a shell string), stdout+stderr merged (``stderr="drop"``: stdout
    only, for reading a version or a config value).

    A bare program name of the registry (knowledge/data/programs.toml) is resolved through
    programs.require: a missing one is a ProgramMissing naming what provides it, before
    anything runs. Other names (the steps ``nvcc --dryrun`` prints) run as they are.

    The command line is written to ``log`` first, then every output line as it
    arrives, so a killed run still leaves a readable log. ``on_line`` sees each
    line (progress bars). On failure with ``check`` a CommandError carries the
    last lines of output. ``timeout`` kills the command and everything it started
    when it runs longer, printing or not (the return code is then -9).
    """
    args = tuple(os.fspath(a) for a in argv)
    full_env = dict(os.environ)
    if env is not None:
        full_env.update(env)
    shown = args  # the log shows the command as written; the resolved path is what runs
    if os.sep not in args[0] and programs.listed(args[0]):
        args = (programs.require(args[0], path=(env or {}).get("PATH")), *args[1:])
    start = time.monotonic()
    kept: list[str] = []
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    logf = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        logf = log.open("a", encoding="utf-8")
        logf.write(f"$ {shlex.join(shown)}\n")
        if cwd is not None:
            logf.write(f"# cwd: {cwd}\n")
        logf.flush()
    try:
        with subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if stderr == "drop" else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            text=True,
            errors="replace",
            bufsize=1,
            preexec_fn=_die_with(os.getpid()),
        ) as proc:
            assert proc.stdout is not None
            timer = None
            if timeout is not None:
                timer = threading.Timer(timeout, kill_tree, (proc.pid,))
                timer.daemon = True
                timer.start()
            try:
                for line in proc.stdout:
                    tail.append(line)
                    if capture:
                        kept.append(line)
                    if logf is not None:
                        logf.write(line)
                    if on_line is not None:
                        on_line(line)
                rc, cpu = _reap(proc)
            finally:
                if timer is not None:
                    timer.cancel()
    except FileNotFoundError as exc:
        name = Path(args[0]).name
        raise ProgramMissing(
            f"{args[0]} not found",
            fix=programs.lookup(name).fix() if name in programs.registry() else "check the path",
        ) from exc
    finally:
        if logf is not None:
            logf.close()
    seconds = time.monotonic() - start
    if logf is not None and log is not None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"# exit {rc} after {seconds:.1f}s\n")
    done = Completed(args, rc, "".join(kept), seconds, cpu)
    if check and rc != 0:
        where = f" (log: {log})" if log else ""
        raise CommandError(
            f"{Path(args[0]).name} exited with {rc}{where}",
            rc,
            "".join(tail),
        )
    return done


def output_of(
    argv: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """A short query's stdout (a version, a config value), or None when the program is
    missing, fails or hangs: for facts that are optional where they are read."""
    try:
        done = run(argv, check=False, timeout=timeout, env=env, stderr="drop")
    except (ProgramMissing, OSError):
        return None
    return done.output if done.returncode == 0 else None
