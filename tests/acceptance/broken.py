"""Acceptance of issue 22 item 3 (`nox -s bench-faults`): broken setups, hostile inputs and
faults end as designed -- never a traceback, never a FAIL of vLLM for the tool's failure.

Each case runs the real CLI (`python -m vllm_matrix`, or nox with a copy of the noxfile) in
a workspace of its own, one process at a time, at preflight or toolkit depth, on a cache of
its own: a hard-linked copy of parts of the warm cache ($VLLM_MATRIX_CACHE, read-only
seed: the sdists, the Debian .debs and apt lists, the assembled toolkit, the torch env).
Nothing of the seed is written: a file a case damages is replaced (unlinked, written anew),
never written in place, and the tool only ever renames new files into the copy.

Cases, by the issue's bullets: bad result files x report / nox -s report / run /
nox -s matrix; damage inside a cached toolkit or torch env (rebuilt, named by doctor
--verify); an ERROR over deeper evidence; kill -9 and Ctrl-C during toolkit assembly, env
creation and a download; nonexistent versions; fixes that point at the culprit; --merge's
checks; exit codes; plus the four broken setups this bench began with (no uv, read-only
cache, index down, disk full).

Needs root for the mounts (tmpfs); prints a table case / expected / observed / held and
exits 0 only when every case held. `-- --write` saves the JSON to
reports/bench/broken.json; `-- -k WORD` runs the cases whose name holds WORD.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra import portable

REPO = Path(__file__).resolve().parents[2]
CELL = "vllm0.8.5-torch2.6.0-cu12.4-py3.12-sm90"
OTHER = "vllm0.10.1-torch2.6.0-cu12.4-py3.12-sm90"
WARM = Path(os.environ.get("VLLM_MATRIX_CACHE", Path.home() / ".cache" / "vllm-matrix"))
TK = "toolkits/v3/debian-12.4"
ENV = "envs/py3.12-torch2.6.0-headers"
EXT_H = f"{ENV}/lib/python3.12/site-packages/torch/include/torch/extension.h"
# what preflight reads: the two releases' sdists (pinned), unpacked trees and facts
SOURCE = (
    "blobs",
    *(
        f"{d}/vllm-{v}{tail}"
        for v in ("0.8.5", "0.10.1")
        for d, tail in (("pins", ".json"), ("src", "-*"), ("facts", "-*"))
    ),
)
TOOLKIT = (*SOURCE, "downloads/debian", "apt", TK)
ALL = (*TOOLKIT, ENV)
MATRIX = """\
[defaults]
provider = "debian"
python = "3.12"

[[cell]]
vllm = "0.8.5"
torch = "2.6.0"
cuda = "12.4"
arch = ["9.0"]

