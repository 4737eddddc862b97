"""builds.toml: the recorded builds the build-cost model is calibrated on, and the external
projects' unit counts a configure listed."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.infra import datafiles, tomlfile


@dataclass(frozen=True)
class TargetRecord:
    edges: int  # work edges (compile + link) from build.ninja
    edge_seconds: float  # the edges' own seconds from .ninja_log, summed (0: not kept)
    longest_edge_s: float  # 0: not kept


@dataclass(frozen=True)
class BuildRecord:
    id: str
    vllm: str
    torch: str
    nvcc: str
    archs: tuple[str, ...]
    cores: int
    jobs: int
    full: bool  # False: a resumed run (wall and CPU cover only what it ran)
    mean_archs: float
    targets: dict[str, TargetRecord]
    wall_s: float
    cpu_s: float
    peak_rss_mib: int
    until_first_step_s: float
    output_bytes: int
    front_end_s: float
    source: str

    @property
    def edges(self) -> int:
        return sum(t.edges for t in self.targets.values())

    @property
    def edge_seconds(self) -> float:
        """The edges' own seconds; the build's CPU where they were not kept."""
        kept = sum(t.edge_seconds for t in self.targets.values())
        return kept if kept > 0 else self.cpu_s

    @property
    def longest_edge_s(self) -> float:
        return max((t.longest_edge_s for t in self.targets.values()), default=0.0)


@dataclass(frozen=True)
class ExternalUnits:
    vllm: str
    project: str
    units: int
    source: str


@dataclass(frozen=True)
class BuildData:
    builds: tuple[BuildRecord, ...]
    external: tuple[ExternalUnits, ...]


_BUILD_KEYS = (
    "id",
    "vllm",
    "torch",
    "nvcc",
    "archs",
    "cores",
    "jobs",
    "full",
    "mean_archs",
    "targets",
    "wall_s",
    "cpu_s",
    "peak_rss_mib",
    "until_first_step_s",
    "output_bytes",
    "front_end_s",
    "source",
)


def load(path: Path | None = None) -> BuildData:
    return _load(path or datafiles.data_path("builds.toml"))


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> BuildData:
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, ("build", "external"), "the top level")
    builds = []
    for n, b in enumerate(doc.data.get("build", [])):
        ctx = f"[[build]] #{n + 1}"
        tomlfile.check_keys(doc, b, _BUILD_KEYS, ctx)
        targets = {}
        for name, t in dict(b.get("targets", {})).items():
            tomlfile.check_keys(doc, t, ("edges", "edge_seconds", "longest_edge_s"), ctx)
            targets[str(name)] = TargetRecord(
                int(t["edges"]), float(t["edge_seconds"]), float(t["longest_edge_s"])
            )
        builds.append(
            BuildRecord(
                tomlfile.require(doc, b, "id", str, ctx),
                tomlfile.require(doc, b, "vllm", str, ctx),
                tomlfile.require(doc, b, "torch", str, ctx),
                tomlfile.require(doc, b, "nvcc", str, ctx),
                tomlfile.str_list(doc, b.get("archs", []), "archs", ctx),
                tomlfile.require(doc, b, "cores", int, ctx),
                tomlfile.require(doc, b, "jobs", int, ctx),
                tomlfile.require(doc, b, "full", bool, ctx),
                float(tomlfile.require(doc, b, "mean_archs", float, ctx)),
                targets,
                float(tomlfile.require(doc, b, "wall_s", float, ctx)),
                float(tomlfile.require(doc, b, "cpu_s", float, ctx)),
                tomlfile.require(doc, b, "peak_rss_mib", int, ctx),
                float(tomlfile.require(doc, b, "until_first_step_s", float, ctx)),
                tomlfile.require(doc, b, "output_bytes", int, ctx),
                float(tomlfile.require(doc, b, "front_end_s", float, ctx)),
                tomlfile.require(doc, b, "source", str, ctx),
            )
        )
    ext = []
    for n, e in enumerate(doc.data.get("external", [])):
        ctx = f"[[external]] #{n + 1}"
        tomlfile.check_keys(doc, e, ("vllm", "project", "units", "source"), ctx)
        ext.append(
            ExternalUnits(
                tomlfile.require(doc, e, "vllm", str, ctx),
                tomlfile.require(doc, e, "project", str, ctx),
                tomlfile.require(doc, e, "units", int, ctx),
                tomlfile.require(doc, e, "source", str, ctx),
            )
        )
    return BuildData(tuple(builds), tuple(ext))
