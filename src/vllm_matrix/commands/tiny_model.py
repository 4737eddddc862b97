"""`tiny-model`: a tiny Llama checkpoint in bf16 and ModelOpt FP8, made locally (the [model]
extra: torch is imported only when the command runs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vllm_matrix.infra.errors import MatrixError


def run(args: argparse.Namespace) -> int:
    try:
        from vllm_matrix.stages.model import tinymodel
    except ImportError as exc:
        raise MatrixError(
            f"tiny-model needs torch, safetensors, numpy and tokenizers ({exc})",
            fix="pip install -e '.[model]'",
        ) from exc
    made = tinymodel.make(Path(args.out), tinymodel.TinySpec(seed=args.seed))
    d = made.to_json()
    if args.compare:
        d["cpu_fp8_vs_bf16"] = tinymodel.compare_cpu(made).to_json()
    print(json.dumps(d, indent=1))
    return 0


__all__ = ["run"]
