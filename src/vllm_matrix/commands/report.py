"""`report`: reports/ rendered again from results/, or merged from many machines' results."""

from __future__ import annotations

import argparse
from pathlib import Path

from vllm_matrix.commands.common import load_matrix, say, skipped
from vllm_matrix.infra.errors import EXIT_CELL_ERROR, MatrixError
from vllm_matrix.report import compat as report
from vllm_matrix.report import merge


def run(args: argparse.Namespace) -> int:
    m, ws = load_matrix(args)
    if not args.merge:
        _, md, unread = report.write_report(m, ws.results, ws.reports, say)
        print(md)
        return skipped(unread)
    dirs = [Path(d) for d in args.merge]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise MatrixError(
            f"--merge: not a directory: {', '.join(missing)}",
            fix="pass the directories holding the result files (results/ of each machine)",
        )
    doc, refused = merge.collect(m, dirs, ws.reports / report.OTHER_DIR)
    _, md = report.write_doc(doc, ws.reports, echo=say)
    print(md)
    for x in refused:
        say(f"error: refused {x.file}: {x.reason}")
    if refused:
        # The report holds every readable file; exit 3 (not a complete answer, and not a
        # fact about vLLM) so a CI job does not publish a map with cells silently missing
        # (the refused files are listed in it too).
        say(f"{len(refused)} result file(s) refused; the other {doc['merged']['files']} merged")
        return EXIT_CELL_ERROR
    return 0


__all__ = ["run"]
