"""Re-judge a device run from what it recorded, with the judgement code of this checkout
(the rules: vllm_matrix.studies.rejudge).

  python benchmarks/studies/rejudge.py RESULT.json --gpu-json WORKER.json --out OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vllm_matrix.infra import results
from vllm_matrix.studies.rejudge import rejudge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--gpu-json", type=Path, help="the gpu worker's JSON from the same run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    doc = results.read(args.result)
    worker = json.loads(args.gpu_json.read_text()) if args.gpu_json else None
    rejudged = rejudge(doc, worker)
    args.out.write_text(json.dumps(rejudged, indent=1) + "\n")
    verdict = rejudged["verdict"]
    print(f"{args.out.name}: {verdict['verdict']} at {verdict['depth']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
