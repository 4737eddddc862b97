"""The smoke stage's ``import vllm`` check: whether vLLM imports beside the cell's torch
env, and which of the wheel's requirements are missing or unsatisfied there.

    python3 import_worker.py

Prints one line, ``SMOKE-JSON {...}``; the verdict is ``audit.smoke``'s.

Run by: the cell's full torch env's python (``stages/audit.py``, ``smoke``), with the
wheel installed on PYTHONPATH.
May import: the standard library, vllm (what it checks), packaging (vLLM's build
requirements put it in that env; it reads the requirements as pip does).
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

out: dict[str, Any] = {}
try:
    import vllm

    out["ok"] = True
    out["version"] = getattr(vllm, "__version__", None)
except BaseException as exc:
    out["ok"] = False
    out["error"] = f"{type(exc).__name__}: {exc}"
    out["missing_module"] = getattr(exc, "name", None)
from packaging.requirements import Requirement  # noqa: E402 (after vllm, as it always was)

missing: list[str] = []
wrong: list[str] = []
try:
    dist = metadata.distribution("vllm")
    reqs = dist.requires or []
except metadata.PackageNotFoundError:
    reqs = []
for r in reqs:
    req = Requirement(r)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        have = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        missing.append(str(req))
        continue
    if req.specifier and not req.specifier.contains(have, prereleases=True):
        wrong.append(f"{req} (have {have})")
out["requires_missing"] = missing
out["requires_unsatisfied"] = wrong
print("SMOKE-JSON " + json.dumps(out))
