"""Command line: `vllm-matrix <command>` (also what tasks.py and noxfile.py call).

The parser is built from the option table (commands/options.py); each command is the
``run(args) -> int`` of its module in commands/; errors become exit codes here, and only here.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from vllm_matrix import __version__
from vllm_matrix.commands import (
    blackwell,
    cells,
    cimatrix,
    currency,
    derive_facts,
    derive_pins,
    derive_torch,
    doctor,
    estimate,
    export_build,
    facts,
    map_slice,
    model,
    modelopt_check,
    newest,
    options,
    pixi,
    prefetch,
    release,
    report,
    tiny_model,
)
from vllm_matrix.commands import map as map_cmd
from vllm_matrix.commands import run as run_cmd
from vllm_matrix.infra.errors import (
    EXIT_CELL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    MatrixError,
    ToolError,
    describe_os_error,
)

RUN: dict[str, Callable[[argparse.Namespace], int]] = {
    "facts": facts.run,
    "cells": cells.run,
    "run": run_cmd.run,
    "preflight": run_cmd.run,
    "map": map_cmd.run,
    "map-slice": map_slice.run,
    "release": release.run,
    "estimate": estimate.run,
    "report": report.run,
    "ci-matrix": cimatrix.run,
    "doctor": doctor.run,
    "pixi-snippet": pixi.run,
    "prefetch": prefetch.run,
    "modelopt-check": modelopt_check.run,
    "tiny-model": tiny_model.run,
    "model": model.run,
    "export-build": export_build.run,
    "currency": currency.run,
    "newest": newest.run,
    "blackwell": blackwell.run,
    "derive-torch": derive_torch.run,
    "derive-pins": derive_pins.run,
    "derive-facts": derive_facts.run,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vllm-matrix", description=__doc__.splitlines()[0])
    options.DEBUG.add_to(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    for command in options.COMMANDS:
        s = sub.add_parser(command.name, help=command.help)
        options.add_options(s, command)
        s.set_defaults(fn=RUN[command.name])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        rc: int = args.fn(args)
        return rc
    except MatrixError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return EXIT_CELL_ERROR if isinstance(exc, ToolError) else EXIT_USAGE
    except OSError as exc:  # disk full, read-only cache, outside any cell
        if args.debug:
            raise
        message, fix = describe_os_error(exc)
        print(f"error: {message}\n  fix: {fix}", file=sys.stderr)
        return EXIT_CELL_ERROR
    except KeyboardInterrupt:
        print("interrupted: results written so far are valid; rerun to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
