"""The front end of several CUDA units in one translation unit.

cudafe++ spends almost all of a unit's front end in torch's headers, which every unit
includes (nvcc 12.4, 2 cores: ~20 s for one unit, ~24 s for a file that #includes six), so
units whose front-end commands (host ``gcc -E``, ``cudafe++``) are the same but for the
source run once, on a generated file of absolute ``#include``s. Their own ``-D`` flags may
differ (``TORCH_EXTENSION_NAME``, ``<target>_EXPORTS``): each unit's are ``#define``d
before its ``#include`` and ``#undef``ed after it.

That is sound only where no unit changes what another one sees, and headers are read once
(include guards). Before the file is made, from the units' in-tree include closures
(includes.py): a macro that a file of one unit's closure #defines (or #undefs), and that the
other unit's closure does not hold, named in a file of another unit's closure that the first
does not reach (``cuda_compat.h``'s ``WARP_SIZE`` against a kernel's own ``constexpr int
WARP_SIZE``), makes those two units conflict. After the file's ``gcc -E``, every macro that
differs between the units, or that a unit's own file defines, is looked for in every file
the translation unit read other than the units' own; where one is found, the group splits by
that macro's values (a differing flag); a unit's own macro named in a header outside its own
closure, or in one another member's closure holds too, makes the unit run alone. Conflicting
units (the closures' check) go to different translation units (a greedy colouring, the
fewest members first), each checked again. A macro that gcc -E finds redefined (two units'
headers define it) makes every unit run alone. A pass of the file is a pass of each unit's
front end. A failure (or a clash only the shared file has: two units defining the same
function) hands the units back to run one by one, as without grouping, so a failing unit's
verdict, label and first error are its own.

Not checked: macros of headers outside the tree (torch's, CUTLASS's) that a unit's own
files name; the order within one unit (a unit whose file names a macro before it includes
the header that defines it, which an earlier unit of the file has already read); a unit
that compiles only because an earlier unit of the file included a header it needs but does
not include itself (its real compile would fail on the missing declaration). Released units
compile alone with their pinned torch; the probe's question is a different torch, whose
headers are shared by every unit of the file either way.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vllm_matrix.stages.probe import frontcache
from vllm_matrix.stages.probe.dryrun import Step
from vllm_matrix.stages.probe.files import read_text
from vllm_matrix.stages.probe.runner import UnitResult, UnitRunner, cached_step
from vllm_matrix.stages.probe.units import Unit

FRONT_END_PHASES = ("host-preprocess", "front-end")


@dataclass
class Plan:
    """One CUDA unit's front end, as nvcc --dryrun gave it."""

    path: Path  # the unit's source, absolute
    steps: tuple[Step, ...]  # up to and including cudafe++
    env: tuple[tuple[str, str], ...]
    own: dict[str, str]  # the unit's own -D flags: name -> value ("1" for -DNAME)
    defines: dict[str, str]  # every -D of its host gcc -E (nvcc's own too)
    base: str  # the front-end commands without the source, its outputs and the -D flags
    macros: tuple[str, ...] = ()  # macros the unit's own file #defines or #undefs
    closure: frozenset[Path] = frozenset()  # the in-tree files it may include (includes.py)

    def key(self, split: Iterable[str]) -> tuple[str, tuple[tuple[str, str | None], ...]]:
        return (self.base, tuple((n, self.defines.get(n)) for n in sorted(split)))


