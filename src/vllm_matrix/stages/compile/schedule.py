"""Longest edges first: reorder a CMake-generated build.ninja so ninja starts the edges known
(or estimated) to take longest before the rest, and give edges with several device outputs
nvcc's ``--threads``.

Why: ninja 1.13.2 weighs every edge 1 (``EdgeWeightHeuristic``) and breaks ties between
edges of equal critical-path weight by their order in build.ninja (``EdgePriorityLess``,
edge ids follow parse order); every compile edge of vLLM's extensions ties (compile, then
link). On an H200 host (16 cores, issue 12's fourth run) vLLM 0.20.0's ``scaled_mm_c2x.cu``
(837 s) started ~10 min in and compiled alone for its last ~10 min: 24 min 47 s for
12,499 edge-seconds that pack into 13 min. Weights from ``.ninja_log`` times came to ninja
only after 1.13.2 (commit 67e093c8, PR #2686).

Only the order of ``build`` statements among the compile edges' own slots changes; rules,
variables and every other statement stay where they are, so the graph ninja builds is the
same. This module imports nothing from vllm_matrix (stdlib only): the partial build's
setup.py driver loads it by path inside the build env's Python, between CMake's configure
and ``cmake --build``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

SCHEDULE_JSON = "vllm-matrix-schedule.json"
ORIGINAL = "build.ninja.vllm-matrix-orig"
# Seconds for an edge with no recorded time (an estimate, named as such in the result):
# per device output for CUDA units, x CUTLASS_FACTOR when the source includes CUTLASS/CuTe
# (vLLM 0.20.0's CUTLASS units took 100-840 s per the issue-12 runs, the others tens of s).
CUDA_OUTPUT_S = 60.0
CXX_S = 20.0
CUTLASS_FACTOR = 4.0
ORDER_KEPT = 30  # entries of the planned order kept in the result
_COMPILE_RULE = re.compile(r"_COMPILER__")
_ASSIGN = re.compile(r"^[A-Za-z_][\w.-]*\s*=")
_UNESCAPED_COLON = re.compile(r"(?<!\$):(?:\s|$)")
_GENCODE = re.compile(r"(?:-gencode[= ]|--generate-code[= ])arch=(\S+?),code=(\[[^\]]*\]|\S+)")
_ARCH_FLAG = re.compile(r"(?:^|\s)-arch[= ]sm_(\w+)")
_THREADS = re.compile(r"--threads[= ]\d+")
_CUTLASS_INCLUDE = re.compile(r'#\s*include\s*[<"](?:cutlass|cute)/')


def split_statements(text: str) -> list[str]:
    """build.ninja cut into statements, each with its indented bindings and its line
    continuations; joining them gives the text back exactly."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    cur: list[str] = []
    cont = False
    for line in lines:
        starts = not cont and line.strip() != "" and not line[0].isspace()
        if starts and cur:
            out.append("".join(cur))
            cur = []
        cur.append(line)
        body = line.rstrip("\r\n")
        cont = body.endswith("$") and not body.endswith("$$")
    if cur:
        out.append("".join(cur))
    return out


def _joined(stmt: str) -> str:
    return re.sub(r"(?<!\$)\$\n[ \t]*", "", stmt)


def edge_head(stmt: str) -> tuple[list[str], str, list[str]] | None:
    """(outputs, rule, explicit inputs) of a ``build`` statement, else None."""
    if not stmt.startswith("build "):
        return None
    first = _joined(stmt).splitlines()[0][len("build ") :]
    m = _UNESCAPED_COLON.search(first)
    if m is None:
        return None
    outs = [o for o in re.split(r"(?<!\$) +", first[: m.start()].strip()) if o and o != "|"]
    rest = re.split(r"(?<!\$) +", first[m.end() :].strip())
    rule, ins = (rest[0], rest[1:]) if rest and rest[0] else ("", [])
    explicit: list[str] = []
    for i in ins:
        if i in ("|", "||"):
            break
        explicit.append(i.replace("$ ", " ").replace("$:", ":").replace("$$", "$"))
    outs = [o.replace("$ ", " ").replace("$:", ":").replace("$$", "$") for o in outs]
    return outs, rule, explicit


