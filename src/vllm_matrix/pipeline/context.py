"""What one cell's run carries from stage to stage: the cell, where it writes, its options,
and what each stage made for the later ones (the tree, the toolkit, the torch env ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.results import Envelope, StageResult
from vllm_matrix.sources.sdist import SourceTree
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.env.fixups import Fixups
from vllm_matrix.stages.facts import SourceFacts
from vllm_matrix.stages.patches import Applied
from vllm_matrix.stages.preflight import Host
from vllm_matrix.stages.toolkit import Toolkit

T = TypeVar("T")


@dataclass(frozen=True)
class BuildOptions:
    """What `run --depth build` takes beyond the cell (None: the cell's options, else sized)."""

    max_jobs: int | None = None
    nvcc_threads: int | None = None
    clean: bool = False  # remake the work copy: a from-scratch build
    ccache: bool = True
    debug: bool = False  # let a bug's exception through (traceback) instead of an ERROR
    # ccache's remote storage (build.remote_setting: VLLM_MATRIX_CCACHE_REMOTE or the
    # matrix's [ccache] remote); None: the local cache only
    ccache_remote: str | None = None
    targets: tuple[str, ...] = ()  # CMake targets: a partial build (no wheel); () = all
    probe: bool = True  # False: --no-probe (the build compiles the probe's units anyway)
    # --built DIR: a partial build compiled elsewhere stands in for the build (carried.py)
    built: Path | None = None
    probe_units: str = "selected"  # probe.UNITS_MODES: "all" sweeps every unit
    # False: --no-front-end-cache (every front end runs: a cold cost, for measurements)
    probe_front_end_cache: bool = True
    # probe.PROBE_DEPTHS. "front-end" (default): the front end decided every verdict of the probe
    # study (reports/bench/probe-study.md) and is 20-40 % of the old 180 s per cell spent
    # filling the budget with code generation; "auto" adds that code generation back.
    probe_depth: str = "front-end"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    def logs(self, cell: Cell) -> Path:
        return self.results / "logs" / cell.id


@dataclass
class CellContext:
    """One cell's run. The fields after ``done`` are the stages' products: None until the
    stage that makes them has run (the plan's ``makes``/``needs`` say which)."""

    cell: Cell
    ws: Workspace
    opts: BuildOptions
    walk: tuple[str, ...]  # the stages this run goes through (the plan cut at its depth)
    host: Host | None = None  # the machine's facts (detected by preflight when None)
    echo: Callable[[str], None] | None = None  # progress lines
    previous: Envelope | None = None  # the cell's result as it was before this run
    done: list[StageResult] = field(default_factory=list)  # this run's results so far

    tree: SourceTree | None = None
    facts: SourceFacts | None = None
    toolkit: Toolkit | None = None
    env: TorchEnv | None = None
    fixups: Fixups | None = None
    applied: tuple[Applied, ...] | None = None  # the patches applied to work_tree
    work_tree: Path | None = None  # the patched private copy the probe reads
    wheel: Path | None = None  # a full build's wheel
    extensions: list[Path] | None = None  # a partial build's .so files (no wheel)

    def runs(self, stage: str) -> bool:
        """Whether this run goes as far as ``stage``."""
        return stage in self.walk

    @property
    def logs(self) -> Path:
        return self.ws.logs(self.cell)


def need(value: T | None) -> T:
    """A product an earlier stage made (the plan's order guarantees it)."""
    if value is None:
        raise AssertionError("a stage ran before the stage that makes what it needs")
    return value


__all__ = ["BuildOptions", "CellContext", "Workspace", "need"]
