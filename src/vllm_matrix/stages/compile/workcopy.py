"""The work copy: the patched, pin-neutralised copy of the source tree a build runs in,
kept between runs so a stopped build resumes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra.cache import cache_root
from vllm_matrix.infra.config import Cell
from vllm_matrix.sources.sdist import SourceTree
from vllm_matrix.stages import patches as patches_mod
from vllm_matrix.stages.compile.pins import EXISTING_TORCH_REPLACES, PinChange, neutralise_pins

WORK_MARKER = ".vllm-matrix-work.json"
# Bump when the work copy's preparation changes: older work copies are then remade.
WORK_FORMAT = 1


def work_dir(cell: Cell, root: Path | None = None) -> Path:
    """Where a cell's resumable build lives by default: ``<cache>/builds/<cell id>``."""
    return (root or cache_root()) / "builds" / cell.id


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _work_key(tree: SourceTree, chosen: Sequence[patches_mod.Patch]) -> dict[str, Any]:
    return {
        "format": WORK_FORMAT,
        "origin": tree.origin,
        "root": str(tree.root),
        "patches": [[p.name, _digest(p.file)] for p in chosen],
        "removed": sorted(EXISTING_TORCH_REPLACES),
    }


@dataclass(frozen=True)
class WorkCopy:
    root: Path
    reused: bool  # an earlier run's copy (and its build dir) was kept
    applied: tuple[dict[str, Any], ...]
    pins: tuple[PinChange, ...]
    remade_because: str | None = None


def prepare_work_copy(
    tree: SourceTree,
    dst: Path,
    chosen: Sequence[patches_mod.Patch],
    log: Path | None = None,
    *,
    clean: bool = False,
) -> WorkCopy:
    """The patched, pin-neutralised work copy at ``dst``: reused when an earlier run made
    it from the same source and patches (so its build dir resumes), else made afresh.

    A copy is complete only once renamed to ``dst`` with its marker inside; a leftover
    ``<dst>.partial`` from a killed run is discarded. The caller holds ``locked(dst)``.
    """
    key = _work_key(tree, chosen)
    marker = dst / WORK_MARKER
    why: str | None = None
    if dst.exists():
        old: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(marker.read_text())
        if clean:
            why = "a clean build was asked for"
        elif not old:
            why = "the old work copy has no marker (made by a run that was stopped)"
        elif old.get("key") != key:
            why = "the source or the patch series changed"
        if why is None:
            # Re-applying is idempotent (already-applied) and proves the copy still holds
            # the patches; unchanged files keep their mtimes, so nothing recompiles.
            applied = patches_mod.apply_all(dst, tuple(chosen), log, version=tree.version)
            again = neutralise_pins(dst)
            pins = tuple(PinChange(**c) for c in old.get("pins", ())) + again
            return WorkCopy(dst, True, tuple(a.to_json() for a in applied), pins)
        shutil.rmtree(dst)
    staging = dst.with_name(dst.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        patches_mod.copy_tree(tree.root, staging)
        applied = patches_mod.apply_all(staging, tuple(chosen), log, version=tree.version)
        pins = neutralise_pins(staging)
        record = {
            "key": key,
            "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "applied": [a.to_json() for a in applied],
            "pins": [c.to_json() for c in pins],
        }
        (staging / WORK_MARKER).write_text(json.dumps(record, indent=1) + "\n")
        os.replace(staging, dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WorkCopy(dst, False, tuple(a.to_json() for a in applied), pins, why)