[[cell]]
vllm = "0.10.1"
torch = "2.6.0"
cuda = "12.4"
arch = ["9.0"]
"""
TMP = Path(tempfile.mkdtemp(prefix="vllm-matrix-faults."))
BASE = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_HOME")}
PY = sys.executable


@dataclass
class Done:
    rc: int
    out: str
    seconds: float

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.out


@dataclass
class Case:
    name: str
    bullet: str
    expected: str
    run: Callable[[Path], tuple[str, bool]]  # workspace dir -> (observed, held)


CASES: list[Case] = []


def case(
    name: str, bullet: str, expected: str
) -> Callable[[Callable[[Path], tuple[str, bool]]], None]:
    def add(run: Callable[[Path], tuple[str, bool]]) -> None:
        CASES.append(Case(name, bullet, expected, run))

    return add


# --------------------------------------------------------------------------- helpers


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


@contextlib.contextmanager
def tmpfs(where: Path, size: str, ro: bool = False) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def seed(cache: Path, parts: tuple[str, ...] = ALL) -> Path:
    """A cache holding ``parts`` of the warm one, hard-linked (no copy of GBs)."""
    cache.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for src in sorted(WARM.glob(part)) if "*" in part else [WARM / part]:
            dst = cache / src.relative_to(WARM)
            if src.exists() and not dst.exists() and not src.name.endswith(".lock"):
                dst.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    return cache


def workspace(ws: Path, results_from: Path | None = None) -> Path:
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "matrix.toml").write_text(MATRIX)
    if not (ws / "patches").exists():
        (ws / "patches").symlink_to(REPO / "patches")
    shutil.copy(REPO / "noxfile.py", ws / "noxfile.py")
    if results_from is not None:
        shutil.copytree(results_from, ws / "results", dirs_exist_ok=True)
    return ws


def cli(
    ws: Path,
    *args: str,
    cache: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> Done:
    full_env = BASE | {"VLLM_MATRIX_CACHE": str(cache or ws / "cache")} | (env or {})
    started = time.monotonic()
    done = subprocess.run(
        [PY, "-m", "vllm_matrix", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ws,
        check=False,
        timeout=timeout,
    )
    return Done(done.returncode, done.stdout + done.stderr, round(time.monotonic() - started, 1))


def nox(ws: Path, *args: str, cache: Path | None = None) -> Done:
    full_env = BASE | {"VLLM_MATRIX_CACHE": str(cache or ws / "cache")}
    started = time.monotonic()
    done = subprocess.run(
        [PY, "-m", "nox", "-f", str(ws / "noxfile.py"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ws,
        check=False,
        timeout=1800,
    )
    return Done(done.returncode, done.stdout + done.stderr, round(time.monotonic() - started, 1))


def result(ws: Path, cell: str = CELL) -> dict[str, Any]:
    path = ws / "results" / f"{cell}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def verdict(ws: Path, cell: str = CELL) -> tuple[str, str]:
    judged = result(ws, cell).get("verdict") or {}
    assert isinstance(judged, dict)
    return str(judged.get("verdict")), str(judged.get("depth"))


def line_with(text: str, *words: str) -> str:
    for line in text.splitlines():
        if all(word in line for word in words):
            return line.strip()[:160]
    return ""


def replace_file(path: Path, data: bytes, keep_mtime: bool = True) -> None:
    """Write ``p`` anew (a new inode: the seed's hard-linked file is untouched)."""
    before = path.stat()
    path.unlink()
    path.write_bytes(data)
    os.chmod(path, before.st_mode)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def flip(path: Path) -> None:
    """A byte flipped in the middle of ``p``: same size, same mtime (only content tells)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    replace_file(path, bytes(data))


def children_of(pid: int) -> list[tuple[int, str]]:
    """Live descendants of ``pid``: (pid, command line)."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if stat[0] != "Z":
                    kids.setdefault(int(stat[1]), []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        for child in kids.get(stack.pop(), []):
            with contextlib.suppress(OSError):
                cmd = (Path("/proc") / str(child) / "cmdline").read_text().replace("\0", " ")
                out.append((child, cmd.strip()))
            stack.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_during(
    ws: Path,
    cache: Path,
    args: tuple[str, ...],
    wait_for: Callable[[list[tuple[int, str]]], bool],
    sig: int = signal.SIGKILL,
    deadline: float = 600,
) -> tuple[Done, list[str], list[str]]:
    """Start the CLI, wait until ``wait_for(its children)``, send ``sig`` (SIGKILL to the
    tool; SIGINT to its process group, as a terminal's Ctrl-C); then the children that were
    running and those still alive 5 s later."""
    full_env = BASE | {"VLLM_MATRIX_CACHE": str(cache)}
    started = time.monotonic()
    tool = subprocess.Popen(
        [PY, "-m", "vllm_matrix", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
        cwd=ws,
        start_new_session=True,
    )
    seen: list[tuple[int, str]] = []
    try:
        while time.monotonic() - started < deadline and tool.poll() is None:
            seen = children_of(tool.pid)
            if wait_for(seen):
                break
            time.sleep(0.2)
        if sig == signal.SIGKILL:
            os.kill(tool.pid, signal.SIGKILL)
        else:
            os.killpg(tool.pid, sig)
        out, _ = tool.communicate(timeout=120)
    finally:
        if tool.poll() is None:
            tool.kill()
    time.sleep(5)
    left = [f"{pid} {cmd[:80]}" for pid, cmd in seen if alive(pid)]
    for pid, _ in seen:  # never leave them for the next case, whatever the verdict
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return (
        Done(tool.returncode, out, round(time.monotonic() - started, 1)),
        [command for _, command in seen],
        left,
    )


# --------------------------------------------------------------------------- the base run


def base_results() -> Path:
    """results/ of both cells at preflight (what the bad-file cases damage one of)."""
    ws = workspace(TMP / "base")
    done = cli(ws, "run", "--depth", "preflight", cache=seed(TMP / "cache-base", SOURCE))
    if done.rc != 0:
        raise SystemExit(f"the base preflight run failed ({done.rc}):\n{done.out[-2000:]}")
    return ws / "results"


BAD = {
    "malformed": b'{"schema": "vllm-matrix/cell-result", "version": 1, "stages": [',
    "empty": b"",
    "non-utf8": b'{"schema": "vllm-matrix/cell-result\xff\xfe"}',
    "other-schema": b'{"schema": "vllm-matrix/compat", "version": 1, "cells": []}',
}


def bad_file_case(kind: str, how: str) -> None:
    expected = "non-zero, no traceback, the file named, the other cell reported"

    @case(f"bad-result/{kind}/{how}", "1 bad result file", expected)
    def _(ws: Path) -> tuple[str, bool]:
        workspace(ws, BASE_RESULTS)
        (ws / "results" / f"{CELL}.json").write_bytes(BAD[kind])
        cache = seed(ws / "cache", SOURCE)
        done = {
            "report": lambda: cli(ws, "report", cache=cache),
            "nox-report": lambda: nox(ws, "-s", "report", cache=cache),
            "run": lambda: cli(ws, "run", "--depth", "preflight", "--cell", OTHER, cache=cache),
            "nox-matrix": lambda: nox(
                ws, "-s", "matrix", "--", "--depth", "preflight", "--cell", OTHER, cache=cache
            ),
        }[how]()
        md = ws / "reports" / "compat.md"
        text = md.read_text() if md.exists() else ""
        named = f"skipped results/{CELL}.json" in done.out
        rest = f"| `{OTHER}`" in text and f"`results/{CELL}.json`" in text
        said = (
            re.search(r"failed with exit code (\d+)", done.out) if how.startswith("nox") else None
        )
        cli_rc = f"exit code {said.group(1)}" if said else ""
        obs = f"exit {done.rc}" + (
            f" ({cli_rc.split('failed with ')[-1]} from the CLI)" if cli_rc else ""
        )
        obs += (
            f"; {'named' if named else 'NOT named'}; other cell {'reported' if rest else 'MISSING'}"
        )
        obs += "; traceback" if done.traceback else ""
        return obs, done.rc != 0 and named and rest and not done.traceback


# --------------------------------------------------------------------------- cases

for _kind in BAD:
    for _how in ("report", "nox-report", "run", "nox-matrix"):
        bad_file_case(_kind, _how)


def damage_case(name: str, rel: str, how: str, finds: str, adopted: bool) -> None:
    """``adopted``: a first run gives the seed's toolkit and env (made before manifests)
    their manifests, so the damage meets the manifest check; else it meets the check of a
    cache without one (layout + nvcc --version; pip's RECORD for an env)."""
    kind = "with its manifest" if adopted else "made before manifests"
    what = "env made again" if rel.startswith("envs/") else f"rebuilt, naming {finds}"

    @case(f"damaged/{name}", "2 corrupt cache", f"cache {kind}: run --depth toolkit: {what}")
    def _(ws: Path) -> tuple[str, bool]:
        workspace(ws)
        cache = seed(ws / "cache")
        if adopted:
            cli(ws, "run", "--depth", "toolkit", "--cell", CELL, cache=cache)
        else:  # as made before manifests (the seed may have been given them since)
            for tree in (TK, ENV):
                (cache / tree / ".vllm-matrix-manifest.json").unlink(missing_ok=True)
        path = cache / rel
        if how == "flip":
            flip(path)
        elif how == "flip-head":  # the ELF magic: "Exec format error"
            data = bytearray(path.read_bytes())
            data[1] ^= 0xFF
            replace_file(path, bytes(data))
        else:
            path.unlink()
        done = cli(ws, "run", "--depth", "toolkit", "--cell", CELL, cache=cache)
        judged, depth = verdict(ws)
        stages = result(ws).get("stages") or []
        assert isinstance(stages, list)
        notes = [
            note
            for stage in stages
            if stage["stage"] == "toolkit"
            for note in stage["details"].get("notes", [])
        ]
        said = next((note for note in notes if note.startswith("rebuilt:")), "")
        if rel.startswith("envs/"):  # made again: the file as the seed has it
            ok = (
                path.is_file()
                and judged != "ERROR"
                and path.read_bytes() == (WARM / rel).read_bytes()
            )
            back = "back" if path.is_file() else "MISSING"
            obs = f"exit {done.rc}, {judged} at {depth}; env made again: {path.name} {back}"
        else:
            ok = finds in said and judged != "ERROR" and path.is_file()
            obs = f"exit {done.rc}, {judged} at {depth}; {said[:110] or 'no rebuild note'}"
        return obs + f" ({done.seconds:.0f}s)", ok and done.rc == 0 and not done.traceback


damage_case("flipped-nvcc", f"{TK}/bin/nvcc", "flip", "bin/nvcc changed content", adopted=True)
damage_case(
    "flipped-nvcc-header-legacy",
    f"{TK}/bin/nvcc",
    "flip-head",
    "nvcc --version exited",
    adopted=False,
)
damage_case(
    "no-cuda_runtime.h-legacy",
    f"{TK}/include/cuda_runtime.h",
    "rm",
    "missing include/cuda_runtime.h",
    adopted=False,
)
damage_case("no-cicc", f"{TK}/nvvm/bin/cicc", "rm", "nvvm/bin/cicc is missing", adopted=True)
damage_case("no-extension.h-legacy", EXT_H, "rm", "extension.h", adopted=False)
damage_case("flipped-extension.h", EXT_H, "flip", "extension.h", adopted=True)


@case("damaged/doctor-verify", "2 corrupt cache", "doctor --verify names a flipped non-key header")
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    cache = seed(ws / "cache")
    ok = cli(ws, "doctor", "--cell", CELL, "--verify", cache=cache)
    flip(cache / TK / "include" / "cuda_fp16.hpp")
    bad = cli(ws, "doctor", "--cell", CELL, "--verify", cache=cache)
    named = line_with(bad.out, "cuda_fp16.hpp")
    obs = f"intact: exit {ok.rc}, {line_with(ok.out, 'problems:')}; flipped: exit {bad.rc}, "
    obs += named[:100]
    return obs, ok.rc == 0 and "problems: none" in ok.out and bad.rc != 0 and bool(named)


@case(
    "error-keeps-evidence", "3 ERROR over evidence", "toolkit-depth result kept + last run: ERROR"
)
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    cache = seed(ws / "cache")
    first = cli(ws, "run", "--depth", "toolkit", "--cell", CELL, cache=cache)
    with tmpfs(ws / "full", "64k") as full:  # preflight on a full disk
        err = cli(ws, "run", "--depth", "preflight", "--cell", CELL, cache=full)
    kept = result(ws)
    stages = [stage["stage"] for stage in kept.get("stages", [])]
    last_error = kept.get("last_error") or {}
    assert isinstance(last_error, dict)
    row = line_with((ws / "reports" / "compat.md").read_text(), f"`{CELL}`", "last run")
    clean = cli(ws, "run", "--depth", "preflight", "--cell", CELL, cache=cache).rc
    after = [stage["stage"] for stage in result(ws).get("stages", [])]
    obs = (
        f"toolkit run exit {first.rc}; full-disk run exit {err.rc}, kept {stages[-1]}, "
        f"last_error at {last_error.get('stage')}; "
        f"report: {'last run: ERROR' if row else 'NOT shown'}; "
        f"clean rerun (exit {clean}) keeps {after[-1]}"
    )
    ok = (
        first.rc == 0
        and err.rc == 3
        and clean == 0
        and stages[-1] == "env"
        and last_error.get("stage") == "source"
        and bool(row)
        and after[-1] == "env"
        and "last_error" not in result(ws)
    )
    return obs, ok


def _is(word: str) -> Callable[[list[tuple[int, str]]], bool]:
    return lambda kids: any(
        word in cmd.split(" ")[0].split("/")[-1] or f" {word} " in f" {cmd} " for _, cmd in kids
    )


@case(
    "kill-9/toolkit-assembly",
    "4 kill -9",
    "dpkg dies with the tool; the next run removes the staging dir",
)
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    cache = seed(ws / "cache", (*SOURCE, "downloads/debian", "apt"))  # no toolkit: assembled
    args = ("run", "--depth", "toolkit", "--cell", CELL)
    _, seen, left = kill_during(ws, cache, args, _is("dpkg"))
    parent = cache / TK.rsplit("/", 1)[0]
    staged = [partial.name for partial in parent.glob(".debian-12.4.*.partial")]
    again = cli(ws, *args, cache=cache)
    after = [partial.name for partial in parent.glob(".debian-12.4.*.partial")]
    judged, depth = verdict(ws)
    obs = (
        f"killed with {len([cmd_line for cmd_line in seen if 'dpkg' in cmd_line])} dpkg running, "
        f"{len(left)} left alive; "
        f"staging dirs {len(staged)} -> {len(after)}; rerun exit {again.rc}, {judged} at {depth}"
    )
    return obs, bool(seen) and not left and bool(staged) and not after and again.rc == 0


@case(
    "kill-9/env-creation",
    "4 kill -9",
    "uv dies with the tool; an immediate rerun ends without 'Directory not empty'",
)
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    cache = seed(ws / "cache", TOOLKIT)  # no env: created
    args = ("run", "--depth", "toolkit", "--cell", CELL)
    _, seen, left = kill_during(
        ws, cache, args, lambda kids: any(" pip install" in cmd_line for _, cmd_line in kids)
    )
    again = cli(ws, *args, cache=cache)
    judged, depth = verdict(ws)
    uv = [cmd_line for cmd_line in seen if " pip install" in cmd_line]
    obs = (
        f"killed with {len(uv)} uv process(es), {len(left)} left alive; rerun exit {again.rc}, "
        f"{judged} at {depth}"
        + ("; Directory not empty" if "Directory not empty" in again.out else "")
    )
    return obs, bool(uv) and not left and again.rc == 0 and "Directory not empty" not in again.out


@case(
    "kill-9/download",
    "4 kill -9",
    "apt-get dies with the tool; the next run removes the half download",
)
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    cache = seed(ws / "cache", (*SOURCE, "apt"))  # no .debs: downloaded
    args = ("run", "--depth", "toolkit", "--cell", CELL)
    _, seen, left = kill_during(
        ws,
        cache,
        args,
        lambda kids: any(
            "apt-get" in cmd_line and " download " in cmd_line for _, cmd_line in kids
        ),
    )
    time.sleep(1)
    deb_dir = cache / "downloads" / "debian"
    half = [entry.name for entry in deb_dir.rglob(".download.*") if entry.is_dir()]
    for entry in (WARM / "downloads" / "debian").rglob("*.deb"):  # the rest from the seed
        linked = deb_dir / entry.relative_to(WARM / "downloads" / "debian")
        if not linked.exists():
            linked.parent.mkdir(parents=True, exist_ok=True)
            os.link(entry, linked)
    again = cli(ws, *args, cache=cache)
    after = [entry.name for entry in deb_dir.rglob(".download.*") if entry.is_dir()]
    judged, depth = verdict(ws)
    obs = (
        f"killed with apt-get running, {len(left)} left alive; half downloads {len(half)} -> "
        f"{len(after)}; rerun exit {again.rc}, {judged} at {depth}"
    )
    return obs, bool(seen) and not left and bool(half) and not after and again.rc == 0


@case(
    "ctrl-c/toolkit-assembly",
    "4 Ctrl-C",
    "exit 130, children gone, staging dir removed, result UNKNOWN",
)
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    cache = seed(ws / "cache", (*SOURCE, "downloads/debian", "apt"))
    done, seen, left = kill_during(
        ws, cache, ("run", "--depth", "toolkit", "--cell", CELL), _is("dpkg"), sig=signal.SIGINT
    )
    staged = list((cache / TK).parent.glob(".debian-12.4.*.partial"))
    judged, depth = verdict(ws)
    obs = (
        f"exit {done.rc}, {len(left)} children left, {len(staged)} staging dirs, "
        f"{judged} at {depth}"
    )
    return obs, bool(
        seen
    ) and done.rc == 130 and not left and not staged and judged == "UNKNOWN" and not done.traceback


def usage_case(
    name: str,
    bullet: str,
    args: tuple[str, ...],
    said: str,
    fix: str,
    swap: tuple[str, str] | None = None,
) -> None:
    """``swap``: (text, replacement) made once in the bench matrix first."""

    @case(name, bullet, f"exit 2: {said} / fix: {fix}")
    def _(ws: Path) -> tuple[str, bool]:
        workspace(ws)
        if swap is not None:
            (ws / "matrix.toml").write_text(MATRIX.replace(*swap, 1), encoding="utf-8")
        done = cli(ws, *args, cache=seed(ws / "cache", SOURCE))
        err = line_with(done.out, "error:")
        got_fix = line_with(done.out, "fix:")
        ok = done.rc == 2 and said in err and fix in got_fix and not done.traceback
        ok = ok and "File name too long" not in done.out and len(done.out) < 2000
        return f"exit {done.rc}: {err[:90]} / {got_fix[:70]}", ok


TORCH = 'torch = "2.6.0"'
usage_case(
    "no-such/torch-2.6.7-in-cell",
    "5 nonexistent",
    ("run", "--depth", "preflight"),
    "torch '2.6.7' is not a torch release",
    "did you mean '2.6.0'",
    (TORCH, 'torch = "2.6.7"'),
)
usage_case(
    "no-such/vllm-0.10.9-in-cell",
    "5 nonexistent",
    ("run", "--depth", "preflight"),
    "vLLM '0.10.9' is not a vLLM release",
    "did you mean",
    ('vllm = "0.8.5"', 'vllm = "0.10.9"'),
)
usage_case(
    "no-such/release-0.10.9",
    "5 nonexistent",
    ("release", "0.10.9"),
    "vLLM '0.10.9' is not a vLLM release",
    "did you mean",
)
usage_case(
    "no-such/release-torch-2.6.7",
    "5 nonexistent",
    ("release", "0.8.5", "--torch", "2.6.7"),
    "--torch: torch '2.6.7' is not",
    "did you mean '2.6.0'",
)
usage_case(
    "no-such/newest-torch-2.6.7",
    "5 nonexistent",
    ("newest", "--torch", "2.6.7", "--arch", "9.0"),  # newest needs a target: say one
    "--torch: torch '2.6.7' is not",
    "did you mean '2.6.0'",
)
usage_case(
    "no-such/300-char-version-in-cell",
    "5 nonexistent",
    ("run", "--depth", "preflight"),
    "is not a torch version",
    'torch = "2.6.0"',
    (TORCH, f'torch = "2.{"6" * 298}"'),
)
usage_case(
    "no-such/300-char-release",
    "5 nonexistent",
    ("release", "0." + "9" * 298),
    "is not a version",
    "e.g. 0.8.5",
)
usage_case(
    "no-such/300-char-facts",
    "5 nonexistent",
    ("facts", "0." + "9" * 298),
    "is not a vLLM version",
    "release number",
)
usage_case(
    "fix/python-3.12-rocket",
    "6 fixes",
    ("run", "--depth", "preflight"),
    "'python' in [[cell]] #1 is not a version",
    'python = "3.12"',
    (TORCH, f'{TORCH}\npython = "3.12🚀"'),
)


@case("fix/readonly-results", "6 fixes", "the fix names results/, not the cache")
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    with tmpfs(ws / "results", "1m", ro=True):
        done = cli(
            ws, "run", "--depth", "preflight", "--cell", CELL, cache=seed(ws / "cache", SOURCE)
        )
    fix = line_with(done.out, "fix:")
    return f"exit {done.rc}: {fix[:120]}", done.rc == 3 and "results" in fix and "cache" not in fix


@case("fix/readonly-reports", "6 fixes", "the fix names reports/, not the cache")
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws, BASE_RESULTS)
    with tmpfs(ws / "reports", "1m", ro=True):
        done = cli(ws, "report", cache=seed(ws / "cache", SOURCE))
    fix = line_with(done.out, "fix:")
    return f"exit {done.rc}: {fix[:120]}", done.rc == 3 and "reports" in fix and "cache" not in fix


@case("fix/git-unreachable", "6 fixes", "ERROR at source with git's own reason and a fix")
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    url = f"https://127.0.0.1:{closed_port()}/vllm.git"
    (ws / "matrix.toml").write_text(
        MATRIX.replace('arch = ["9.0"]', f'arch = ["9.0"]\nsource = "git:{url}@v0.8.5"', 1)
    )
    done = cli(ws, "run", "--depth", "preflight", "--cell", CELL, cache=seed(ws / "cache", SOURCE))
    judged = result(ws).get("verdict") or {}
    assert isinstance(judged, dict)
    cause, fix = str(judged.get("cause")), str(judged.get("fix"))
    ok = done.rc == 3 and judged.get("verdict") == "ERROR" and "fatal:" in cause and "reach" in fix
    return f"exit {done.rc}, {judged.get('verdict')}: {cause[-70:]} / fix: {fix[:60]}", ok


def _merge_doc(ws: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((BASE_RESULTS / f"{OTHER}.json").read_text())
    return doc


def merge_case(name: str, change: Callable[[dict[str, Any]], None], said: str) -> None:
    @case(f"merge/{name}", "7 --merge", f"refused ({said}); table intact; exit 3")
    def _(ws: Path) -> tuple[str, bool]:
        workspace(ws)
        doc = _merge_doc(ws)
        change(doc)
        (ws / "in").mkdir()
        (ws / "in" / "bad.json").write_text(json.dumps(doc))
        shutil.copy(BASE_RESULTS / f"{CELL}.json", ws / "in" / "good.json")
        out = cli(ws, "report", "--merge", str(ws / "in"), cache=seed(ws / "cache", SOURCE))
        md = (ws / "reports" / "compat.md").read_text()
        rows = [line for line in md.splitlines() if line.startswith("| `")]
        intact = bool(rows) and {line.count(" | ") for line in rows} == {12}
        refused = line_with(out.out, "refused in/bad.json")
        obs = f"exit {out.rc}; {refused[:90]}; rows intact {intact}; compat.md {len(md)} bytes"
        return obs, out.rc == 3 and said in refused and intact and len(md) < 100_000


merge_case(
    "newline-id", lambda doc: doc["cell"].update(id=f"{OTHER}\n| x | y |"), "holds a character"
)
merge_case("pipe-id", lambda doc: doc["cell"].update(id="a|b"), "holds a character")
merge_case("200000-char-id", lambda doc: doc["cell"].update(id="v" * 200_000), "200000 characters")
merge_case(
    "banana-status", lambda doc: doc["stages"][-1].update(status="banana"), "status 'banana'"
)


@case("merge/banana-never-wins", "7 --merge", "a valid copy beats a newer 'banana' copy")
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    good = _merge_doc(ws)
    bad = json.loads(json.dumps(good))
    bad["stages"][-1]["status"] = "banana"
    bad["written"] = "2099-01-01T00:00:00Z"
    (ws / "in").mkdir()
    (ws / "in" / "a.json").write_text(json.dumps(good))
    (ws / "in" / "b.json").write_text(json.dumps(bad))
    out = cli(ws, "report", "--merge", str(ws / "in"), cache=seed(ws / "cache", SOURCE))
    doc = json.loads((ws / "reports" / "compat.json").read_text())
    row = next(cell_row for cell_row in doc["cells"] if cell_row["id"] == OTHER)
    return f"exit {out.rc}; shown: {row['verdict']}", out.rc == 3 and row["verdict"] != "UNKNOWN"


@case("merge/empty-dir", "7 --merge", "exit 2, the report not rewritten")
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws, BASE_RESULTS)
    cache = seed(ws / "cache", SOURCE)
    cli(ws, "report", cache=cache)
    before = (ws / "reports" / "compat.md").read_bytes()
    (ws / "empty").mkdir()
    out = cli(ws, "report", "--merge", str(ws / "empty"), cache=cache)
    same = (ws / "reports" / "compat.md").read_bytes() == before
    return (
        f"exit {out.rc}: {line_with(out.out, 'error:')[:90]}; report unchanged {same}",
        out.rc == 2 and same,
    )


@case("exit/release-error", "8 exit codes", "release whose cell ends in ERROR exits 3 (was 0)")
def _(ws: Path) -> tuple[str, bool]:
    workspace(ws)
    proxy = f"http://127.0.0.1:{closed_port()}"  # apt cannot reach its mirror: toolkit ERROR
    env = {"http_proxy": proxy, "https_proxy": proxy}
    argv = ("release", "0.8.5", "--arch", "9.0", "--depth", "toolkit")  # a target: no GPU here
    done = cli(ws, *argv, cache=seed(ws / "cache", SOURCE), env=env)
    error_line = line_with(done.out, "ERROR")
    return f"exit {done.rc}: {error_line[:100]}", done.rc == 3 and error_line.startswith(
        "ERROR"
    ) and not done.traceback


# --------------------------------------------------------------------------- the original four


def broken_case(name: str, make: Callable[[Path], tuple[str, dict[str, str], Path]]) -> None:
    @case(
        f"broken/{name}",
        "broken setup",
        "ERROR with a one-line cause and a fix; no FAIL in the table",
    )
    def _(ws: Path) -> tuple[str, bool]:
        workspace(ws)
        with contextlib.ExitStack() as stack:
            python_exe, env, cache = make(ws)
            if name in ("readonly", "disk-full"):
                stack.enter_context(
                    tmpfs(cache, "1m" if name == "readonly" else "64m", ro=name == "readonly")
                )
            full_env = BASE | env | {"VLLM_MATRIX_CACHE": str(cache)}
            started = time.monotonic()
            done = subprocess.run(
                [python_exe, "-m", "vllm_matrix", "run", "--cell", CELL, "--depth", "toolkit"],
                capture_output=True,
                text=True,
                env=full_env,
                cwd=ws,
                check=False,
                timeout=1800,
            )
        out = done.stdout + done.stderr
        compat_md = ws / "reports" / "compat.md"
        table = compat_md.read_text().split("## Not answered")[0] if compat_md.exists() else ""
        judged = result(ws).get("verdict") or {}
        assert isinstance(judged, dict)
        blames = any(word in table for word in ("| **FAIL**", "| **PREDICTED-FAIL**"))
        ok = (
            done.returncode == 3
            and "Traceback" not in out
            and judged.get("verdict") == "ERROR"
            and bool(judged.get("cause"))
            and "\n" not in str(judged.get("cause"))
            and bool(judged.get("fix"))
            and not blames
        )
        obs = f"exit {done.returncode}, {judged.get('verdict')} at {judged.get('depth')}: "
        obs += str(judged.get("cause"))[:70]
        return obs + f" ({time.monotonic() - started:.0f}s)", ok


def _no_uv(ws: Path) -> tuple[str, dict[str, str], Path]:
    venv = TMP / "venv-no-uv"
    if not venv.exists():
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(REPO)],
            check=True,
        )
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "uv"], check=True
        )
    cache = seed(ws / "cache", TOOLKIT)
    return str(venv / "bin" / "python"), {"PATH": f"{venv}/bin:/usr/bin:/bin"}, cache


