"""`map`: the [grid] at preflight, probes at verdict boundaries within a budget, reports/map.*."""

from __future__ import annotations

import argparse
import json
import sys

from vllm_matrix.commands.common import load_matrix, say
from vllm_matrix.infra import config
from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.pipeline import mapping, runner
from vllm_matrix.report import browser
from vllm_matrix.report import map as mapreport


def run(args: argparse.Namespace) -> int:
    """The grid at preflight depth, probes at boundaries within --probe-budget, the map."""
    m, ws = load_matrix(args)
    committed = mapreport.read(ws.reports / "map.json")
    if args.render:  # the committed data drawn again: no preflight, no probe
        if not committed:
            raise MatrixError("no reports/map.json to render", fix="run `nox -s map` first")
        d = committed
    else:

        def probe_cell(cell: config.Cell, force: bool) -> None:
            runner.run_cell(cell, ws, depth="probe", force=force, echo=say)

        # a compile the committed map holds and results/ lacks (a fresh clone) is kept
        earlier = mapreport.compiled_cells(committed)
        if earlier:
            say(
                f"the committed map's {len(earlier)} compiled cell(s) count where results/ has none"
            )
        done = mapping.run_map(
            mapping.grid_cells(m),
            ws.results,
            probe_cell,
            args.probe_budget,
            echo=say,
            earlier=earlier,
        )
        d = done.to_json()
        atomic_write_text(ws.results / "map.json", json.dumps(d) + "\n")
    md, page = mapreport.write(d, ws.reports)
    if args.screenshot:
        exe = browser.headless_shell(log=ws.results / "logs" / "browser.log")
        for arch in mapreport.arch_order(d):
            size = mapreport.picture_size(d, arch)
            png = browser.screenshot(
                exe, page, ws.reports / f"map-{arch}.png", size, f"only-{arch}"
            )
            say(f"picture: {png} ({browser.png_colors(png)} colours)")
    n, p = d["counts"], d["probes"]
    print(
        f"{n['cells']} cells ({n['releases']} releases x {n['torch_builds']} torch builds, "
        f"{n['tables']} tables); preflight {d['preflight_s']:.1f}s; probes {len(p['probed'])} "
        f"({p['spent_s']:.0f}s of {p['budget_s']:.0f}s), boundaries {p['boundaries']}, "
        f"compile-checkable {p['compile_checkable']}, confirmed {len(p['confirmed'])}"
    )
    print(f"map: {md} {page}", file=sys.stderr)
    return 0


__all__ = ["run"]
