"""The system provider: an existing install (explicit path, $CUDA_HOME,
/usr/local/cuda-X.Y, /usr/local/cuda).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.stages.toolkit import base
from vllm_matrix.stages.toolkit.base import Toolkit


def system_candidates(version: str, path: Path | None) -> list[Path]:
    if path is not None:
        return [path]
    out = []
    home = os.environ.get("CUDA_HOME")
    if home:
        out.append(Path(home))
    out += [Path(f"/usr/local/cuda-{version}"), Path("/usr/local/cuda")]
    return list(dict.fromkeys(out))


def provide(version: str, path: Path | None, log: Path | None) -> Toolkit:
    looked: list[str] = []
    for cand in system_candidates(version, path):
        nvcc = cand / "bin" / "nvcc"
        if not nvcc.exists():
            looked.append(f"{cand} (no bin/nvcc)")
            continue
        tk = base.inspect_root(cand, "system", log=log)
        if tk.version != version:
            looked.append(f"{cand} (CUDA {tk.version})")
            continue
        problems = base.layout_problems(cand)
        notes = [f"existing install at {cand}"]
        if problems:
            notes.append("layout gaps: " + "; ".join(problems))
        return replace(tk, notes=tuple(notes))
    raise NotAvailable(
        f"no CUDA {version} installed here; looked at: {', '.join(looked)}",
        fix=f"install CUDA {version}, set CUDA_HOME to it, or use provider debian/pypi",
    )