broken_case("no-uv", _no_uv)
broken_case("readonly", lambda ws: (PY, {}, ws / "ro-cache"))
broken_case(
    "index-down",
    lambda ws: (
        PY,
        {"VLLM_MATRIX_INDEX_URL": f"http://127.0.0.1:{closed_port()}/simple"},
        ws / "cache-idx",
    ),
)
broken_case("disk-full", lambda ws: (PY, {}, ws / "small-cache"))

BASE_RESULTS = TMP / "base" / "results"


def scrub(doc: object) -> object:
    """No path of this machine in what is saved."""
    roots = portable.Roots(((str(TMP), "$TMP"), (str(REPO), "$REPO"), (str(WARM), "$WARM")))
    return portable.doc(doc, roots)


def table(rows: list[dict[str, object]]) -> str:
    out = ["| case | expected | observed | held |", "|---|---|---|---|"]
    for row in rows:
        cells = [
            str(row[key]).replace("|", "\\|").replace("\n", " ")
            for key in ("case", "expected", "observed")
        ]
        out.append(f"| {' | '.join(cells)} | {'yes' if row['held'] else '**NO**'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-k", dest="pick", default="", help="run the cases whose name holds it")
    parser.add_argument("--write", action="store_true", help="save reports/bench/broken.json")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        shutil.rmtree(TMP, ignore_errors=True)  # made at import; --help or a usage error
        raise
    # A shell's background job starts with SIGINT ignored, and the CLIs it starts would
    # inherit that: the Ctrl-C case needs them to see it as a terminal's Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bench_started = time.monotonic()
    rows: list[dict[str, object]] = []
    try:
        base_results()
        for fault in CASES:
            if args.pick and args.pick not in fault.name:
                continue
            ws = TMP / "ws" / fault.name.replace("/", "_")
            started = time.monotonic()
            try:
                obs, held = fault.run(ws)
            except Exception as exc:  # the bench's own failure: shown, never held
                obs, held = f"bench error: {type(exc).__name__}: {exc}"[:200], False
            rows.append(
                {
                    "case": fault.name,
                    "bullet": fault.bullet,
                    "expected": fault.expected,
                    "observed": obs,
                    "held": held,
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
            print(
                f"{'held' if held else 'NOT HELD':8} {fault.name}: {obs}",
                file=sys.stderr,
                flush=True,
            )
            shutil.rmtree(ws, ignore_errors=True)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    wall = round(time.monotonic() - bench_started, 1)
    doc = scrub(
        {
            "what": "issue 22 item 3: faults end as designed (nox -s bench-faults)",
            "cell": CELL,
            "wall_s": wall,
            "loadavg": list(os.getloadavg()),
            "held": sum(1 for row in rows if row["held"]),
            "cases": rows,
        }
    )
    assert isinstance(doc, dict)
    print(table(doc["cases"]))
    print(f"\n{doc['held']} of {len(rows)} held; wall {wall:.0f} s; load {os.getloadavg()}")
    if args.write:
        (REPO / "reports" / "bench" / "broken.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0 if rows and all(row["held"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
