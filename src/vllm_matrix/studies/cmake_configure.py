"""CMake's own configure vs the probe's home-made CMake evaluation (issue 14, item 2): the
compile flags of both sides normalised to one spelling (``parse``), paths named by symbolic
roots ($TREE, $CUDA, $TORCH, ... through infra.portable), and cmake-configure.md rendered
from the benchmark's JSON (``render``, ``write_md``). Running the configures: the script,
benchmarks/studies/cmake_configure.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra import portable as portable_paths


@dataclass(frozen=True)
class Flags:
    gencode: tuple[str, ...]  # sorted "compute_90a->sm_90a"
    defines: tuple[str, ...]  # sorted
    includes: tuple[str, ...]  # in order, "-I DIR" / "-isystem DIR"
    other: tuple[str, ...]  # sorted (order of the rest is not compared)

    def to_json(self) -> dict[str, Any]:
        return {
            "gencode": list(self.gencode),
            "defines": list(self.defines),
            "includes": list(self.includes),
            "other": list(self.other),
        }


def _gencode_pairs(spec: str) -> list[str]:
    """``arch=compute_90a,code=[sm_90a,compute_90a]`` / ``arch=compute_80,code=sm_80``."""
    match = re.match(r"arch=(\w+),code=\[?([\w,]+)\]?$", spec)
    if not match:
        return [f"?{spec}"]
    return [f"{match.group(1)}->{code}" for code in match.group(2).split(",") if code]


_SKIP_WITH_ARG = {"-o", "-MT", "-MF", "-MQ", "-x"}
_SKIP = {"-c", "-MD", "-MMD"}


def parse(argv: Sequence[str], names: Mapping[str, str], source_file: str | None) -> Flags:
    """One compile command's flags; ``names``: absolute root -> its symbol ($TREE ...)."""
    roots = path_roots(names)
    gencode: set[str] = set()
    defines: set[str] = set()
    includes: list[str] = []
    other: list[str] = []
    at = 0

    def path(raw: str) -> str:
        return portable(raw, roots)

    while at < len(argv):
        arg = argv[at]
        following = argv[at + 1] if at + 1 < len(argv) else ""
        if arg in ("-gencode", "--generate-code"):
            gencode.update(_gencode_pairs(following))
            at += 2
            continue
        if arg.startswith(("-gencode=", "--generate-code=")):
            gencode.update(_gencode_pairs(arg.split("=", 1)[1]))
        elif arg.startswith(("-arch=", "--gpu-architecture=")) or arg in ("-arch",):
            value = following if arg == "-arch" else arg.split("=", 1)[1]
            gencode.add(f"-arch {value}")
            if arg == "-arch":
                at += 1
        elif arg == "-D":
            defines.add(following)
            at += 1
        elif arg.startswith("-D"):
            defines.add(arg[2:])
        elif arg == "-I":
            includes.append(f"-I {path(following)}")
            at += 1
        elif arg.startswith("-I"):
            includes.append(f"-I {path(arg[2:])}")
        elif arg == "-isystem":
            includes.append(f"-isystem {path(following)}")
            at += 1
        elif arg.startswith("-isystem="):
            includes.append(f"-isystem {path(arg.split('=', 1)[1])}")
        elif arg in _SKIP_WITH_ARG:
            at += 1
        elif arg in _SKIP or (source_file is not None and path(arg) == path(source_file)):
            pass
        else:
            other.append(path(arg) if arg.startswith("/") else arg)
        at += 1
    return Flags(
        tuple(sorted(gencode)), tuple(sorted(defines)), tuple(includes), tuple(sorted(other))
    )


def path_roots(names: Mapping[str, str]) -> portable_paths.Roots:
    """``names`` (absolute root -> symbol) and the home dir as ``~``, as infra.portable's
    roots: the longest root that holds a path names it."""
    return portable_paths.Roots((*names.items(), (os.path.expanduser("~"), portable_paths.HOME)))


def portable(raw: str, roots: portable_paths.Roots) -> str:
    """An absolute path resolved, then written by its root's symbol (infra.portable)."""
    real = os.path.realpath(raw) if raw.startswith("/") else raw
    return portable_paths.text(real, roots)


def portable_lines(lines: Iterable[str], names: Mapping[str, str]) -> list[str]:
    """Output lines (CMake's errors) with every path written by its root's symbol: the
    run's own roots wherever they stand (glued to a flag too: ``-I/root/...``, which
    infra.portable leaves alone inside a word), then infra.portable for the rest."""
    roots = path_roots(names)
    own = [
        (re.compile(re.escape(root) + r"(?=/|$|[^\w.-])"), symbol)
        for root, symbol in sorted(names.items(), key=lambda item: -len(item[0]))
    ]
    out = []
    for line in lines:
        for pattern, symbol in own:
            line = pattern.sub(symbol, line)
        out.append(portable_paths.text(line, roots))
    return out


