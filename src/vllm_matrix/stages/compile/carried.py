"""A partial build compiled on one machine and served on another.

A GPU machine held for half an hour has no time to compile what a CPU machine with no GPU
can compile in an hour (vLLM 0.20.0's ``_C`` + ``_C_stable_libtorch`` for 9.0a: issue 24).
``export-build`` copies a cell's installable partial build (installable.py: vLLM's Python
package, the built extensions, the dist-info) into a directory and adds ``RECORD``: the cell,
the machine that compiled it, and its build stage as recorded there. With ``strip`` the
extensions lose their host debug info (``objcopy --strip-debug``: a RelWithDebInfo build's
DWARF, most of a host object's size); their symbol tables stay, so the model stage still
names the built libraries' kernels from them.

``run --built DIR`` (``take``) stands such a directory in for the build stage: checked
against the cell it runs for (the vLLM release, the CMake targets, the arches, the torch
release and the CUDA major version must be the ones it was compiled for), its build stage
is the recorded one, marked ``carried`` with the machine it was compiled on, and audit,
smoke, gpu and model run on it as on a build made here. The verdict says what it rests on
("built on <machine>; carried here").
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vllm_matrix.infra import proc, programs, results
from vllm_matrix.infra.config import Cell, split_torch
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import PASS, WARN, Finding, StageResult
from vllm_matrix.stages.compile import installable

RECORD = "vllm-matrix-build.json"
SCHEMA = "vllm-matrix/carried-build"


class CarriedBuildError(MatrixError):
    """A directory given as a carried build is not one, or not one for this cell."""


def _build_stage(envelope: Mapping[str, Any]) -> dict[str, Any]:
    stage = next((s for s in envelope.get("stages", []) if s.get("stage") == "build"), None)
    cell = envelope.get("cell", {}).get("id", "?")
    if stage is None or stage.get("status") not in (PASS, WARN):
        raise CarriedBuildError(
            f"{cell}: no passing build in its result file",
            fix="run the cell with --depth build --targets ... first",
        )
    if "installable" not in stage.get("details", {}):
        raise CarriedBuildError(
            f"{cell}: its build is not an installable partial build (a wheel, or written "
            "before builds were made installable)",
            fix="build it with --targets (e.g. _C,_C_stable_libtorch); a wheel needs no "
            "export: install it",
        )
    return dict(stage)


def export(envelope: Mapping[str, Any], work: Path, out: Path, *, strip: bool = False) -> Path:
    """``out``/<installable name>: the cell's installable from its build work dir ``work``
    and ``RECORD``. ``envelope``: the cell's result file (the build stage it records)."""
    stage = _build_stage(envelope)
    name = str(stage["details"]["installable"]["name"])
    src = work / name
    if not (src / installable.MARKER).is_file():
        raise CarriedBuildError(
            f"{src} is not there (or lacks {installable.MARKER}): the result names a build "
            "this cache no longer holds",
            fix="rerun the build (it resumes) on this machine",
        )
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest, symlinks=True)
    doc = json.loads((dest / installable.MARKER).read_text())
    stripped: list[dict[str, Any]] = []
    if strip:
        objcopy = programs.require("objcopy")
        for rel in doc["extensions"]:
            so = dest / rel
            before = so.stat().st_size
            proc.run([objcopy, "--strip-debug", so])
            stripped.append({"path": rel, "bytes_before": before, "bytes": so.stat().st_size})
    record = {
        "schema": SCHEMA,
        "exported": results.now(),
        "cell": envelope["cell"],
        "machine": envelope.get("machine", {}),
        "build": stage,
        "stripped": stripped,
    }
    (dest / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return dest


def _mismatches(record: Mapping[str, Any], cell: Cell, targets: Sequence[str]) -> list[str]:
    was = record["cell"]
    built_targets = list(record["build"]["details"]["installable"]["targets"])
    out = []
    if was["vllm"] != cell.vllm:
        out.append(f"vLLM {was['vllm']}, this cell {cell.vllm}")
    if targets and list(targets) != built_targets:
        out.append(f"targets {','.join(built_targets)}, asked {','.join(targets)}")
    if list(was["arch"]) != list(cell.arch):
        out.append(f"arches {';'.join(was['arch'])}, this cell {';'.join(cell.arch) or 'none'}")
    if split_torch(str(was["torch"]))[0] != cell.torch_version:
        out.append(f"torch {was['torch']}, this env {cell.torch}")
    if str(was["cuda"]).split(".")[0] != str(cell.cuda).split(".")[0]:
        out.append(f"CUDA {was['cuda']}, this env {cell.cuda}")
    return out


def read(built: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The carried build's installable doc (its marker) and ``RECORD``."""
    try:
        doc = json.loads((built / installable.MARKER).read_text())
        record = json.loads((built / RECORD).read_text())
    except (OSError, ValueError) as exc:
        raise CarriedBuildError(
            f"{built} is not a carried build ({exc})",
            fix="give the directory `vllm-matrix export-build` wrote (OUT/vllm-<V>-partial-...)",
        ) from exc
    if record.get("schema") != SCHEMA:
        raise CarriedBuildError(f"{built / RECORD}: not a {SCHEMA} record")
    return doc, record


def take(built: Path, cell: Cell, targets: Sequence[str]) -> tuple[StageResult, list[Path]]:
    """The build stage for ``cell`` from the carried build in ``built``, and its extensions."""
    built = built.resolve()
    doc, record = read(built)
    wrong = _mismatches(record, cell, targets)
    if wrong:
        raise CarriedBuildError(
            f"{built.name} was compiled for another cell: " + "; ".join(wrong),
            fix=f"export the build of a cell like {cell.id} (same release, targets, arches, "
            "torch, CUDA major)",
        )
    stage = StageResult.from_json(record["build"])
    where = results.machine_label(record.get("machine"))
    note = Finding(
        "carried-build",
        "info",
        f"not compiled on this machine: compiled on {where} for {record['cell']['id']}, "
        f"exported {record['exported']}"
        + (" (extensions' debug info stripped)" if record.get("stripped") else ""),
    )
    exts = [built / e for e in doc["extensions"]]
    details = dict(stage.details) | {
        "carried": {
            "cell": record["cell"]["id"],
            "machine": record.get("machine", {}),
            "exported": record["exported"],
            "stripped": record.get("stripped", []),
        },
        "partial": dict(stage.details.get("partial", {})) | {"extensions": [str(p) for p in exts]},
        "installable": doc | {"path": str(built)},
    }
    return (
        StageResult(
            "build",
            stage.status,
            0.0,
            f"carried: {stage.summary} (compiled on {where})",
            (*stage.findings, note),
            details,
            stage.log,
        ),
        exts,
    )


__all__ = ["RECORD", "SCHEMA", "CarriedBuildError", "export", "read", "take"]
