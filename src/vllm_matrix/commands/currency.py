"""`currency`: is the project's knowledge current with the outside world?

The test suite judges the committed release set only (nothing upstream publishes may turn
it red); this command is where the world is looked at, on a schedule (`nox -s currency`,
the example workflow's ``currency`` job). It asks the index for the releases (fresh, not
the cached list) and says exactly what to update:

- releases on the index that knowledge/data/vllm_pins.toml lacks (``inv derive-pins
  --write``, then ``inv derive-facts --write``), and pins-file releases the index no
  longer lists;
- patch ranges: a release newer than every release in a patch's ``applies`` range is
  patched for real (a private copy of its sdist): extend the range, or cap / vary it;
- every release preflighted as `release X --depth preflight` does it (its pinned torch, a
  toolchain for it, the arch given), through the same runner, into a scratch workspace:
  a cell ending in ERROR is the tool failing on a release; a fact a reader could not read
  (an ``unreadable`` finding: file:line) is a knowledge gap; a pinned torch with no facts
  in toolchains.toml is one too.

Exit status: 0 current, 1 stale (each item says what to update), 3 the check could not
run (the index did not answer).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.version import Version

from vllm_matrix.commands.common import say
from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import results
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError, SourceError, ToolError
from vllm_matrix.infra.results import Verdict
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline import mapping, runner
from vllm_matrix.pipeline.context import Workspace
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import facts as facts_mod
from vllm_matrix.stages import patches, preflight

DERIVE = (
    "run `inv derive-pins --write`, then `inv derive-facts --write`, and commit "
    "knowledge/data/vllm_pins.toml and release_facts.json"
)


@dataclass(frozen=True)
class Item:
    """One thing that is stale, and what to update."""

    kind: str  # "release" | "patch" | "gap" | "error"
    subject: str  # the release (or patch) it is about
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Preflight:
    vllm: str
    cell: str  # the cell id ("" when no cell could be made)
    verdict: Verdict | Literal["gap"]  # gap: no cell could be made (a fact is missing)
    seconds: float
    gaps: tuple[str, ...] = ()  # the 'unreadable' findings' messages


@dataclass
class Report:
    listed: pins.ReleaseList
    items: list[Item] = field(default_factory=list)
    preflights: list[Preflight] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> list[Preflight]:
        return [p for p in self.preflights if p.verdict == Verdict.ERROR]

    def to_json(self) -> dict[str, Any]:
        return {
            "releases": list(self.listed.versions),
            "origin": self.listed.origin,
            "stale": [i.to_json() for i in self.items],
            "preflight": [
                {
                    "vllm": p.vllm,
                    "cell": p.cell,
                    "verdict": p.verdict,
                    "seconds": p.seconds,
                    "gaps": list(p.gaps),
                }
                for p in self.preflights
            ],
            "counts": {
                "releases": len(self.listed.versions),
                "preflighted": len(self.preflights),
                "error": len(self.errors),
                "stale": len(self.items),
            },
            "seconds": self.seconds,
        }


def new_releases(listed: tuple[str, ...], pinned: dict[str, str]) -> list[Item]:
    out = [
        Item("release", v, f"vLLM {v} is on the index but not in vllm_pins.toml", DERIVE)
        for v in listed
        if v not in pinned
    ]
    gone = [v for v in pinned if v not in listed and Version(v) >= pins.FIRST]
    out += [
        Item("release", v, f"vLLM {v} is in vllm_pins.toml but the index lists no sdist", DERIVE)
        for v in sorted(gone, key=Version)
    ]
    return out


def patch_ranges(listed: tuple[str, ...], root: Path, scratch: Path) -> list[Item]:
    """Each patch against the releases newer than every release in its range: applied to a
    private copy of the real sdist, so the item says whether to extend or to cap/vary."""
    out: list[Item] = []
    for p in patches.load_series(root=root):
        inside = [v for v in listed if v in p.applies]
        if not inside:
            out.append(
                Item(
                    "patch",
                    p.name,
                    f"patch {p.name}: no release on the index is in its range {p.applies}",
                    "fix its applies range in patches/series.toml",
                )
            )
            continue
        top = max(map(Version, inside))
        for v in (v for v in listed if Version(v) > top):
            tree = source.sdist_tree(v)
            work = patches.copy_tree(tree.root, scratch / f"{p.name}-{v}", private=p.paths())
            try:
                (a,) = patches.apply_all(work, (p,), version=v)
                out.append(
                    Item(
                        "patch",
                        v,
                        f"patch {p.name}: vLLM {v} is newer than its range ({p.applies}) and "
                        f"the patch {a.status} to it",
                        f"extend applies in patches/series.toml to hold {v}",
                    )
                )
            except patches.PatchError as exc:
                out.append(
                    Item(
                        "patch",
                        v,
                        f"patch {p.name}: vLLM {v} is newer than its range: {exc.message}",
                        "write a variant for it, or cap the range (say why in series.toml)",
                    )
                )
    return out


def release_cell(version: str, arch: str, know: toolchains.Knowledge) -> Cell:
    """The cell `release X --arch A` makes: the release's pinned torch, a toolchain a
    provider supplies for that torch's CUDA, a Python both accept (3.12 where they do)."""
    tree = source.sdist_tree(version)
    f = facts_mod.read_facts(tree.root, tree.version)
    torch = f.torch or pins.load().get(version)
    if not torch:
        raise MatrixError(f"vLLM {version} pins no torch that could be read", fix="")
    tf = know.torch.get(torch.partition("+")[0])
    if tf is None:
        raise KnowledgeGap(
            f"vLLM {version} pins torch {torch}, which toolchains.toml has no facts for",
            f"run `inv derive-torch {torch}` and add its entry to knowledge/data/toolchains.toml",
        )
    cuda, provider = mapping.toolchain_for(tf.cuda, know)
    pythons = [p for p in f.python if not tf.pythons or p in tf.pythons]
    python = "3.12" if "3.12" in pythons or not pythons else pythons[-1]
    return Cell(version, torch, cuda, provider, python, (arch,), note="currency: preflight")