@dataclass
class Group:
    """Units whose front ends run as one translation unit (``plans`` holds two or more)."""

    plans: list[Plan]
    split: frozenset[str] = field(default_factory=frozenset)

    def varying(self) -> list[str]:
        """Macros the units' own flags set differently (absent counts as different)."""
        names = sorted({n for p in self.plans for n in p.own})
        return [n for n in names if len({p.defines.get(n) for p in self.plans}) > 1]

    def flags(self, unit_flags: Sequence[str]) -> list[str]:
        """A member's nvcc flags without the -D flags the members set differently."""
        return drop_defines(unit_flags, set(self.varying()))

    def source(self) -> str:
        """The generated file: each unit's differing macros around its #include."""
        vary = self.varying()
        out = [
            f"// vllm-matrix probe: the front end of {len(self.plans)} units in one "
            "translation unit (stages/probe/unity.py)"
        ]
        for p in self.plans:
            mine = [(n, p.defines[n]) for n in vary if n in p.defines]
            out += [f"#define {n} {v}" for n, v in mine]
            out.append(f'#include "{p.path}"')
            out += [f"#undef {n}" for n in dict.fromkeys([*(n for n, _ in mine), *p.macros])]
        return "\n".join(out) + "\n"

    def name(self, tree: Path) -> str:
        """A name from the file's text, the tree's path left out: the same units with the
        same macros, the same name in every cell (the front-end cache keys on it too)."""
        text = self.source().replace(str(tree), "<tree>")
        return f"unity-{len(self.plans)}-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_defines(argv: Sequence[str]) -> tuple[list[str], dict[str, str], bool]:
    """(argv without its -D flags, name -> value of them, whether they are plain: no -U and
    no name defined twice, so their order does not matter)."""
    rest: list[str] = []
    defs: dict[str, str] = {}
    plain = True
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-D", "-U") and i + 1 < len(argv):
            a, i = a + argv[i + 1], i + 1
        if a.startswith("-U"):
            plain = False
            rest.append(a)
        elif a.startswith("-D") and len(a) > 2:
            name, _, value = a[2:].partition("=")
            if name in defs:
                plain = False
            defs[name] = value if "=" in a else "1"
        else:
            rest.append(a)
        i += 1
    return rest, defs, plain


