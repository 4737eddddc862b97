"""Validation of the build-cost model (stages/compile/cost.py): leave-one-out over every
recorded build of knowledge/data/builds.toml (vllm_matrix.studies.estimate_loo). Prints the
table; ``--write`` saves reports/bench/estimate-loo.{json,md}.

Run: python benchmarks/studies/estimate_loo.py [--write]
     python benchmarks/studies/estimate_loo.py --record RESULT.json   (a [[build]] block for
     builds.toml from a build the tool ran: its targets, resources, configure, edge_log)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from vllm_matrix.studies.estimate_loo import record, render, rows

HERE = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--write", action="store_true", help="save reports/bench/estimate-loo.*")
    parser.add_argument(
        "--record", type=Path, metavar="RESULT.json", help="print a [[build]] block for it"
    )
    args = parser.parse_args(argv)
    if args.record:
        print(record(args.record))
        return 0
    table = rows()
    markdown = render(table)
    print(markdown)
    if args.write:
        out = HERE / "reports" / "bench"
        (out / "estimate-loo.json").write_text(json.dumps(table, indent=1) + "\n")
        (out / "estimate-loo.md").write_text(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