def binding(stmt: str, name: str) -> str | None:
    for line in _joined(stmt).splitlines()[1:]:
        k, eq, v = line.strip().partition("=")
        if eq and k.strip() == name:
            return v.strip()
    return None


def is_compile(stmt: str) -> bool:
    head = edge_head(stmt)
    return head is not None and bool(_COMPILE_RULE.search(head[1]))


def device_outputs(flags: str) -> int:
    """How many device codes (SASS or PTX) one nvcc call makes: what ``--threads`` splits."""
    n = 0
    for _arch, code in _GENCODE.findall(flags):
        n += len([c for c in code.strip("[]").split(",") if c])
    n += len(_ARCH_FLAG.findall(flags))
    return n


def virtual_archs(flags: str) -> int:
    """Distinct virtual archs (compute_XY): cicc runs once per virtual arch, and nvcc's
    ``--threads`` can only run such independent steps side by side."""
    return len({arch for arch, _code in _GENCODE.findall(flags)}) + len(_ARCH_FLAG.findall(flags))


def estimate(stmt: str, build_dir: Path) -> float:
    """An edge's seconds when none was recorded (documented constants above)."""
    head = edge_head(stmt)
    if head is None:
        return 0.0
    _outs, rule, ins = head
    flags = binding(stmt, "FLAGS") or ""
    base = CUDA_OUTPUT_S * max(1, device_outputs(flags)) if "CUDA" in rule else CXX_S
    src = Path(ins[0]) if ins else None
    if src is not None and not src.is_absolute():
        src = build_dir / src
    try:
        if src is not None and _CUTLASS_INCLUDE.search(src.read_text(errors="replace")):
            base *= CUTLASS_FACTOR
    except OSError:
        pass
    return base


def _key(path: str) -> str:
    """An object's name independent of the build dir: from ``CMakeFiles/`` on."""
    i = path.find("CMakeFiles/")
    return path[i:] if i >= 0 else path


def read_ninja_log(path: Path) -> dict[str, float]:
    """Output -> seconds of its last run (.ninja_log v5/v6: start, end, mtime, output, hash)."""
    out: dict[str, float] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) >= 4 and parts[0].isdigit() and parts[1].isdigit():
            out[_key(parts[3])] = (int(parts[1]) - int(parts[0])) / 1000.0
    return out


def simulate(durations: Sequence[float], jobs: int) -> tuple[float, list[float]]:
    """ninja's list scheduling of independent edges in the given order on ``jobs`` slots:
    (makespan, each edge's start). What a priority order buys, before any machine runs it."""
    slots = [0.0] * max(1, jobs)
    starts: list[float] = []
    for d in durations:
        i = min(range(len(slots)), key=slots.__getitem__)
        starts.append(slots[i])
        slots[i] += d
    return (max(slots) if durations else 0.0), starts


def packed_limit(durations: Sequence[float], cores: int) -> float:
    """No schedule beats the larger of the work spread over the cores and the longest edge."""
    return max(sum(durations) / max(1, cores), max(durations, default=0.0))


def _set_threads(stmt: str, n: int) -> str:
    lines = stmt.splitlines(keepends=True)
    for i, line in enumerate(lines):
        k, eq, _v = line.strip().partition("=")
        if i > 0 and eq and k.strip() == "FLAGS":
            end = "\n" if line.endswith("\n") else ""
            indent = line[: len(line) - len(line.lstrip())]
            body = line.strip()
            body = (
                _THREADS.sub(f"--threads={n}", body)
                if _THREADS.search(body)
                else (f"{body} --threads={n}")
            )
            lines[i] = f"{indent}{body}{end}"
            return "".join(lines)
    return stmt