def drop_defines(argv: Sequence[str], names: set[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        a, n = argv[i], 1
        if a == "-D" and i + 1 < len(argv):
            a, n = "-D" + argv[i + 1], 2
        if not (a.startswith("-D") and a[2:].partition("=")[0] in names):
            out += argv[i : i + n]
        i += n
    return out


_DEFINE = re.compile(r"^[ \t]*#[ \t]*(?:define|undef)[ \t]+([A-Za-z_]\w*)", re.M)


def file_macros(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_DEFINE.findall(text)))


def plan(
    path: Path,
    keep: Path,
    unit_flags: Sequence[str],
    steps: Sequence[Step],
    env: dict[str, str],
    closure: Iterable[Path] = (),
) -> Plan | None:
    """The unit's front end as a Plan; None where it cannot share a translation unit (its
    pipeline does not start with gcc -E then cudafe++, or its -D flags are not plain)."""
    fe = [s for s in steps[:2] if s.phase in FRONT_END_PHASES]
    if [s.phase for s in fe] != list(FRONT_END_PHASES):
        return None
    _, own, own_plain = parse_defines(unit_flags)
    rest, defines, plain = parse_defines(fe[0].argv)
    macros = file_macros(read_text(path))
    # a unit that redefines (or undefines) a command-line macro would change it for the
    # units after it
    if not (plain and own_plain) or set(macros) & set(defines):
        return None
    stem = re.escape(path.name.rsplit(".", 1)[0])

    def norm(a: str) -> str:
        a = a.replace(str(path), "<src>").replace(str(keep), "<keep>")
        return re.sub(rf"(^|/){stem}\.", r"\1<stem>.", a)

    base = "\0".join([*map(norm, rest), "\n", *map(norm, fe[1].argv)])
    return Plan(
        path,
        tuple(fe),
        tuple(sorted(env.items())),
        own,
        defines,
        base + "\n" + repr(sorted(env.items())),
        macros,
        frozenset(Path(os.path.normpath(f)) for f in closure),
    )


def groups(plans: Sequence[Plan], split: Iterable[str] = ()) -> list[list[Plan]]:
    """Plans whose front ends can share a translation unit, in their order: the same
    commands but for the source and the -D flags; a macro that differs between members but
    is not their own flag (nvcc's ``__CUDA_ARCH_LIST__``), or is in ``split``, separates."""
    split_set = set(split)
    while True:
        buckets: dict[tuple[str, tuple[tuple[str, str | None], ...]], list[Plan]] = {}
        for p in plans:
            buckets.setdefault(p.key(split_set), []).append(p)
        more = set()
        for ps in buckets.values():
            names = {n for p in ps for n in p.defines}
            for n in names - split_set:
                if len({p.defines.get(n) for p in ps}) > 1 and not all(
                    n in p.own for p in ps if n in p.defines
                ):
                    more.add(n)
        if not more:
            return list(buckets.values())
        split_set |= more


_REDEFINED = re.compile(r'warning: "(\w+)" redefined')
_MARKER = re.compile(rb'^# \d+ "([^"]+)"', re.M)


def files_read(ii: Path, cwd: Path) -> list[Path]:
    """The files a preprocessed translation unit was made of (its line markers; relative
    ones from the compiler's working directory)."""
    names = dict.fromkeys(
        m.group(1).decode(errors="replace") for m in _MARKER.finditer(ii.read_bytes())
    )
    paths = dict.fromkeys(Path(os.path.normpath(cwd / f)) for f in names if not f.startswith("<"))
    return [p for p in paths if p.is_file()]


Pair = frozenset[Path]  # two units' sources that may not share a translation unit


def clashes(g: Group, files: Sequence[Path]) -> tuple[set[str], set[Path]]:
    """What makes the shared file unsound: the differing flag macros that a file other than
    the units' own mentions; the units whose own file's macros a header outside their own
    include closure, or in another member's closure too, mentions."""
    own_files = {p.path for p in g.plans}
    vary = set(g.varying())
    by_macro: dict[str, list[Plan]] = {}
    for p in g.plans:
        for m in p.macros:
            by_macro.setdefault(m, []).append(p)
    names = vary | set(by_macro)
    bad: set[str] = set()
    lone: set[Path] = set()
    if not names:
        return bad, lone
    pattern = re.compile(
        rb"\b(" + b"|".join(re.escape(n.encode()) for n in sorted(names)) + rb")\b"
    )
    for f in files:
        if f in own_files:
            continue
        try:
            data = f.read_bytes()
        except OSError:
            continue
        for name in {m.decode() for m in pattern.findall(data)}:
            if name in vary:
                bad.add(name)
            for p in by_macro.get(name, ()):
                # Alone, not merely apart from those others: the closures are static and
                # may miss a header a unit really reaches. Coloured into another group,
                # 0.20.0's nvfp4_kv_cache_kernels.cu (its own NVFP4_ENABLE_ELTS16 before
                # nvfp4_utils.cuh) failed beside layernorm_quant_kernels.cu, which no
                # closure showed reaching that header (fresh run, 2026-12-07).
                others = [q.path for q in g.plans if q is not p and f in q.closure]
                if f not in p.closure or others:
                    lone.add(p.path)
    return bad, lone


_IDENT = re.compile(r"[A-Za-z_]\w*")


def _stamp(path: Path) -> tuple[Path, int, int]:
    """The path with its mtime and size: a tree patched in place is read again."""
    try:
        st = path.stat()
    except OSError:
        return path, 0, -1
    return path, st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8192)
def _words(stamp: tuple[Path, int, int]) -> tuple[frozenset[str], frozenset[str]]:
    """(the macros the file #defines or #undefs, every identifier-like word it holds)."""
    text = read_text(stamp[0])
    return frozenset(file_macros(text)), frozenset(_IDENT.findall(text))


def _defined_in(path: Path) -> frozenset[str]:
    return _words(_stamp(path))[0]


def _named_in(path: Path) -> frozenset[str]:
    return _words(_stamp(path))[1]


