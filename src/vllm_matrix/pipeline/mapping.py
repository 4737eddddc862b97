"""The map: every cell of matrix.toml's [grid] at preflight depth, then probes where the
verdict changes between neighbouring releases or torch versions, within a time budget.

Speed: a release's facts (source facts, every known torch-API use, the arch-gated kernel
families) are read once and cached under the cache dir, keyed by the release's sdist
sha256 and by the code and data that read them; a warm map reads no source tree at all.
The preflight rules then run per cell on those facts (milliseconds).

The host compiler is left out of the map's preflight (a host gcc newer than nvcc accepts is
this machine's problem, fixed by installing an older gcc, not the cell's); whether the
cell's toolkit can be had *here* is kept beside the verdict (``here``): it decides which
cells this machine can probe, not whether the combination builds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from packaging.version import Version

from vllm_matrix import cmake as cmake_pkg
from vllm_matrix.infra import datafiles, results
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.cache import atomic_write_text, cache_root, locked
from vllm_matrix.infra.config import Cell, Matrix
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import StageResult, Verdict
from vllm_matrix.knowledge import toolchains
from vllm_matrix.knowledge.toolchains import Knowledge
from vllm_matrix.pipeline import advice
from vllm_matrix.pipeline import grid as grid_mod
from vllm_matrix.sources import releases
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import facts as facts_mod
from vllm_matrix.stages import preflight
from vllm_matrix.stages.facts import (
    ArchRule,
    External,
    Gap,
    ModelOptFacts,
    SourceFacts,
    TorchPin,
)
from vllm_matrix.stages.preflight import apiscan, gates

SCHEMA = "vllm-matrix/map"
SCHEMA_VERSION = 1
FACTS_SCHEMA = 2  # 2: SourceFacts.gaps
OK_VERDICTS = (Verdict.PASS, Verdict.PREFLIGHT_OK)
BAD_VERDICTS = (Verdict.FAIL, Verdict.PREDICTED_FAIL)
PROBE_COST_S = 200.0  # a probe on 2 shared cores (reports/bench: 195-216 s)


# ------------------------------------------------------------------- release facts cache


@dataclass(frozen=True)
class ReleaseFacts:
    version: str
    sha256: str
    unpacked: Path | None = field(compare=False)  # the sdist's tree when this run has it
    facts: SourceFacts
    hits: tuple[apiscan.ApiHit, ...]  # every use of every known torch API symbol
    gates: tuple[gates.Gate, ...]
    cache: Path | None = field(default=None, compare=False, repr=False)  # the cache root

    @property
    def tree(self) -> Path:
        """The unpacked sdist, fetched on first use: the facts, hits and gates need none
        (a release advised on from the snapshot or the cache downloads nothing)."""
        if self.unpacked is None:
            object.__setattr__(self, "unpacked", source.sdist_tree(self.version, self.cache).root)
        assert self.unpacked is not None
        return self.unpacked

    def scan(self, symbols: tuple[toolchains.ApiSymbol, ...]) -> list[apiscan.ApiHit]:
        names = {s.name for s in symbols}
        return [h for h in self.hits if h.symbol.name in names]


def _code_digest(know: Knowledge) -> str:
    """What the cached facts depend on besides the sdist: the readers and the API list."""
    h = hashlib.sha256(str(FACTS_SCHEMA).encode())
    for mod in (facts_mod, apiscan, gates):
        h.update(Path(str(mod.__file__)).read_bytes())
    for path in sorted(Path(str(cmake_pkg.__file__)).parent.glob("*.py")):  # the evaluator
        h.update(path.read_bytes())
    h.update(repr(know.api).encode())
    return h.hexdigest()[:16]


def _facts_from_json(d: dict[str, Any]) -> SourceFacts:
    return SourceFacts(
        vllm=d["vllm"],
        torch=d["torch"],
        torch_evidence=d["torch_evidence"],
        cutlass=d["cutlass"],
        external=tuple(External(**e) for e in d["external"]),
        cuda_archs=tuple(
            ArchRule(r["min_nvcc"], tuple(r["archs"]), r["line"]) for r in d["cuda_archs"]
        ),
        python=tuple(d["python"]),
        requires_python=d["requires_python"],
        cmake=d["cmake"],
        modelopt=ModelOptFacts(**d["modelopt"]),
        torch_pins=tuple(TorchPin(**p) for p in d["torch_pins"]),
        python_evidence=d["python_evidence"],
        requires_python_evidence=d["requires_python_evidence"],
        cmake_evidence=d["cmake_evidence"],
        gaps=tuple(Gap(**g) for g in d.get("gaps", ())),
    )


def _entry(rf: ReleaseFacts) -> dict[str, Any]:
    """A release's facts as JSON (a cache file's and a snapshot entry's body; no path)."""
    return {
        "sha256": rf.sha256,
        "facts": dataclasses.asdict(rf.facts),
        "hits": [
            {"symbol": h.symbol.name, "file": h.file, "line": h.line, "text": h.text}
            for h in rf.hits
        ],
        "gates": [dataclasses.asdict(g) for g in rf.gates],
    }


