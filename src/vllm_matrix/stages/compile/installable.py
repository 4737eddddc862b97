"""A partial build made installable: vLLM's Python package from the build's work copy, the
extensions the build made, and a ``vllm-<V>+partial.dist-info`` -- a directory to put on
``sys.path`` (or copy into site-packages), never a wheel.

vLLM's CUDA platform hard-imports ``vllm._C`` and ``vllm._C_stable_libtorch``, and every
decoder model reaches ``vllm.vllm_flash_attn``, whose ``__init__`` raises ImportError unless
``_vllm_fa2_C`` or ``_vllm_fa3_C`` exists (0.20.0: vllm_flash_attn/__init__.py, via
layers/attention -> fa_utils.py). Where no flash-attention extension was built, that
``__init__`` is replaced by a stand-in the tool writes: the same names from the release's own
``flash_attn_interface`` (which reports FA2/FA3 unavailable), without the raise, so vLLM
picks another attention backend (the model stage asks for TRITON_ATTN). Its first line says
what it is, and the result names it: "attention: Triton; flash-attn not built".
The version carries ``+partial`` (``importlib.metadata.version("vllm")``; vLLM's platform
detection only looks for "cpu" in it).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ATTENTION_NOTE = "attention: Triton; flash-attn not built"
STANDIN_HEADER = "# vllm-matrix stand-in: " + ATTENTION_NOTE
MARKER = "vllm-matrix-partial.json"
FA_EXTENSIONS = ("_vllm_fa2_C", "_vllm_fa3_C")

STANDIN_INIT = f'''{STANDIN_HEADER}
# Written by vllm-matrix in place of vLLM's vllm_flash_attn/__init__.py in a partial build
# without a flash-attention extension: the release's flash_attn_interface reports FA2/FA3
# unavailable, and vLLM's backend selection then takes another backend. Not vLLM's file.
from vllm.vllm_flash_attn.flash_attn_interface import (  # noqa: E402
    FA2_AVAILABLE,
    FA3_AVAILABLE,
    fa_version_unsupported_reason,
    flash_attn_varlen_func,
    get_scheduler_metadata,
    is_fa_version_supported,
)

VLLM_MATRIX_STANDIN = "{ATTENTION_NOTE}"

__all__ = [
    "fa_version_unsupported_reason",
    "flash_attn_varlen_func",
    "get_scheduler_metadata",
    "is_fa_version_supported",
]
'''


def name_of(version: str, targets: Sequence[str]) -> str:
    """The directory's name: says partial and what it holds."""
    return f"vllm-{version}-partial-{'+'.join(targets)}"


def assemble(
    work_copy: Path, built: Path, dest: Path, version: str, targets: Sequence[str]
) -> dict[str, Any]:
    """Make ``dest``: ``work_copy``/vllm (the release's Python package as built), the
    extensions under ``built``/vllm laid over it, the stand-in where needed, the dist-info."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    pkg = dest / "vllm"
    shutil.copytree(work_copy / "vllm", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copytree(built / "vllm", pkg, dirs_exist_ok=True)
    exts = sorted(str(p.relative_to(dest)) for p in pkg.rglob("*.so"))
    fa = [e for e in exts if any(Path(e).name.startswith(n) for n in FA_EXTENSIONS)]
    standins: list[str] = []
    init = pkg / "vllm_flash_attn" / "__init__.py"
    if not fa and init.parent.is_dir():
        init.write_text(STANDIN_INIT)
        standins.append(str(init.relative_to(dest)))
    full = f"{version}+partial"
    info = dest / f"vllm-{full}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\n"
        "Name: vllm\n"
        f"Version: {full}\n"
        f"Summary: PARTIAL build by vllm-matrix (targets {', '.join(targets)}; "
        f"{ATTENTION_NOTE if standins else 'flash-attn built'}); not a wheel\n"
    )
    (info / "INSTALLER").write_text("vllm-matrix\n")
    files = sorted(
        str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and p.parent != info
    )
    # CSV, quoted: vLLM ships file names with commas (fused_moe configs "E=8,N=...").
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([f, "", ""] for f in files)
    (info / "RECORD").write_text(buf.getvalue())
    doc: dict[str, Any] = {
        "partial": True,
        "name": dest.name,
        "version": full,
        "targets": list(targets),
        "extensions": exts,
        "standins": standins,
        "attention": ATTENTION_NOTE if standins else "flash-attn built",
        "files": len(files),
    }
    (dest / MARKER).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


__all__ = ["ATTENTION_NOTE", "MARKER", "STANDIN_HEADER", "assemble", "name_of"]