def closure_conflicts(plans: Sequence[Plan]) -> set[Pair]:
    """Pairs of units where a header of one's include closure that the other's does not hold
    #defines (or #undefs) a macro that a file of the other's closure, one the first does
    not reach, names: in one translation unit the macro would reach the other unit's code
    (``#define WARP_SIZE 32`` against ``static constexpr int WARP_SIZE = 32;``). In-tree
    files only, by regex: comments count, conditionals are not evaluated (more splits, never
    fewer)."""
    out: set[Pair] = set()
    for p in plans:
        for q in plans:
            pair = frozenset((p.path, q.path))
            if p is q or pair in out:
                continue
            # the unit's own file's macros are #undef'd after it (Group.source): clashes()
            mine = frozenset().union(*(_defined_in(f) for f in p.closure - q.closure - {p.path}))
            if mine and any(mine & _named_in(f) for f in q.closure - p.closure):
                out.add(pair)
    return out


def colour(plans: Sequence[Plan], conflicts: set[Pair]) -> list[list[Plan]]:
    """``plans`` in classes that hold no conflicting pair: greedily, the units with the most
    conflicts first, each into the smallest class it fits (classes of like size for the
    workers), a new class only where none fits. Input order kept within and between
    classes; no conflicts: one class."""
    pos = {id(p): i for i, p in enumerate(plans)}
    degree = {id(p): sum(p.path in c for c in conflicts) for p in plans}
    classes: list[list[Plan]] = []
    for p in sorted(plans, key=lambda p: -degree[id(p)]):
        fits = [c for c in classes if all(frozenset((p.path, q.path)) not in conflicts for q in c)]
        if fits:
            min(fits, key=len).append(p)
        else:
            classes.append([p])
    for c in classes:
        c.sort(key=lambda p: pos[id(p)])
    return sorted(classes, key=lambda c: pos[id(c[0])])


# ==================================================================== running


Item = tuple[UnitRunner, UnitResult]


@dataclass
class Job:
    """What a worker runs: one unit alone, or a group's units in one translation unit."""

    items: list[Item]
    group: Group | None = None

    def label(self) -> str:
        first = Path(self.items[0][0].u.path).name
        return first if self.group is None else f"{first} +{len(self.items) - 1} in one TU"


def jobs_for(
    items: Sequence[Item],
    plans: dict[int, Plan],
    split: Iterable[str] = (),
) -> list[Job]:
    """Jobs for ``items`` (in their order): a group for units whose ``plans`` share a
    front end, apart where they conflict (closure_conflicts), the rest alone."""
    by_path = {id(p): it for it in items if (p := plans.get(id(it[0]))) is not None}
    planned = [plans[id(it[0])] for it in items if id(it[0]) in plans]
    grouped: dict[Path, Job] = {}
    for bucket in groups(planned, split):
        if len(bucket) < 2:
            continue
        for ps in colour(bucket, closure_conflicts(bucket)):
            if len(ps) > 1:
                g = Job([by_path[id(p)] for p in ps], Group(ps, frozenset(split)))
                for p in ps:
                    grouped[p.path] = g
    out: list[Job] = []
    for it in items:
        p = plans.get(id(it[0]))
        job = grouped.get(p.path) if p is not None else None
        if job is None:
            out.append(Job([it]))
        elif not any(j is job for j in out):
            out.append(job)
    return out