def reorder(
    text: str,
    cost: Callable[[str], tuple[float, str]],
    *,
    max_threads: int = 1,
) -> tuple[str, dict[str, Any]]:
    """The text with compile edges longest first (stable among equals), and their plan.

    ``cost(stmt)`` gives (seconds, "recorded" | "estimated"). Edges whose nvcc call makes
    several device codes from several virtual archs get ``--threads=min(that, max_threads)``.
    """
    stmts = split_statements(text)
    slots = [i for i, s in enumerate(stmts) if is_compile(s)]
    info: dict[str, Any] = {"compile_edges": len(slots)}
    if not slots:
        return text, info | {"changed": False}
    between = sum(
        1
        for s in stmts[slots[0] : slots[-1] + 1]
        if not s.startswith(("build ", "#")) and _ASSIGN.match(s)
    )
    costed = []
    for i in slots:
        secs, how = cost(stmts[i])
        costed.append((i, secs, how))
    order = sorted(costed, key=lambda t: -t[1])  # sorted() is stable: ties keep their order
    threaded: list[dict[str, Any]] = []
    new = list(stmts)
    for slot, (i, _secs, _how) in zip(slots, order, strict=True):
        stmt = stmts[i]
        flags = binding(stmt, "FLAGS") or ""
        v = virtual_archs(flags)
        if max_threads > 1 and v > 1:
            n = min(v, max_threads)
            stmt = _set_threads(stmt, n)
            head = edge_head(stmt)
            threaded.append({"edge": _key(head[0][0]) if head else "?", "threads": n})
        new[slot] = stmt

    def name(i: int) -> str:
        head = edge_head(stmts[i])
        return _key(head[0][0]) if head else "?"

    before = [secs for _i, secs, _h in costed]
    after = [secs for _i, secs, _h in order]
    info |= {
        "changed": [i for i, _s, _h in order] != slots,
        "assignments_between": between,
        "threaded": threaded,
        "order": [
            {"edge": name(i), "seconds": round(secs, 1), "how": how} for i, secs, how in order
        ],
        "recorded": sum(1 for _i, _s, how in costed if how == "recorded"),
    }
    info["before_order"] = [name(i) for i in slots[:5]]
    info["_durations"] = (before, after)
    info["_before_names"] = [name(i) for i in slots]
    return "".join(new), info


def plan_for(
    build_dir: Path,
    recorded: Mapping[str, float],
    jobs: int,
    max_threads: int = 1,
    write: bool = True,
    targets: Sequence[str] = (),
) -> dict[str, Any]:
    """Reorder ``build_dir``/build.ninja in place (the original kept beside it) and say
    what the order predicts: the packed limit, and ninja's makespan before and after."""
    ninja = build_dir / "build.ninja"
    text = ninja.read_text()
    logged = read_ninja_log(build_dir / ".ninja_log")
    known = {_key(k): v for k, v in recorded.items()} | logged

    def cost(stmt: str) -> tuple[float, str]:
        head = edge_head(stmt)
        key = _key(head[0][0]) if head else ""
        if key in known:
            return known[key], "recorded"
        return estimate(stmt, build_dir), "estimated"

    new, info = reorder(text, cost, max_threads=max_threads)
    before, after = info.pop("_durations", ([], []))
    # Every compile edge of the targets with the seconds it is expected to take: what the
    # build's progress weighs its ETA with (ninja.OverallProgress.eta).
    dirs = tuple(f"CMakeFiles/{t}.dir/" for t in targets)
    info["expected"] = {
        o["edge"]: o["seconds"]
        for o in info.get("order", [])
        if not dirs or o["edge"].startswith(dirs)
    }
    if targets:
        # Predict over the edges that will be built: build.ninja also holds every other
        # target's edges (stand-ins among them), which ninja never starts.
        mine = [o["edge"].startswith(dirs) for o in info.get("order", [])]
        before_names = [o for o in info.get("_before_names", [])]
        keep = {o["edge"] for o, m in zip(info.get("order", []), mine, strict=True) if m}
        before = [d for n, d in zip(before_names, before, strict=True) if n in keep]
        after = [o["seconds"] for o in info.get("order", []) if o["edge"] in keep]
        info["predicted_targets"] = list(targets)
    info.pop("_before_names", None)
    if before:
        mb, _ = simulate(before, jobs)
        ma, starts = simulate(after, jobs)
        longest = max(range(len(after)), key=after.__getitem__)
        sb_start = simulate(before, jobs)[1][before.index(max(before))]
        info["predicted"] = {
            "jobs": jobs,
            "edge_seconds": round(sum(after), 1),
            "longest_edge_s": round(max(after), 1),
            "packed_limit_s": round(packed_limit(after, jobs), 1),
            "makespan_before_s": round(mb, 1),
            "longest_starts_before_s": round(sb_start, 1),
            "makespan_after_s": round(ma, 1),
            "longest_starts_after_s": round(starts[longest], 1),
            "basis": "recorded .ninja_log times where known, else estimate() (compile edges "
            "only, links and configure not counted)",
        }
    if write and (info.get("changed") or info.get("threaded")):
        orig = build_dir / ORIGINAL
        if not orig.exists():
            shutil.copy2(ninja, orig)
        tmp = ninja.with_suffix(".ninja.tmp")
        tmp.write_text(new)
        tmp.replace(ninja)
    # The order's head is what matters (longest first); the tail is many short edges and
    # the stand-ins' objects, whose names embed the build dir's absolute path.
    info["order_total"] = len(info.get("order", []))
    info["order"] = info.get("order", [])[:ORDER_KEPT]
    if write:
        (build_dir / SCHEDULE_JSON).write_text(json.dumps(info, indent=1) + "\n")
    return info