KEEP_MARK = "<!-- written by hand below: kept when the tables are rendered again -->"


def render(data: Mapping[str, Any]) -> str:
    """The tables of cmake-configure.md from the JSON; the prose under KEEP_MARK stays."""
    markdown = [
        "# CMake's own configure vs the probe's home-made CMake model",
        "",
        "Generated by `nox -s bench-cmake -- --write` (benchmarks/studies/cmake_configure.py) "
        "from reports/bench/cmake-configure.json. Units: vLLM's own csrc/**.cu|.cpp. "
        '"agree" counts units both sides compile whose -gencode pairs / -D set / include '
        "set / include order are identical.",
        "",
        "| cell | externals | configure rc | CMake units | home units | only CMake | only home "
        "| gencode | defines | include set | include set¹ | include order | configure wall / CPU "
        "| load (1 min) | home-made wall / CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell_id, cell in data["cells"].items():
        homemade = cell["homemade"]
        for mode, configured in cell["configure"].items():
            externals = configured["externals"].items()
            ext = ", ".join(f"{name}: {how}" for name, how in externals) or "none"
            if configured.get("stand_in_files"):
                ext += f" ({configured['stand_in_files']} empty files CMake named)"
            if configured.get("compared"):
                agree, both = configured["agree"], configured["units_both"]
                cols = [
                    str(configured["units_cmake"]),
                    str(configured["units_home"]),
                    str(len(configured["only_cmake"])),
                    str(len(configured["only_home"])),
                    f"{agree['gencode']}/{both}",
                    f"{agree['defines']}/{both}",
                    f"{agree['include_set']}/{both}",
                    f"{both - _real_include_diffs(configured)}/{both}",
                    f"{agree['include_order']}/{both}",
                ]
            else:
                cols = ["no compile_commands.json", str(homemade["units"])] + [""] * 7
            markdown.append(
                f"| `{cell_id}` | {mode}: {ext} | {configured['rc']} | "
                + " | ".join(cols)
                + f" | {configured['wall_s']} s / {configured['cpu_s']} s "
                f"| {configured['load_before'][0]} "
                f"| {homemade['wall_s']} s / {homemade['cpu_s']} s |"
            )
    markdown += [
        "",
        "¹ not counting `-isystem $CUDA/include` on nvcc lines: CMake adds CUDA::cudart's "
        "include dir, nvcc searches it anyway (the home-made model leaves it out on purpose).",
        "",
        "## Disagreements (per class of units)",
        "",
    ]
    for cell_id, cell in data["cells"].items():
        for mode, configured in cell["configure"].items():
            where = f"- `{cell_id}` [{mode}]:"
            if not configured.get("compared"):
                context = configured.get("error_context", [])[:3]
                why = "; ".join(line for line in context if line.strip())
                markdown.append(f"{where} configure failed before export: {why}")
                continue
            only_cmake, only_home = configured["only_cmake"], configured["only_home"]
            if only_cmake:
                markdown.append(
                    f"{where} {len(only_cmake)} units only CMake compiles, "
                    f"e.g. {', '.join(only_cmake[:3])}"
                )
            if only_home:
                markdown.append(
                    f"{where} {len(only_home)} units only the home-made "
                    f"model compiles: {', '.join(only_home[:5])}"
                )
            for diff_class in configured["diff_classes"]:
                diff = json.dumps(diff_class["diff"], sort_keys=True)
                markdown.append(
                    f"{where} {diff_class['units']} units "
                    f"(e.g. {diff_class['examples'][0]}): `{diff}`"
                )
            if configured.get("errors") and configured["rc"]:
                markdown.append(
                    f"{where} configure rc {configured['rc']}: {configured['errors'][-1]}"
                )
    return "\n".join(markdown) + "\n"


IMPLICIT = ["-isystem $CUDA/include"]


def _real_include_diffs(configured: Mapping[str, Any]) -> int:
    """Units whose include sets differ by more than nvcc's own include dir."""
    units = 0
    for diff_class in configured["diff_classes"]:
        include_set = diff_class["diff"].get("include_set")
        if include_set and not (
            include_set.get("cmake_only") == IMPLICIT and not include_set.get("home_only")
        ):
            units += diff_class["units"]
    return units


def write_md(data: Mapping[str, Any], markdown: Path) -> None:
    """``markdown`` rendered from ``data``, what is written by hand under KEEP_MARK kept."""
    tail = ""
    if markdown.is_file() and KEEP_MARK in markdown.read_text():
        tail = markdown.read_text().split(KEEP_MARK, 1)[1]
    markdown.write_text(render(data) + "\n" + KEEP_MARK + tail)
