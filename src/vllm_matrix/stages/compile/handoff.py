"""What the build stage is handed besides the cell (its FetchContent sources, checked
before anything compiles) and what its result hands on (those sources, the estimate, and
for a partial build the installable the model stage serves from)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.infra.results import PASS, WARN, StageResult
from vllm_matrix.knowledge import probe_units
from vllm_matrix.sources import externals
from vllm_matrix.sources.sdist import SourceTree
from vllm_matrix.stages.compile import installable, partial
from vllm_matrix.stages.facts import SourceFacts


@dataclass(frozen=True)
class BuildSources:
    """The FetchContent sources a build is handed: real ones (``dirs``) and, for a
    partial build, stand-ins (``standins``: name -> (path, the variable naming it))."""

    dirs: dict[str, externals.ExternalDir]
    standins: dict[str, tuple[Path, str]]

    def env(self) -> dict[str, str]:
        """The variables that hand them to vLLM's CMake."""
        return externals.build_env(self.dirs) | {v: str(p) for p, v in self.standins.values()}


def sources_for(
    facts: SourceFacts, tree: SourceTree, targets: Sequence[str], work: Path
) -> BuildSources:
    """The sources a build of ``targets`` (empty: all) needs, from the cache (inv prefetch)
    or PyPI; a missing one raises NotAvailable here, before anything compiles, saying how
    to bring it."""
    dirs, standins = partial.externals_for(
        facts, probe_units.load_knowledge(), tree.root, targets, work
    )
    missing = externals.missing_error(tree.version, dirs)
    if missing is not None:
        raise NotAvailable(missing.message, fix=missing.fix)
    return BuildSources(dirs, standins)


def handed_on(
    built: StageResult,
    sources: BuildSources,
    estimate: Mapping[str, Any],
    version: str,
    targets: Sequence[str],
    work: Path,
) -> StageResult:
    """The build's result with what it was handed (``sources``, the ``estimate``) in its
    details, and for a partial build that passed the installable: vLLM's Python package +
    the built extensions + a dist-info (never a wheel), assembled in ``work``."""
    sources_doc = {
        k: {"pin": d.pin, "path": str(d.path), "origin": d.origin} for k, d in sources.dirs.items()
    }
    details = built.details | {"sources": sources_doc, "estimate": estimate}
    if built.status in (PASS, WARN) and "partial" in built.details:
        dest = work / installable.name_of(version, targets)
        doc = installable.assemble(work / "src", work / partial.PARTIAL_DIR, dest, version, targets)
        details["installable"] = doc | {"path": str(dest)}
    if sources.standins:
        details["standins"] = {k: str(p) for k, (p, _) in sources.standins.items()}
    return StageResult(
        built.stage, built.status, built.seconds, built.summary, built.findings, details, built.log
    )