def _from_entry(version: str, d: dict[str, Any], know: Knowledge, root: Path) -> ReleaseFacts:
    symbols = {s.name: s for s in know.api}
    return ReleaseFacts(
        version,
        d["sha256"],
        None,  # the tree, when something reads it (ReleaseFacts.tree)
        _facts_from_json(d["facts"]),
        tuple(
            apiscan.ApiHit(symbols[h["symbol"]], h["file"], h["line"], h["text"]) for h in d["hits"]
        ),
        tuple(
            gates.Gate(
                g["var"], tuple(g["archs"]), g["op"], g["nvcc"], tuple(g["sources"]), g["line"]
            )
            for g in d["gates"]
        ),
        root,
    )


# The committed snapshot: every release's facts, generated by `inv derive-facts`, so that
# the advice (which asks about ~40 other releases) reads no sdist on a fresh machine.
SNAPSHOT = "release_facts.json"
SNAPSHOT_SCHEMA = "vllm-matrix/release-facts"
DERIVE = "inv derive-facts --write"  # (python -m vllm_matrix derive-facts --write)


def snapshot_path() -> Path:
    return datafiles.data_path(SNAPSHOT)


@cache
def _snapshot(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if d.get("schema") == SNAPSHOT_SCHEMA else {}
    except (OSError, ValueError, AttributeError):
        return {}


def snapshot_entry(version: str, sha256: str, digest: str) -> dict[str, Any] | None:
    """The committed facts of ``version`` when the same readers (``digest``) read the same
    sdist (``sha256``, the index's) to make them; else None (the sdist is read)."""
    d = _snapshot(snapshot_path())
    if d.get("facts_schema") != FACTS_SCHEMA or d.get("code") != digest:
        return None
    e = d.get("releases", {}).get(version)
    return e if isinstance(e, dict) and e.get("sha256") == sha256 else None


def render_snapshot(rfs: Iterable[ReleaseFacts], know: Knowledge) -> str:
    """The snapshot's text: one release a line (oldest first), so a re-derive diffs by release;
    stamped with the digest of the readers that read them (this code's)."""
    rows = sorted(rfs, key=lambda rf: Version(rf.version))
    head = {
        "schema": SNAPSHOT_SCHEMA,
        "generated": f"by `{DERIVE}` from each release's sdist (facts, apiscan, gates readers); "
        "do not edit by hand",
        "facts_schema": FACTS_SCHEMA,
        "code": _code_digest(know),
    }
    lines = ["{"]
    lines += [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    lines.append(' "releases": {')
    lines += [
        f"  {json.dumps(rf.version)}: "
        + json.dumps(_entry(rf), ensure_ascii=False, separators=(",", ":"))
        + ("," if i < len(rows) - 1 else "")
        for i, rf in enumerate(rows)
    ]
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def release_facts(version: str, know: Knowledge, root: Path | None = None) -> ReleaseFacts:
    """The release's facts: from this machine's cache, else from the committed snapshot,
    when the same sdist (the index's sha256) and readers made them; else read from its
    sdist (and cached). Only ``.tree`` of the answer needs the sdist."""
    root = root or cache_root()
    sd = source.resolve_sdist(version, root)
    digest = _code_digest(know)
    path = root / "facts" / f"vllm-{version}-{sd.sha256[:16]}.json"

    def cached() -> ReleaseFacts | None:
        if path.is_file():
            try:
                d = json.loads(path.read_text())
                if d["schema"] == FACTS_SCHEMA and d["code"] == digest and d["sha256"] == sd.sha256:
                    return _from_entry(version, d, know, root)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # stale or damaged: read the tree again
        return None

    got = cached()
    if got is not None:
        return got
    snap = snapshot_entry(version, sd.sha256, digest)
    if snap is not None:
        try:
            return _from_entry(version, snap, know, root)
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry: read the tree
    # One reader per release at a time (a background prefetch and the stage, or two runs):
    # the second waits, then reads what the first wrote.
    with locked(path):
        got = cached()
        if got is not None:
            return got
        return read_release(version, know, root)


def read_release(version: str, know: Knowledge, root: Path | None = None) -> ReleaseFacts:
    """The release's facts read from its sdist's tree (written to this machine's cache)."""
    root = root or cache_root()
    tree = source.sdist_tree(version, root)
    sha256 = source.resolve_sdist(version, root).sha256
    f = facts_mod.read_facts(tree.root, tree.version)
    hits = tuple(apiscan.scan(tree.root, know.api))
    gs = gates.gates(tree.root)
    rf = ReleaseFacts(version, sha256, tree.root, f, hits, gs, root)
    path = root / "facts" / f"vllm-{version}-{sha256[:16]}.json"
    # "tree": this machine's path, for readers of the cache file before it was lazy
    d = {"schema": FACTS_SCHEMA, "code": _code_digest(know), "tree": str(tree.root)}
    atomic_write_text(path, json.dumps(d | _entry(rf)))
    return rf


# ------------------------------------------------------------------------ map cells


@dataclass(frozen=True)
class MapCell:
    cell: Cell
    verdict: str
    depth: str
    cause: str
    fix: str
    evidence: tuple[str, ...]
    warn: bool  # PREFLIGHT-OK/PASS with warnings (off the pin, older nvcc than torch's)
    here: str  # "" when this machine can supply the toolkit; else why not
    rules: tuple[str, ...]  # the rules that decided a predicted failure

    @property
    def ok(self) -> bool:
        return self.verdict in OK_VERDICTS

    @property
    def bad(self) -> bool:
        return self.verdict in BAD_VERDICTS

    def to_json(self) -> dict[str, Any]:
        c = self.cell
        return {
            "id": c.id,
            "vllm": c.vllm,
            "torch": c.torch,
            "cuda": c.cuda,
            "provider": c.provider,
            "python": c.python,
            "arch": Arch.parse(c.arch[0]).tag,
            "verdict": self.verdict,
            "depth": self.depth,
            "warn": self.warn,
            "cause": self.cause,
            "fix": self.fix,
            "evidence": list(self.evidence),
            "here": self.here,
            "rules": list(self.rules),
        }


def preflight_cell(
    cell: Cell,
    rf: ReleaseFacts,
    know: Knowledge,
    host: preflight.Host,
    pin: dict[str, str],
    adviser: advice.Adviser | None = None,
) -> MapCell:
    """``adviser``: a predicted failure's fix is the one advice (pipeline/advice.py), as
    in compat.md and every command; without one, the rules' own fixes."""
    found = preflight.check(
        cell, rf.facts, know, None, host, pin, scan=rf.scan, kernel_gates=rf.gates
    )
    here = next(
        (
            f.message.removeprefix(preflight.NOT_HERE)
            for f in found
            if f.rule == "toolkit-obtainable"
        ),
        "",
    )
    found = [f for f in found if f.rule != "toolkit-obtainable"]
    status = preflight.status_of(found)
    details: dict[str, Any] = {}
    if status == results.PREDICTED_FAIL and adviser is not None:
        have = advice.Have(cell.torch, cell.cuda, cell.arch, cell.python, cell.vllm)
        details["advice"] = adviser.advise(have).to_json()
    stage = StageResult(
        "preflight", status, 0.0, preflight.summary_of(found), tuple(found), details
    )
    v = results.verdict_of([stage])
    rules = tuple(dict.fromkeys(f.rule for f in found if f.level == "fail"))
    warn = any(f.level == "warn" for f in found)
    return MapCell(cell, v.verdict, v.depth, v.cause, v.fix, v.evidence, warn, here, rules)


def _from_result(mc: MapCell, d: Mapping[str, Any]) -> MapCell:
    """A deeper run's verdict (probe/build) for the same cell outranks the prediction."""
    v = d.get("verdict", {})
    if v.get("depth") not in results.COMPILED:
        return mc
    return dataclasses.replace(
        mc,
        verdict=v["verdict"],
        depth=v["depth"],
        cause=v.get("cause", ""),
        fix=v.get("fix", ""),
        evidence=tuple(v.get("evidence", ())),
        warn=bool(v.get("cause")) and v["verdict"] == Verdict.PASS,
    )


def deeper_results(results_dir: Path, cells: Iterable[Cell]) -> dict[str, results.Envelope]:
    out = {}
    for c in cells:
        p = results_dir / f"{c.id}.json"
        if p.is_file():
            try:
                out[c.id] = results.read(p)
            except (OSError, ValueError, KeyError):
                continue
    return out


def preflight_all(
    cells: tuple[Cell, ...],
    know: Knowledge | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[MapCell]:
    """Every cell at preflight depth; each release's facts read (or loaded) once."""
    know = know or toolchains.load()
    real = preflight.detect_host()
    host = preflight.Host(None, real.system_cuda, real.conda_prefix)
    pin = releases.pinned()
    out = []
    rfs: dict[str, ReleaseFacts] = {}

    def facts_of(v: str) -> ReleaseFacts:
        if v not in rfs:
            rfs[v] = release_facts(v, know)
        return rfs[v]

    adviser = advice.Adviser(know=know, pinned=pin, facts=facts_of)
    for c in cells:
        rf = rfs.get(c.vllm)
        if rf is None:
            if c.source is not None:
                raise MatrixError(
                    f"grid cell {c.id} has a source ({c.source}); the map reads releases only",
                    fix="drop source from the explicit cell, or keep it out of the grid",
                )
            rf = rfs[c.vllm] = release_facts(c.vllm, know)
            if echo:
                echo(f"facts {c.vllm}")
        out.append(preflight_cell(c, rf, know, host, pin, adviser))
    return out


# --------------------------------------------------------------------- boundaries


@dataclass(frozen=True)
class Boundary:
    """Two neighbouring cells of one table whose verdicts disagree (ok vs failing)."""

    ok: MapCell
    bad: MapCell
    axis: str  # "vllm" (neighbouring releases) or "torch" (neighbouring torch builds)

    @property
    def key(self) -> str:
        return f"{self.ok.cell.id}|{self.bad.cell.id}"

    def confirmed(self) -> bool:
        return (
            self.ok.depth in results.COMPILED
            and self.ok.verdict == Verdict.PASS
            and (self.bad.depth in results.COMPILED and self.bad.verdict == Verdict.FAIL)
        )


def table_key(c: Cell) -> tuple[str, str, str]:
    return (c.cuda, c.provider, c.arch[0])


def boundaries(cells: list[MapCell]) -> list[Boundary]:
    by_table: dict[tuple[str, str, str], dict[tuple[str, str], MapCell]] = {}
    for mc in cells:
        by_table.setdefault(table_key(mc.cell), {})[(mc.cell.vllm, mc.cell.torch)] = mc
    out = []
    for grid in by_table.values():
        rows = sorted({v for v, _ in grid}, key=Version)
        cols = sorted({t for _, t in grid}, key=Version)
        for i, v in enumerate(rows):
            for j, t in enumerate(cols):
                a = grid.get((v, t))
                if a is None:
                    continue
                for nb, axis in (
                    (grid.get((rows[i + 1], t)) if i + 1 < len(rows) else None, "vllm"),
                    (grid.get((v, cols[j + 1])) if j + 1 < len(cols) else None, "torch"),
                ):
                    if nb is None or (a.ok == nb.ok) or not (a.bad or nb.bad):
                        continue
                    ok, bad = (a, nb) if a.ok else (nb, a)
                    if ok.ok and bad.bad:
                        out.append(Boundary(ok, bad, axis))
    return out


# Rules whose prediction a compile can check: the torch-API scan (the others are facts of
# nvcc's/torch's arch lists, CMake's Python list, the CUDA major: nothing to compile).
COMPILE_CHECKABLE = ("api-",)


def probe_worthy(b: Boundary) -> bool:
    return (
        not b.ok.here
        and not b.bad.here
        and bool(b.bad.rules)
        and all(r.startswith(COMPILE_CHECKABLE) for r in b.bad.rules)
        and "+" not in b.ok.cell.torch + b.bad.cell.torch  # variants: not on PyPI here
    )


def plan_probes(bounds: list[Boundary]) -> list[tuple[Boundary, list[Cell]]]:
    """Boundaries to confirm, one per (release pair/torch pair) whatever the table, in the
    order: torch-API boundaries between torch builds first, then between releases; each
    with the cells still to probe (the ok side first, then the failing side with --force)."""
    seen: set[tuple[str, str, str, str]] = set()
    chosen = []
    order = sorted(
        (b for b in bounds if probe_worthy(b)),
        key=lambda b: (
            b.axis != "torch",
            b.ok.cell.arch[0] != "9.0",  # one arch stands for the rest: Hopper first
            b.ok.cell.provider != "debian",
            Version(b.ok.cell.vllm),
        ),
    )
    for b in order:
        k = (b.ok.cell.vllm, b.ok.cell.torch, b.bad.cell.vllm, b.bad.cell.torch)
        if k in seen:
            continue
        seen.add(k)
        todo = [m.cell for m in (b.ok, b.bad) if m.depth not in results.COMPILED]
        chosen.append((b, todo))
    return chosen


# ----------------------------------------------------------------------------- the map


@dataclass(frozen=True)
class MapRun:
    cells: list[MapCell]
    preflight_s: float
    releases: int
    torch_builds: int
    tables: int
    probe_budget_s: float = 0.0
    probe_spent_s: float = 0.0
    probed: tuple[str, ...] = ()
    boundaries: int = 0
    worthy: int = 0
    confirmed: tuple[str, ...] = ()
    contradicted: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        causes: dict[tuple[str, str, tuple[str, ...]], int] = {}
        rows = []
        for mc in self.cells:
            mc = scrub(mc)
            d = mc.to_json()
            if mc.cause:
                k = (mc.cause, mc.fix, mc.evidence)
                d["why"] = causes.setdefault(k, len(causes) + 1)
            for key in ("cause", "fix", "evidence"):
                d.pop(key)
            rows.append(d)
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "counts": {
                "releases": self.releases,
                "torch_builds": self.torch_builds,
                "tables": self.tables,
                "cells": len(self.cells),
            },
            "preflight_s": round(self.preflight_s, 2),
            "probes": {
                "budget_s": self.probe_budget_s,
                "spent_s": round(self.probe_spent_s, 1),
                "probed": list(self.probed),
                "boundaries": self.boundaries,
                "compile_checkable": self.worthy,
                "confirmed": list(self.confirmed),
                "contradicted": list(self.contradicted),
                "notes": list(self.notes),
            },
            "causes": [
                {"n": n, "cause": c, "fix": f, "evidence": list(e)}
                for (c, f, e), n in causes.items()
            ],
            "cells": rows,
        }


_PATHS = re.compile(r"(?:\s*\((?:[^()]*\s)?/[^()]*\))|(?:/(?:root|home|tmp|usr|work|opt)/\S*)")


def _scrub(text: str) -> str:
    """Reports name no path of the machine: parenthesised paths go, bare ones become '…'."""
    return _PATHS.sub(lambda m: "" if m.group(0).lstrip().startswith("(") else "…", text)


def scrub(mc: MapCell) -> MapCell:
    return dataclasses.replace(
        mc,
        cause=_scrub(mc.cause),
        fix=_scrub(mc.fix),
        evidence=tuple(_scrub(e) for e in mc.evidence),
        here=_scrub(mc.here),
    )


def grid_cells(matrix: Matrix) -> tuple[Cell, ...]:
    """The matrix's [grid] as cells; an error saying what to add when it has none."""
    cells = grid_mod.cells_of(matrix)
    if not cells:
        raise MatrixError(
            f"{matrix.path} has no [grid]",
            fix="add a [grid] table (vllm, torch, toolchains, arch): see matrix.toml",
        )
    return cells


def run_map(
    grid: Sequence[Cell],
    results_dir: Path,
    probe: Callable[[Cell, bool], None] | None = None,
    probe_budget_s: float = 0.0,
    echo: Callable[[str], None] | None = None,
    probe_cost_s: float = PROBE_COST_S,
    clock: Callable[[], float] = time.monotonic,
    earlier: Mapping[str, dict[str, Any]] | None = None,
) -> MapRun:
    """Preflight the grid's cells; then, within ``probe_budget_s``, probe boundary cells through
    ``probe(cell, force)`` (which writes the cell's result under ``results_dir``).
    ``earlier``: compiled verdicts by cell id (``{"verdict": {...}}``, as in a result file)
    from the committed map, counted where ``results_dir`` has none for the cell (a fresh
    clone has no results of its own: a re-run never drops a compile)."""
    t0 = time.monotonic()
    cells = preflight_all(tuple(grid))
    pre_s = time.monotonic() - t0
    predicted = cells
    cells = _merge_deeper(cells, results_dir, earlier)
    spent, probed, notes = 0.0, list[str](), list[str]()
    if probe is not None and probe_budget_s > 0:
        for b, todo in plan_probes(boundaries(cells)):
            for c in todo:
                if c.id in probed:  # the same cell sits on two boundaries
                    continue
                # the next probe costs what this run's took on average (the load of a shared
                # machine shows there), the given estimate before the first
                cost = spent / len(probed) if probed else probe_cost_s
                if spent + cost > probe_budget_s:
                    notes.append(
                        f"budget: stopped before {c.id} (spent {spent:.0f}s of "
                        f"{probe_budget_s:.0f}s; a probe costs ~{cost:.0f}s here now)"
                    )
                    break
                if echo:
                    echo(f"probe {c.id} ({b.axis} boundary {b.ok.cell.id} | {b.bad.cell.id})")
                t = clock()
                probe(c, c.id == b.bad.cell.id)
                spent += clock() - t
                probed.append(c.id)
            else:
                continue
            break
        cells = _merge_deeper(cells, results_dir, earlier)
    bs = boundaries(cells)
    confirmed = tuple(b.key for b in bs if b.confirmed())
    # A compile that disagrees with the prediction: predicted ok but FAIL, or predicted
    # failure that compiled (a forced probe passing stays PREDICTED-FAIL at depth probe).
    contradicted = tuple(
        mc.cell.id
        for mc, pre in zip(cells, predicted, strict=True)
        if mc.depth in results.COMPILED
        and ((pre.ok and mc.verdict == Verdict.FAIL) or (pre.bad and mc.verdict != Verdict.FAIL))
    )
    return MapRun(
        cells,
        pre_s,
        len({c.vllm for c in grid}),
        len({c.torch for c in grid}),
        len({table_key(c) for c in grid}),
        probe_budget_s,
        spent,
        tuple(probed),
        len(bs),
        sum(1 for b in bs if probe_worthy(b)),
        confirmed,
        contradicted,
        tuple(notes),
    )


def _merge_deeper(
    cells: list[MapCell],
    results_dir: Path,
    earlier: Mapping[str, dict[str, Any]] | None = None,
) -> list[MapCell]:
    deeper: dict[str, Mapping[str, Any]] = dict(earlier or {})
    deeper |= deeper_results(results_dir, (mc.cell for mc in cells))
    return [_from_result(mc, deeper[mc.cell.id]) if mc.cell.id in deeper else mc for mc in cells]


# ------------------------------------------------------------- toolchain for a release


def toolchain_for(
    torch_cuda: str | None, know: Knowledge, provider: str | None = None
) -> tuple[str, str]:
    """(cuda, provider) for a torch built with CUDA ``torch_cuda``: that version when a
    provider supplies it here, else the newest one of the same major a provider supplies
    that is not newer than torch's, else the oldest newer one of the same major, else the
    torch's own CUDA from a system install."""
    if torch_cuda is None:
        raise MatrixError("no wheel facts for this torch", fix="pass --cuda and --provider")
    want = Version(torch_cuda)
    have = [
        (v, name)
        for name, pf in know.providers.items()
        if provider in (None, name)
        for v in pf.versions
        if Version(v).major == want.major
    ]
    exact = [h for h in have if Version(h[0]) == want]
    older = sorted((h for h in have if Version(h[0]) < want), key=lambda h: Version(h[0]))
    newer = sorted((h for h in have if Version(h[0]) > want), key=lambda h: Version(h[0]))
    pick = exact[:1] or older[-1:] or newer[:1]
    if pick:
        return pick[0]
    return torch_cuda, provider or "system"
