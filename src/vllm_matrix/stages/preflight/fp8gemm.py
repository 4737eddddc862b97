"""Which FP8 GEMM a release builds *and dispatches* for a GPU arch, read from its source.

ModelOpt FP8's linear layers call vLLM's ``cutlass_scaled_mm`` (ModelOptFp8LinearMethod ->
Fp8LinearOp, on CUTLASS where ``cutlass_scaled_mm_supports_fp8`` says cc >= 89/90).
Whether a model runs on an arch is therefore decided in three places of the release:

1. the dispatch in ``scaled_mm_entry.cu``: the first ``if (version_num ...)`` branch whose
   ``ENABLE_SCALED_MM_*`` guard is compiled in picks a ``cutlass_scaled_mm_smNN``
   (0.8.5: every cc >= 100 goes to ``cutlass_scaled_mm_sm100``; 0.9.x adds cc >= 120 ->
   ``cutlass_scaled_mm_sm120``);
2. the CMake that builds that function's sources, and for which arches
   (``cuda_archs_loose_intersection`` + ``set_gencode_flags_for_srcs``), evaluated by our
   CMake interpreter for the arch and an nvcc that reaches it;
3. the kernel's CUTLASS arch tag (``cutlass::arch::Sm100``) and the MMA that tag compiles
   to, which only some GPUs have (knowledge/data/fp8_gemm.toml): SM100's tcgen05 is not on
   sm_120, whose kernels compiled for 12.0a are empty.

The answer is a source scan; an audit of the built object (``cuobjdump --dump-sass`` MMA
census, stages/audit.py) deepens it (``confirm``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from vllm_matrix.infra import datafiles, tomlfile
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.errors import MatrixError

ENTRY = "scaled_mm_entry.cu"
QUANT_OPS = ("static_scaled_fp8_quant", "dynamic_scaled_fp8_quant")
SOURCE_SCAN = "source scan"
AUDITED = "audited object"

_FUNC = re.compile(r"^void\s+cutlass_scaled_mm\s*\(", re.M)
_GUARD = re.compile(r"#\s*if\s+defined\s*\(?\s*(ENABLE_\w+)")
_COND = re.compile(r"version_num\s*(>=|<=|==|<|>)\s*(\d+)")
_CALL = re.compile(r"\b(cutlass_scaled_mm_sm\w+)\s*\(")
_TAG = re.compile(r"cutlass::arch::(Sm\d+)\b")
_INCLUDE = re.compile(r'#\s*include\s+"([^"]+)"')


@dataclass(frozen=True)
class Tag:
    name: str
    archs: tuple[int, ...]  # exactly these capabilities
    start: int | None  # this capability and later
    mma: str
    source: str

    def runs_on(self, number: int) -> bool:
        return number in self.archs or (self.start is not None and number >= self.start)


@cache
def tags() -> dict[str, Tag]:
    doc = tomlfile.load(datafiles.data_path("fp8_gemm.toml"))
    tomlfile.check_keys(doc, doc.data, ("tag",), "the top level")
    out = {}
    for name, t in doc.data["tag"].items():
        tomlfile.check_keys(doc, t, ("archs", "from", "mma", "source"), f"[tag.{name}]")
        out[name] = Tag(
            name,
            tuple(int(x) for x in t.get("archs", ())),
            int(t["from"]) if "from" in t else None,
            tomlfile.require(doc, t, "mma", str, name),
            tomlfile.require(doc, t, "source", str, name),
        )
    return out


@dataclass(frozen=True)
class Branch:
    """One ``if (version_num ...) cutlass_scaled_mm_smNN(...)`` of the dispatch."""

    conds: tuple[tuple[str, int], ...]
    callee: str
    guard: str | None  # the ENABLE_* macro around it
    line: int

    def matches(self, number: int) -> bool:
        ops = {
            ">=": number.__ge__,
            "<=": number.__le__,
            "==": number.__eq__,
            "<": number.__lt__,
            ">": number.__gt__,
        }
        return all(ops[op](n) for op, n in self.conds)

    def text(self) -> str:
        lo = [n for op, n in self.conds if op == ">="]
        hi = [n for op, n in self.conds if op == "<"]
        eq = [n for op, n in self.conds if op == "=="]
        if eq:
            return f"cc {eq[0]}"
        if lo and hi:
            return f"cc {lo[0]}–{hi[0] - 1}"
        if lo:
            return f"cc ≥ {lo[0]}"
        return " && ".join(f"cc {op} {n}" for op, n in self.conds)


def dispatch(text: str) -> list[Branch]:
    """The branches of ``void cutlass_scaled_mm(...)`` in order (first match wins: each
    returns)."""
    m = _FUNC.search(text)
    if m is None:
        return []
    start = text.count("\n", 0, m.start())
    lines = text.splitlines()
    guards: list[str | None] = []
    out: list[Branch] = []
    pending: tuple[tuple[tuple[str, int], ...], int] | None = None
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.startswith("}"):
            break
        s = line.strip()
        g = _GUARD.match(s)
        if g:
            guards.append(g.group(1))
            continue
        if s.startswith("#if"):
            guards.append(None)
            continue
        if s.startswith("#endif") and guards:
            guards.pop()
            continue
        if s.startswith(("#else", "#elif")) and guards:
            guards[-1] = None
            continue
        conds = tuple((op, int(n)) for op, n in _COND.findall(s))
        if conds and re.search(r"\bif\s*\(", s):
            pending = (conds, i + 1)
        c = _CALL.search(s)
        if c and pending is not None:
            guard = next((x for x in reversed(guards) if x), None)
            out.append(Branch(pending[0], c.group(1), guard, pending[1]))
            pending = None
    return out


def _defining_file(tree: Path, func: str, near: Path, skip: Path) -> Path | None:
    """The .cu next to the entry (or below it) that defines ``func`` (has its body)."""
    pat = re.compile(rf"\b{re.escape(func)}\s*\(([^;{{]*)\)\s*\{{", re.S)
    for p in sorted(near.rglob("*.cu")):
        if p == skip:
            continue
        if func in (t := p.read_text(errors="replace")) and pat.search(t):
            return p
    return None


def _arch_tags(path: Path, depth: int = 2) -> set[str]:
    """CUTLASS arch tags in a source and the local headers it includes (``depth`` levels)."""
    found: set[str] = set()
    seen: set[Path] = set()
    todo = [(path, 0)]
    while todo:
        p, d = todo.pop()
        if p in seen or not p.is_file():
            continue
        seen.add(p)
        text = p.read_text(errors="replace")
        found |= set(_TAG.findall(text))
        if d < depth:
            todo += [((p.parent / inc).resolve(), d + 1) for inc in _INCLUDE.findall(text)]
    return found


@dataclass(frozen=True)
class Answer:
    """The ModelOpt FP8 column for one arch."""

    arch: str
    ok: bool | None  # None: no dispatch found (an old release: no answer)
    short: str
    evidence: tuple[str, ...]
    kernel_sources: tuple[str, ...] = ()
    depth: str = SOURCE_SCAN
    nvcc: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def column(self) -> str:
        return f"{self.short} [{self.depth}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "ok": self.ok,
            "short": self.short,
            "evidence": list(self.evidence),
            "kernel_sources": list(self.kernel_sources),
            "depth": self.depth,
            "nvcc": self.nvcc,
            "notes": list(self.notes),
        }


def _gate_line(tree: Path, var: str, sources: Sequence[str]) -> str | None:
    from vllm_matrix.stages.preflight import gates

    for g in gates.gates(tree):
        if g.var == var and set(g.sources) & set(sources):
            return f"{g.where} ({';'.join(g.archs)}, {g.needs()})"
    return None


def answer(tree: Path, arch: str, nvcc: str, model: Any) -> Answer:
    """The FP8 GEMM ``tree`` dispatches on ``arch`` when built with ``nvcc`` (full
    version) whose evaluated CMake is ``model`` (a BuildModel for that arch)."""
    target = Arch.parse(arch)
    number = target.number
    sm = f"sm_{number}"
    entries = sorted(tree.glob(f"csrc/**/{ENTRY}"))
    entries = [e for e in entries if "sparse" not in e.parts]
    if not entries:
        return Answer(arch, None, "unknown: no scaled_mm_entry.cu", (), nvcc=nvcc)
    entry = entries[0]
    rel_entry = entry.relative_to(tree).as_posix()
    branches = dispatch(entry.read_text(errors="replace"))
    if not branches:
        return Answer(arch, None, f"unknown: no dispatch in {rel_entry}", (), nvcc=nvcc)
    ev: list[str] = []
    notes: list[str] = []
    chosen = None
    for b in branches:
        if not b.matches(number):
            continue
        f = _defining_file(tree, b.callee, entry.parent, entry)
        fam = model.family_of(f.relative_to(tree).as_posix()) if f else None
        if fam is None:
            notes.append(
                f"{b.text()} → {b.callee} ({rel_entry}:{b.line}) is not compiled in "
                f"({b.guard or 'its sources'} not built for {sm} with nvcc {nvcc})"
            )
            continue
        chosen = (b, f, fam)
        break
    if chosen is None:
        msg = f"no: no cutlass_scaled_mm branch for cc {number} is built"
        return Answer(arch, False, msg, (rel_entry, *notes), nvcc=nvcc, notes=tuple(notes))
    b, f, fam = chosen
    assert f is not None
    rel_f = f.relative_to(tree).as_posix()
    where = _gate_line(tree, fam.arch_var, fam.sources) or fam.where
    kernels = [s for s in fam.sources if "fp8" in Path(s).name and s != rel_f] or [rel_f]
    found_tags: set[str] = set()
    for s in [rel_f, *kernels]:
        found_tags |= _arch_tags(tree / s)
    know = tags()
    # A kernel's headers also name other arches' tags (shared epilogues, templates for
    # several arches): the callee's own (cutlass_scaled_mm_sm100 -> Sm100) decides.
    own = "Sm" + b.callee.rsplit("_sm", 1)[-1]
    picked = [own] if own in found_tags else sorted(found_tags)
    known = [know[t] for t in picked if t in know]
    built = fam.built_for(number)  # the evaluator reads CMake's "90-real" spellings too
    route = f"{b.text()} → {b.callee} ({rel_entry}:{b.line})"
    kern = ", ".join(Path(k).name for k in kernels)
    ev += [route, f"{kern}: CUTLASS arch tag {'/'.join(picked) or 'none found'}"]
    ev.append(f"{fam.arch_var} built for {';'.join(fam.archs) or '-'} at {where}")
    runs = [t for t in known if t.runs_on(number)]
    ev += [f"{t.name}: {t.mma} ({t.source})" for t in known]
    ev += _quant_ops(tree, model, number)
    if not built:
        short = f"no: {route} is not built for {sm} ({fam.arch_var}: {';'.join(fam.archs)})"
        ok = False
    elif known and not runs:
        lacks = "; ".join(f"{t.name} {t.mma.split(' (')[0]}" for t in known)
        short = f"no: {b.text()} goes to {b.callee} ({lacks} kernels), which {sm} lacks"
        ok = False
    elif not known:
        short = f"unknown: {b.callee}'s kernels carry no known CUTLASS arch tag"
        ok = None
    else:
        short = f"yes: {b.callee} → {kern} ({'/'.join(t.name for t in runs)})"
        ok = True
    return Answer(
        arch,
        ok,
        short,
        tuple(ev + notes),
        tuple(kernels),
        nvcc=nvcc,
        notes=tuple(notes),
    )


def _quant_ops(tree: Path, model: Any, number: int) -> list[str]:
    """Where static/dynamic_scaled_fp8_quant are defined and whether built for the arch."""
    out = []
    for op in QUANT_OPS:
        pat = re.compile(rf"\bvoid\s+{op}\s*\(")
        hit = next(
            (
                p
                for p in sorted((tree / "csrc").rglob("*.cu"))
                if op in (t := p.read_text(errors="replace")) and pat.search(t)
            ),
            None,
        )
        if hit is None:
            out.append(f"{op}: not defined in csrc")
            continue
        rel = hit.relative_to(tree).as_posix()
        fam = model.family_of(rel)
        if fam is None:
            out.append(f"{op} ({rel}): not built")
        else:
            b = fam.built_for(number)
            state = f"built for {';'.join(b)}" if b else f"not built for sm_{number}"
            out.append(f"{op} ({rel}): {state} ({fam.name} at {fam.where})")
    return out


def confirm(ans: Answer, objects: Sequence[Mapping[str, Any]], machine: str) -> Answer:
    """Deepen ``ans`` with an audit's FP8 GEMM objects (audit details ``fp8_gemm_objects``:
    object name, SASS arches, MMA census per arch). A "yes" is confirmed by MMA
    instructions in the kernel object's SASS for the arch; a "no" by that SASS holding
    none (the kernel's body compiled away for an arch without its MMA)."""
    if ans.ok is None:
        return ans
    number = Arch.parse(ans.arch).number
    names = {Path(k).name + ".o" for k in ans.kernel_sources}
    seen = []
    for o in objects:
        if o.get("object") not in names:
            continue
        for a, ops in dict(o.get("mma", {})).items():
            if Arch.parse(a).number != number:
                continue
            mma = ", ".join(f"{k}×{v}" for k, v in sorted(dict(ops).items()))
            if bool(ops) != ans.ok:
                raise MatrixError(
                    f"the audit of {o['object']} ({Arch.parse(a).sm}: {mma or 'no MMA'}) "
                    f"contradicts the source scan's '{ans.short}'",
                    fix="report this: the dispatch reading in stages/preflight/fp8gemm.py is "
                    "wrong here",
                )
            seen.append(f"{o['object']} {Arch.parse(a).sm}: {mma or 'no MMA instruction'}")
    if not seen:
        return ans
    return replace(
        ans, depth=AUDITED, evidence=(*ans.evidence, f"audited on {machine}: {'; '.join(seen)}")
    )


def nvcc_for_scan(cell_cuda: str, arch: str, know: Any) -> tuple[str, str | None]:
    """The nvcc whose CMake branch the answer evaluates, and why it is not the cell's:
    the cell's if it reaches the arch, else the oldest known one that does. A full version
    with a non-zero patch (every released nvcc X.Y reports X.Y.<build>), so that CMake's
    ``VERSION_GREATER 12.8`` holds for 12.8 as it does for a real 12.8 install."""
    mm = ".".join(cell_cuda.split(".")[:2])
    nv = know.nvcc_for(mm)
    if nv is None or not nv.can_target(Arch.parse(arch).base.name):
        alt = know.min_nvcc_for(Arch.parse(arch).base.name)
        if alt is not None:
            return f"{alt}.1", f"nvcc {mm} cannot target sm_{Arch.parse(arch).number}"
    return f"{mm}.1", None


__all__ = ["AUDITED", "SOURCE_SCAN", "Answer", "Branch", "answer", "confirm", "dispatch", "tags"]
