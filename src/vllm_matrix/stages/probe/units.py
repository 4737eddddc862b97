"""Unit selection: the bindings, the API scan's hits, one representative per kernel family."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.cmake.model import CUDA_SUFFIXES, CXX_SUFFIXES, BuildModel, Family
from vllm_matrix.cmake.values import eval_genex, split_list
from vllm_matrix.knowledge import probe_units
from vllm_matrix.knowledge.probe_units import ProbeKnowledge
from vllm_matrix.stages.facts import SourceFacts
from vllm_matrix.stages.preflight.apiscan import ApiHit
from vllm_matrix.stages.probe.configure import build_model
from vllm_matrix.stages.probe.includes import include_closure


@dataclass(frozen=True)
class Unit:
    path: str  # relative to the tree
    why: str
    kind: str  # "cuda" | "cxx"
    needs: tuple[str, ...] = ()  # FetchContent dependencies its includes reach
    family: str = ""  # Family.name, or "" when the unit has no per-source arches
    gated: bool = False  # the family's arches are an arch-gated intersection
    target: str = ""  # _C, _moe_C, ...
    archs: tuple[str, ...] = ()  # its arches for this cell, as vLLM writes them
    # the torch releases the API scan's hits in it need (e.g. "2.7.0"): the torch below one
    # of them is predicted to fail it
    api_torch: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.replace("/", "__")


@dataclass(frozen=True)
class Selection:
    units: tuple[Unit, ...]
    model: BuildModel
    not_built: tuple[str, ...]  # API hits in files this configuration does not compile
    families: tuple[dict[str, Any], ...]


def _kind(src: str, props: dict[str, str]) -> str | None:
    lang = props.get("LANGUAGE")
    if lang == "CUDA" or (lang is None and src.endswith(CUDA_SUFFIXES)):
        return "cuda"
    if lang == "CXX" or (lang is None and src.endswith(CXX_SUFFIXES)):
        return "cxx"
    return None


def search_dirs(model: BuildModel, tree: Path, src: str) -> list[Path]:
    t = model.target_of(src)
    dirs = [Path(i) for i in (t.includes if t else ()) if not i.startswith("$<")]
    extra = model.source_props.get(src, {}).get("INCLUDE_DIRECTORIES", "")
    dirs += [Path(x) for x in split_list(extra) if x]
    return dirs or [tree / "csrc"]


def select(
    tree: Path,
    facts: SourceFacts,
    archs: tuple[str, ...],
    nvcc_version: str,
    api_hits: Sequence[ApiHit],
    model: BuildModel | None = None,
    know: ProbeKnowledge | None = None,
) -> Selection:
    know = know or probe_units.load_knowledge()
    model = model or build_model(tree, nvcc_version, archs, know=know)
    built = model.built_sources()
    chosen: dict[str, list[str]] = {}
    order: list[str] = []
    closures: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
    api_torch: dict[str, list[str]] = {}

    def closure(src: str) -> tuple[tuple[str, ...], dict[str, str]]:
        if src not in closures:
            closures[src] = include_closure(tree, src, search_dirs(model, tree, src), know)
        return closures[src]

    def pick(src: str, why: str, torch: str = "") -> None:
        if src not in chosen:
            chosen[src] = []
            order.append(src)
        if why not in chosen[src]:
            chosen[src].append(why)
        if torch and torch not in api_torch.setdefault(src, []):
            api_torch[src].append(torch)

    for cand in know.bindings:
        if cand in built:
            pick(
                cand, "bindings: registers every op with torch and includes every op's declaration"
            )
            break

    not_built: list[str] = []
    by_file: dict[str, list[ApiHit]] = {}
    for h in api_hits:
        by_file.setdefault(h.file, []).append(h)
    for file, hits in by_file.items():
        sym = hits[0].symbol
        lines = ", ".join(str(h.line) for h in hits)
        why = f"API scan: {sym.name} (torch >= {sym.torch}) at {file}:{lines}"
        if file in built:
            pick(file, why, sym.torch)
            continue
        # A header: a chosen unit that includes it, else the built unit that includes it
        # with the smallest include closure.
        users = [s for s in built if file in closure(s)[0]]
        done = [s for s in order if s in users]
        if done:
            pick(done[0], why + f" (via {Path(file).name})", sym.torch)
        elif users:
            best = min(users, key=lambda s: (bool(closure(s)[1]), len(closure(s)[0]), s))
            pick(best, why + f" (via {Path(file).name})", sym.torch)
        else:
            not_built.append(f"{file}:{lines} ({sym.name}): not compiled for this configuration")

    fam_info: list[dict[str, Any]] = []
    seen_fams: list[Family] = []
    for fam in model.families:
        members = [
            s
            for s in fam.sources
            if s in built and _kind(s, model.source_props.get(s, {})) is not None
        ]
        info: dict[str, Any] = {
            "family": fam.name,
            "archs": list(fam.archs),
            "where": fam.where,
            "units": len(members),
        }
        fam_info.append(info)
        if not members:
            info["probe"] = "no units (generated at configure time, or none built)"
            continue
        # No arches (the cell's are outside the tree's list): the real build still compiles
        # these units, for nvcc's default arch; they are probed the same way.
        kinds = {s: _kind(s, model.source_props.get(s, {})) for s in members}
        # A CUDA family is covered only by a CUDA unit (the bindings .cpp is in VLLM_EXT_SRC
        # but says nothing about nvcc); a family whose units an earlier family with the same
        # arches already holds adds nothing.
        want_cuda = "cuda" in kinds.values()
        covered = [s for s in members if s in chosen and (kinds[s] == "cuda" or not want_cuda)]
        if covered:
            info["probe"] = f"covered by {covered[0]}"
            continue
        same = next(
            (g for g in seen_fams if g.archs == fam.archs and set(members) <= set(g.sources)), None
        )
        seen_fams.append(fam)
        if same is not None:
            info["probe"] = f"same units as family {same.name} ({same.where})"
            continue

        def score(s: str) -> tuple[int, int, int, int, str]:
            files, needs = closure(s)
            kind = _kind(s, model.source_props.get(s, {}))
            size = sum((tree / f).stat().st_size for f in files if (tree / f).is_file())
            return (0 if kind == "cuda" else 1, len(needs), -len(files), size, s)

        rep = min((m for m in members if m not in chosen), key=score, default=members[0])
        info["probe"] = rep
        pick(
            rep,
            f"representative of family {fam.name} ({fam.where}, {len(members)} units, "
            f"arches {';'.join(fam.archs)}): most in-tree headers ({len(closure(rep)[0])})",
        )

    units = []
    for src in order:
        props = model.source_props.get(src, {})
        kind = _kind(src, props) or "cxx"
        home = model.family_of(src)
        t = model.target_of(src)
        units.append(
            Unit(
                src,
                "; ".join(chosen[src]),
                kind,
                tuple(sorted(closure(src)[1])),
                home.name if home else "",
                home.gated if home else False,
                t.name if t else "",
                unit_archs(model, src),
                tuple(api_torch.get(src, ())),
            )
        )
    return Selection(tuple(units), model, tuple(not_built), tuple(fam_info))


def select_units(
    tree: Path,
    facts: SourceFacts,
    archs: tuple[str, ...],
    nvcc_version: str,
    api_hits: Sequence[ApiHit],
) -> list[Unit]:
    """The units worth compiling for (tree, arches, nvcc); see the module docstring."""
    return list(select(tree, facts, archs, nvcc_version, api_hits).units)


def unit_archs(model: BuildModel, src: str) -> tuple[str, ...]:
    """The arches of ``src``'s -gencode flags, as 'sm_90' / 'sm_90a' / 'compute_90'."""
    opts = eval_genex(";".join(model.source_options.get(src, ())), "CUDA")
    out = re.findall(r"code=((?:sm|compute)_\d+[af]?)", opts)
    if not out:  # older trees: the target's CUDA_ARCHITECTURES, or CMAKE_CUDA_FLAGS
        t = model.target_of(src)
        gen = " ".join(t.gencode()) if t else ""
        out = re.findall(r"code=((?:sm|compute)_\d+[af]?)", gen or model.cuda_flags)
    return tuple(dict.fromkeys(out))


# ==================================================================== flags