__all__ = [
    "SCHEDULE_JSON",
    "device_outputs",
    "edge_head",
    "estimate",
    "packed_limit",
    "plan_for",
    "read_ninja_log",
    "reorder",
    "simulate",
    "split_statements",
    "virtual_archs",
]


# --- the build stage's side (not used by the driver) ---------------------------------------

# nvcc --threads for an edge compiling several virtual archs: one per arch, at most this.
MAX_THREADS = 4
EDGE_TIMES = Path(__file__).resolve().parents[2] / "knowledge" / "data" / "edge_times.toml"


def recorded_times(version: str, path: Path = EDGE_TIMES) -> dict[str, float]:
    """The release's recorded edge times (knowledge/data/edge_times.toml), object -> s."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    rel = data.get("vllm", {}).get(version, {})
    return {str(k): float(v) for k, v in rel.get("edges", {}).items()}


def outcome(build_dirs: Sequence[Path]) -> dict[str, Any]:
    """What the schedule planned (its JSON) and what ninja did: every compile edge's start
    and seconds from .ninja_log, the longest edge's start, CPU-free wall figures. The
    per-edge times are what a later build of the release orders by."""
    out: dict[str, Any] = {}
    for d in build_dirs:
        plan = d / SCHEDULE_JSON
        if plan.is_file():
            try:
                out["plan"] = json.loads(plan.read_text())
            except ValueError:
                out["plan"] = {"error": f"unreadable {SCHEDULE_JSON}"}
        edges: dict[str, list[float]] = {}
        try:
            text = (d / ".ninja_log").read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) >= 4 and parts[0].isdigit() and parts[1].isdigit():
                key = _key(parts[3])
                if key.endswith(".o"):
                    edges[key] = [int(parts[0]) / 1000.0, (int(parts[1]) - int(parts[0])) / 1000.0]
        if edges:
            longest = max(edges, key=lambda k: edges[k][1])
            out["measured"] = {
                "compile_edges": len(edges),
                "edge_seconds": round(sum(v[1] for v in edges.values()), 1),
                "longest_edge": longest,
                "longest_edge_s": edges[longest][1],
                "longest_started_s": edges[longest][0],
                "span_s": round(max(v[0] + v[1] for v in edges.values()), 1),
                "edges": {k: round(v[1], 1) for k, v in sorted(edges.items())},
            }
    return out