class KnowledgeGap(MatrixError):
    """Something the knowledge files lack for a release (not the tool failing)."""


def preflight_release(
    version: str,
    arch: str,
    know: toolchains.Knowledge,
    ws: Workspace,
    host: preflight.Host,
    mach: dict[str, Any],
) -> tuple[Preflight, list[Item]]:
    t0 = time.monotonic()
    try:
        cell = release_cell(version, arch, know)
    except KnowledgeGap as exc:
        took = round(time.monotonic() - t0, 2)
        return Preflight(version, "", "gap", took), [
            Item("gap", version, exc.message, exc.fix or "")
        ]
    except MatrixError as exc:
        took = round(time.monotonic() - t0, 2)
        return Preflight(version, "", Verdict.ERROR, took), [
            Item("error", version, f"no cell for vLLM {version}: {exc.message}", exc.fix or "")
        ]
    stages = runner.run_cell(cell, ws, depth="preflight", mach=mach, host=host)
    v = results.verdict_of(stages)
    found = [f for s in stages for f in s.findings]
    gaps = tuple(f.message for f in found if f.rule == "unreadable")
    items = [
        Item("gap", version, g, "teach the reader (stages/facts.py, stages/preflight/modelopt.py)")
        for g in gaps
    ]
    if v.verdict == Verdict.ERROR:
        items.append(Item("error", version, f"{cell.id} ends in ERROR: {v.cause}", v.fix or ""))
    took = round(time.monotonic() - t0, 2)
    return Preflight(version, cell.id, v.verdict, took, gaps), items


def check(
    root: Path,
    arch: str = "12.0",
    since: str | None = None,
    preflight_all: bool = True,
    echo: Callable[[str], None] | None = None,
) -> Report:
    """Everything above. ``since``: preflight only releases from it on."""
    t0 = time.monotonic()
    listed = pins.release_list(refresh=True)
    if listed.index is None:
        raise MatrixError(
            f"the index gave no list of vLLM releases (used: {listed.origin})",
            fix="check the network / pip's index-url; VLLM_MATRIX_RELEASES must not be pinned",
        )
    rep = Report(listed)
    rep.items += new_releases(listed.versions, pins.load())
    with tempfile.TemporaryDirectory(prefix="vllm-matrix-currency-") as tmp:
        scratch = Path(tmp)
        rep.items += patch_ranges(listed.versions, root, scratch / "patches")
        if preflight_all:
            know = toolchains.load()
            ws = Workspace(scratch / "ws")
            real = preflight.detect_host()
            host = preflight.Host(None, real.system_cuda, real.conda_prefix)
            mach = results.machine(gpuinfo.names())
            todo = [v for v in listed.versions if since is None or Version(v) >= Version(since)]
            for n, v in enumerate(todo, 1):
                p, items = preflight_release(v, arch, know, ws, host, mach)
                rep.preflights.append(p)
                rep.items += items
                if echo:
                    echo(f"[{n}/{len(todo)}] {v}: {p.verdict} ({p.seconds:.1f}s)")
    rep.seconds = round(time.monotonic() - t0, 1)
    return rep


def render(rep: Report) -> str:
    n = len(rep.listed.versions)
    lines = [
        f"releases: {n} on the index ({rep.listed.versions[0]} … {rep.listed.versions[-1]}), "
        f"{len(set(rep.listed.versions) & set(pins.load()))} in vllm_pins.toml"
    ]
    if rep.preflights:
        by: dict[str, int] = {}
        for p in rep.preflights:
            by[p.verdict] = by.get(p.verdict, 0) + 1
        counts = ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
        lines.append(
            f"preflight: {len(rep.preflights)} releases read ({counts}); "
            f"{len(rep.errors)} ERROR; {sum(p.seconds for p in rep.preflights):.0f}s"
        )
    if not rep.items:
        lines.append("current: nothing to update")
    else:
        lines.append(f"stale: {len(rep.items)} thing(s) to update")
        for i in rep.items:
            lines.append(f"  [{i.kind}] {i.message}")
            if i.fix:
                lines.append(f"          fix: {i.fix}")
    lines.append(f"({rep.seconds:.0f}s)")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """The outside world against the project's knowledge: 0 current, 1 stale, 3 no answer."""
    root = Path(args.matrix).resolve().parent
    try:
        rep = check(root, Arch.parse(args.arch).name, args.since, not args.no_preflight, echo=say)
    except SourceError as exc:  # no answer from the index: the machine's side (exit 3)
        raise ToolError(exc.message, fix=exc.fix) from exc
    if args.json:
        print(json.dumps(rep.to_json(), indent=1))
    else:
        print(render(rep), end="")
    return 1 if rep.items else 0


__all__ = ["Item", "KnowledgeGap", "Preflight", "Report", "check", "new_releases", "render", "run"]