def run_group(job: Job, plans: dict[int, Plan]) -> list[Job] | None:
    """The group's front end in one translation unit. None: every unit has its result;
    else the jobs that replace this one (split where the shared file would be unsound,
    or each unit alone after a failure)."""
    g = job.group
    assert g is not None
    rep = job.items[0][0]
    name = g.name(rep.tree)
    path = rep.work / "unity" / f"{name}.cu"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(g.source())
    unit = Unit(
        f"unity/{name}.cu",
        "the front end of " + ", ".join(it[0].u.path for it in job.items),
        "cuda",
    )
    r = UnitRunner(unit, g.flags(rep.flags), rep.tree, rep.tk, rep.env, rep.work, rep.timeout_s)
    r.source, r.fe_cache = path, rep.fe_cache
    r.log.parent.mkdir(parents=True, exist_ok=True)
    r.log.write_text(
        f"# the front end of {len(job.items)} units in one translation unit ({path.name}):\n"
        + "".join(f"#   {it[0].u.path}\n" for it in job.items)
    )
    res = UnitResult(unit)
    alone = [Job([it]) for it in job.items]
    steps, nvcc_env = r.dryrun(r.flags)
    fe = [s for s in steps[:2] if s.phase in FRONT_END_PHASES]
    if [s.phase for s in fe] != list(FRONT_END_PHASES):
        return alone
    env = dict(r.env)
    env.update(nvcc_env)
    if not r.exec_step(fe[0].phase, fe[0].argv, env, res):
        return _unfinished(job, res, alone)
    ii = frontcache.preprocessed_input(fe[1].argv)
    if ii is None:
        return alone
    bad, lone = clashes(g, [f for f in files_read(ii, r.work) if f != path])
    if bad or lone:
        with r.log.open("a") as f:
            f.write(
                "# unsound as one translation unit: "
                + "; ".join(
                    [f"{', '.join(sorted(bad))} differ and headers use them"] * bool(bad)
                    + [f"{', '.join(p.name for p in sorted(lone))} define macros headers use"]
                    * bool(lone)
                )
                + "\n"
            )
        rest = [it for it in job.items if plans[id(it[0])].path not in lone]
        return [Job([it]) for it in job.items if it not in rest] + jobs_for(
            rest, plans, g.split | bad
        )
    # two units' headers defining one macro differently: what the later unit sees is no
    # longer what it sees alone
    redefined = sorted(set(_REDEFINED.findall(read_text(r.log))))
    if redefined:
        with r.log.open("a") as f:
            f.write(f"# unsound as one translation unit: {', '.join(redefined)} redefined\n")
        return alone
    key = None
    if r.fe_cache is not None:
        key = r.fe_cache.key(fe[1].argv, r.roots())
        if key is not None and r.fe_cache.passed(key):
            res.front_end_cache = "hit"
            res.steps.append(cached_step("main", "front-end", "cudafe++"))
        else:
            res.front_end_cache = "miss" if key is not None else ""
    if res.front_end_cache != "hit":
        t0 = res.seconds
        if not r.exec_step(fe[1].phase, fe[1].argv, env, res):
            return _unfinished(job, res, alone)
        if key is not None and r.fe_cache is not None:
            r.fe_cache.store(key, unit.path, res.seconds - t0)
    _passed(job, r, res)
    return None


def _unfinished(job: Job, res: UnitResult, alone: list[Job]) -> list[Job] | None:
    """The shared front end did not pass: each unit alone (Ctrl-C: none)."""
    if res.status == "interrupted":
        for _, m in job.items:
            m.status, m.note = res.status, res.note
        return None
    how = "timed out" if res.status == "timeout" else "failed"
    for _, m in job.items:
        m.note = f"front end checked alone: one translation unit with {len(job.items)} units {how}"
        m.cpu_s += res.cpu_s / len(job.items)  # the shared attempt's CPU, shared out
    return alone


def _passed(job: Job, r: UnitRunner, res: UnitResult) -> None:
    n = len(job.items)
    words = f"front end checked in one translation unit with {n} units"
    for mr, m in job.items:
        m.status, m.depth = "pass", "front-end"
        m.seconds += res.seconds / n
        m.front_end_s += res.front_end_s
        m.cpu_s += res.cpu_s / n
        m.front_end_cpu_s += res.front_end_cpu_s
        m.front_end_cache = res.front_end_cache
        m.front_end_group = {"units": n, "seconds": round(res.seconds, 1), "log": str(r.log)}
        m.steps += [
            {
                **s,
                "seconds": round(s["seconds"] / n, 1),
                "cpu_seconds": round(s["cpu_seconds"] / n, 1),
                "units": n,
            }
            for s in res.steps
        ]
        m.note = words if not m.note else f"{m.note}; {words}"
        with mr.log.open("a") as f:
            f.write(f"# {words}: {r.log}\n")
