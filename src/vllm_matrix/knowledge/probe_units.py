"""probe_units.toml: the bindings candidates, the FetchContent externals, the probe's costs."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.infra import datafiles, tomlfile


@dataclass(frozen=True)
class ExternalSpec:
    name: str
    include_prefixes: tuple[str, ...]
    pypi: str | None
    pypi_root: str
    version_header: str
    cmake_vars: tuple[tuple[str, str], ...]  # what its own CMakeLists.txt sets
    source: str


@dataclass(frozen=True)
class ProbeKnowledge:
    bindings: tuple[str, ...]
    externals: tuple[ExternalSpec, ...]
    front_end_gib: float
    codegen_gib: float
    codegen_per_front_end: float


def _data_path() -> Path:
    return datafiles.data_path("probe_units.toml")


def load_knowledge(path: Path | None = None) -> ProbeKnowledge:
    return _load_knowledge(path or _data_path())


@functools.lru_cache(maxsize=8)
def _load_knowledge(path: Path) -> ProbeKnowledge:
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, ("bindings", "external", "cost"), "the top level")
    b = doc.data.get("bindings", {})
    tomlfile.check_keys(doc, b, ("candidates", "source"), "[bindings]")
    exts = []
    for n, e in enumerate(doc.data.get("external", [])):
        ctx = f"[[external]] #{n + 1}"
        tomlfile.check_keys(
            doc,
            e,
            (
                "name",
                "include_prefixes",
                "pypi",
                "pypi_root",
                "version_header",
                "cmake_vars",
                "source",
            ),
            ctx,
        )
        exts.append(
            ExternalSpec(
                tomlfile.require(doc, e, "name", str, ctx),
                tomlfile.str_list(doc, e.get("include_prefixes", []), "include_prefixes", ctx),
                e.get("pypi"),
                str(e.get("pypi_root", "")),
                str(e.get("version_header", "")),
                tuple((str(k), str(v)) for k, v in e.get("cmake_vars", {}).items()),
                tomlfile.require(doc, e, "source", str, ctx),
            )
        )
    c = doc.data.get("cost", {})
    tomlfile.check_keys(
        doc, c, ("front_end_gib", "codegen_gib", "codegen_per_front_end", "source"), "[cost]"
    )
    return ProbeKnowledge(
        tomlfile.str_list(doc, b.get("candidates", []), "candidates", "[bindings]"),
        tuple(exts),
        float(tomlfile.expect(doc, c.get("front_end_gib", 2.0), "front_end_gib", float, "[cost]")),
        float(tomlfile.expect(doc, c.get("codegen_gib", 5.0), "codegen_gib", float, "[cost]")),
        float(
            tomlfile.expect(
                doc, c.get("codegen_per_front_end", 12.0), "codegen_per_front_end", float, "[cost]"
            )
        ),
    )
