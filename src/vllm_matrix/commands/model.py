"""`model`: the model stage on its own: vLLM serves DIR/fp8 (modelopt) and DIR/bf16, compared."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vllm_matrix.infra import results
from vllm_matrix.infra.errors import EXIT_CELL_ERROR


def run(args: argparse.Namespace) -> int:
    from vllm_matrix.stages.model import modelstage

    d = Path(args.dir)
    res = modelstage.run(d / "bf16", d / "fp8", Path(args.work), python=args.python)
    if args.json:
        print(json.dumps(res.to_json(), indent=1))
    else:
        print(f"{res.status:8} {res.summary}")
        for f in res.findings:
            print(f"{'':8} {f.message}")
    return {results.PASS: 0, results.SKIP: 0, results.ERROR: EXIT_CELL_ERROR}.get(res.status, 1)


__all__ = ["run"]
