"""Probe: compile only the translation units that decide whether a cell builds.

A full vLLM build is hours on two cores; whether (vLLM, torch, CUDA, arch) compiles is
mostly decided by a handful of units and, inside each, by the host C++ front end:
``nvcc --dryrun`` shows the pipeline as host ``gcc -E`` -> ``cudafe++`` (EDG, full C++
semantic check of the host side: "namespace "at" has no member "Float8_e8m0fnu"") ->
device ``gcc -E`` -> ``cicc`` (device front end + code generation) -> ``ptxas`` ->
``fatbinary`` -> host ``gcc -c``. Measured (nvcc 12.4, sm_90, 2 shared cores): the front
end (host ``gcc -E`` 3-4 s + cudafe++ 45-80 s, almost all of it torch's headers) is 77 s for
0.8.5's gptq_marlin.cu, whose cicc alone runs > 818 s (stopped at 15 min); for lighter
units the whole pipeline is ~3x the front end (cicc ~75 s, host ``gcc -c`` ~100 s). So:

- depth ``front-end``: run the dry-run's steps up to and including cudafe++ (C++ units:
  ``g++ -fsyntax-only``);
- depth ``codegen``: the whole pipeline, but only for the unit's lowest arch;
- depth ``auto``: front end everywhere, then codegen of the arch-gated units whose
  estimated cost (``codegen_per_front_end`` x their front-end time) fits the budget.

Which units: the bindings file, every unit the API scan flagged (a header hit selects
a unit that includes it), and one representative per kernel family the cell's arches
enable. Families are not hard-coded: the tree's CMakeLists.txt and cmake/utils.cmake are
*evaluated* by a small CMake interpreter for the cell's arches and nvcc version, so
``cuda_archs_loose_intersection`` and ``set_gencode_flags_for_srcs`` give exactly the
per-file arches, and ``define_gpu_extension_target`` the per-target flags, of the real
build. Units whose include closure needs a FetchContent dependency that is not here
(CUTLASS) are reported "not probed", unless PyPI's ``nvidia-cutlass`` at the tree's pin
(or ``VLLM_CUTLASS_SRC_DIR``) supplies the headers.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import glob
import json
import os
import re
import resource
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm_matrix.infra import datafiles, proc, progress, tomlfile
from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import FAIL, PASS, WARN, Finding, StageResult
from vllm_matrix.knowledge import classify
from vllm_matrix.stages import frontcache
from vllm_matrix.stages.apiscan import ApiHit
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.externals import ExternalDir, external_dir
from vllm_matrix.stages.facts import SourceFacts
from vllm_matrix.stages.fixups import Fixups, torch_arch_list
from vllm_matrix.stages.toolkit import Toolkit

DEPTHS = ("auto", "front-end", "codegen")
CUDA_SUFFIXES = (".cu",)
CXX_SUFFIXES = (".cpp", ".cc", ".cxx")
BUILD_TYPE = "RelWithDebInfo"  # vLLM setup.py: "Debug" if --debug else "RelWithDebInfo"
UNIT_TIMEOUT_S = 20 * 60

# ==================================================================== knowledge (data)


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


# ==================================================================== CMake: lexer


@dataclass(frozen=True)
class _Tok:
    text: str
    quoted: bool


@dataclass(frozen=True)
class _Cmd:
    name: str  # lower-cased
    args: tuple[_Tok, ...]
    where: str  # "CMakeLists.txt:123"


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACKET = re.compile(r"\[(=*)\[")


def _unescape(raw: str) -> str:
    """CMake escape sequences: \\t \\n \\r, \\; and escape_identity (\\X -> X)."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt == "\n":  # line continuation inside a quoted argument
                pass
            elif nxt in "tnr":
                out.append({"t": "\t", "n": "\n", "r": "\r"}[nxt])
            elif nxt.isalnum():
                out.append("\\" + nxt)  # not a CMake escape; keep (CMake would reject it)
            else:
                out.append(nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _lex(text: str, file: str) -> list[_Cmd]:
    """Commands of a CMake file; parentheses inside arguments become their own tokens."""
    cmds: list[_Cmd] = []
    i, n = 0, len(text)

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip_comment(pos: int) -> int:
        m = _BRACKET.match(text, pos + 1)
        if m:
            end = text.find("]" + m.group(1) + "]", m.end())
            return n if end < 0 else end + len(m.group(1)) + 2
        end = text.find("\n", pos)
        return n if end < 0 else end

    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":
            i = skip_comment(i)
            continue
        m = _IDENT.match(text, i)
        if not m:
            i += 1
            continue
        start, j = i, m.end()
        while j < n and text[j] in " \t":
            j += 1
        if j >= n or text[j] != "(":
            i = m.end()
            continue
        i = j + 1
        args: list[_Tok] = []
        depth = 0
        while i < n:
            c = text[i]
            if c.isspace():
                i += 1
            elif c == "#":
                i = skip_comment(i)
            elif c == "(":
                depth += 1
                args.append(_Tok("(", False))
                i += 1
            elif c == ")":
                i += 1
                if depth == 0:
                    break
                depth -= 1
                args.append(_Tok(")", False))
            elif c == '"':
                k = i + 1
                while k < n and text[k] != '"':
                    k += 2 if text[k] == "\\" else 1
                args.append(_Tok(_unescape(text[i + 1 : k]), True))
                i = k + 1
            elif c == "[" and (mb := _BRACKET.match(text, i)):
                close = "]" + mb.group(1) + "]"
                end = text.find(close, mb.end())
                end = n if end < 0 else end
                body = text[mb.end() : end]
                args.append(_Tok(body[1:] if body.startswith("\n") else body, True))
                i = end + len(close)
            else:
                k = i
                while k < n:
                    ch = text[k]
                    if ch.isspace() or ch in '()"#':
                        break
                    if ch == "\\" and k + 1 < n:
                        k += 2
                        continue
                    if ch == "$" and k + 1 < n and text[k + 1] in "{<":
                        # ${...} / $<...> may hold characters that would end a bare word
                        closers = ["}" if text[k + 1] == "{" else ">"]
                        k += 2
                        while k < n and closers:
                            if text[k] == "$" and k + 1 < n and text[k + 1] in "{<":
                                closers.append("}" if text[k + 1] == "{" else ">")
                                k += 2
                                continue
                            if text[k] == closers[-1]:
                                closers.pop()
                            k += 1
                        continue
                    k += 1
                args.append(_Tok(_unescape(text[i:k]), False))
                i = k
        cmds.append(_Cmd(m.group(0).lower(), tuple(args), f"{file}:{line_at(start)}"))
    return cmds


# ==================================================================== CMake: blocks


@dataclass
class _If:
    arms: list[tuple[tuple[_Tok, ...] | None, list[_Node]]]


@dataclass
class _Loop:
    kind: str  # "foreach" | "while"
    args: tuple[_Tok, ...]
    body: list[_Node]


@dataclass
class _Def:
    kind: str  # "function" | "macro"
    name: str
    params: tuple[str, ...]
    body: list[_Node]


_Node = _Cmd | _If | _Loop | _Def


def _blocks(cmds: Sequence[_Cmd]) -> list[_Node]:
    top: list[_Node] = []
    stack: list[tuple[_If | _Loop | _Def, list[_Node]]] = []

    def body() -> list[_Node]:
        return stack[-1][1] if stack else top

    for c in cmds:
        if c.name == "if":
            node_if = _If([(c.args, [])])
            body().append(node_if)
            stack.append((node_if, node_if.arms[0][1]))
        elif c.name in ("elseif", "else") and stack and isinstance(stack[-1][0], _If):
            node = stack[-1][0]
            assert isinstance(node, _If)
            arm: tuple[tuple[_Tok, ...] | None, list[_Node]] = (
                c.args if c.name == "elseif" else None,
                [],
            )
            node.arms.append(arm)
            stack[-1] = (node, arm[1])
        elif c.name in ("foreach", "while"):
            loop = _Loop(c.name, c.args, [])
            body().append(loop)
            stack.append((loop, loop.body))
        elif c.name in ("function", "macro") and c.args:
            d = _Def(c.name, c.args[0].text.lower(), tuple(a.text for a in c.args[1:]), [])
            body().append(d)
            stack.append((d, d.body))
        elif c.name in ("endif", "endforeach", "endwhile", "endfunction", "endmacro"):
            if stack:
                stack.pop()
        else:
            body().append(c)
    return top


def _subst_macro(nodes: list[_Node], mapping: dict[str, str]) -> list[_Node]:
    """A macro's body with ${param} replaced textually, as CMake does."""
    pat = re.compile(r"\$\{(" + "|".join(re.escape(k) for k in mapping) + r")\}")

    def tok(t: _Tok) -> _Tok:
        return _Tok(pat.sub(lambda m: mapping[m.group(1)], t.text), t.quoted)

    def toks(ts: tuple[_Tok, ...]) -> tuple[_Tok, ...]:
        return tuple(tok(t) for t in ts)

    out: list[_Node] = []
    for n in nodes:
        if isinstance(n, _Cmd):
            out.append(_Cmd(n.name, toks(n.args), n.where))
        elif isinstance(n, _If):
            out.append(
                _If([(None if c is None else toks(c), _subst_macro(b, mapping)) for c, b in n.arms])
            )
        elif isinstance(n, _Loop):
            out.append(_Loop(n.kind, toks(n.args), _subst_macro(n.body, mapping)))
        else:
            out.append(n)
    return out


# ==================================================================== CMake: values

_TRUE = {"1", "ON", "YES", "TRUE", "Y"}
_FALSE = {"0", "OFF", "NO", "FALSE", "N", "IGNORE", "NOTFOUND", ""}
_UNARY = {
    "EXISTS",
    "COMMAND",
    "DEFINED",
    "TARGET",
    "POLICY",
    "TEST",
    "IS_DIRECTORY",
    "IS_ABSOLUTE",
    "IS_SYMLINK",
    "IS_READABLE",
}
_BINARY = {
    "EQUAL",
    "LESS",
    "LESS_EQUAL",
    "GREATER",
    "GREATER_EQUAL",
    "STREQUAL",
    "STRLESS",
    "STRLESS_EQUAL",
    "STRGREATER",
    "STRGREATER_EQUAL",
    "VERSION_EQUAL",
    "VERSION_LESS",
    "VERSION_LESS_EQUAL",
    "VERSION_GREATER",
    "VERSION_GREATER_EQUAL",
    "MATCHES",
    "IN_LIST",
    "PATH_EQUAL",
}
_REF = re.compile(r"\$(ENV|CACHE)?\{([^${}]*)\}")


def _split(value: str) -> list[str]:
    return value.split(";") if value != "" else []


def _is_false(value: str) -> bool:
    up = value.upper()
    return up in _FALSE or up.endswith("-NOTFOUND")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _cmake_version(text: str) -> tuple[int, ...]:
    """CMake's VERSION_* parse: dot-separated components, leading digits of each."""
    parts = []
    for comp in text.strip().split("."):
        m = re.match(r"\d+", comp)
        parts.append(int(m.group(0)) if m else 0)
        if not m or m.end() != len(comp):
            break
    return tuple(parts)


def _version_cmp(a: str, b: str) -> int:
    va, vb = _cmake_version(a), _cmake_version(b)
    n = max(len(va), len(vb))
    va, vb = va + (0,) * (n - len(va)), vb + (0,) * (n - len(vb))
    return (va > vb) - (va < vb)


def _natural_key(s: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", s) if p]


def _py_regex(cmake_re: str) -> str:
    """CMake regex -> Python: CMake has no \\d-style classes; ``\\X`` means a literal X."""
    out, i = [], 0
    while i < len(cmake_re):
        c = cmake_re[i]
        if c == "\\" and i + 1 < len(cmake_re):
            nxt = cmake_re[i + 1]
            out.append(re.escape(nxt) if nxt.isalnum() else "\\" + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _regex_replace(pattern: str, repl: str, text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return re.sub(r"\\(\d)", lambda g: m.group(int(g.group(1))) or "", repl)

    return re.sub(_py_regex(pattern), sub, text)


def eval_genex(text: str, language: str) -> str:
    """The generator expressions vLLM's CMake uses, for one compile language."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$<", i):
            depth, k = 0, i
            while k < len(text):
                if text.startswith("$<", k):
                    depth += 1
                    k += 2
                    continue
                if text[k] == ">":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            inner = eval_genex(text[i + 2 : k], language)
            out.append(_genex_value(inner, language))
            i = k + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _genex_value(inner: str, language: str) -> str:
    head, sep, rest = inner.partition(":")
    if not sep:
        return {"1": "", "0": ""}.get(head, "")
    if head == "1":
        return rest
    if head == "0":
        return ""
    if head == "COMPILE_LANGUAGE":
        return "1" if language in rest.split(",") else "0"
    if head == "COMPILE_LANG_AND_ID":
        return "1" if rest.split(",")[0] == language else "0"
    if head == "BUILD_INTERFACE":
        return rest
    if head in ("BOOL", "NOT"):
        v = not _is_false(rest)
        return "1" if (v if head == "BOOL" else not v) else "0"
    return ""  # INSTALL_INTERFACE, TARGET_PROPERTY, ...: nothing a compile line needs


# ==================================================================== CMake: the model


@dataclass(frozen=True)
class Family:
    """One ``set_gencode_flags_for_srcs`` call the cell's configuration reaches."""

    arch_var: str  # "CUDA_ARCHS" (every arch) or a gated list, e.g. "MARLIN_ARCHS"
    srcs_var: str
    archs: tuple[str, ...]  # as vLLM writes them: "9.0", "9.0a", "9.0+PTX"
    sources: tuple[str, ...]  # relative to the tree
    where: str

    @property
    def name(self) -> str:
        return (
            self.arch_var if self.srcs_var in ("", "SRCS") else f"{self.arch_var}/{self.srcs_var}"
        )

    @property
    def gated(self) -> bool:
        """Arch-gated: its arch list is an intersection narrower than the tree's CUDA_ARCHS
        (not a target's catch-all family of sources without per-source arches)."""
        return self.arch_var != "CUDA_ARCHS" and not self.arch_var.startswith("target ")


@dataclass(frozen=True)
class Target:
    name: str
    sources: tuple[str, ...]
    options: tuple[str, ...]  # COMPILE_OPTIONS (generator expressions unevaluated)
    definitions: tuple[str, ...]
    includes: tuple[str, ...]  # absolute
    sabi: str | None  # Python_add_library USE_SABI
    where: str
    definition_where: tuple[tuple[str, str], ...] = ()  # definition -> its command's file:line
    # CUDA_ARCHITECTURES ("90-real", "80-virtual", "90"): how 0.4-0.6.1 trees set arches,
    # per target rather than per source
    cuda_architectures: tuple[str, ...] = ()

    def gencode(self) -> list[str]:
        """CMake's code generation flags for CUDA_ARCHITECTURES, as -gencode pairs."""
        out: list[str] = []
        for a in self.cuda_architectures:
            num, _, kind = a.partition("-")
            if kind in ("", "real"):
                out += ["-gencode", f"arch=compute_{num},code=sm_{num}"]
            if kind in ("", "virtual"):
                out += ["-gencode", f"arch=compute_{num},code=compute_{num}"]
        return out


@dataclass(frozen=True)
class BuildModel:
    """What the tree's CMake does for one (nvcc, arches, torch) configuration."""

    # CUDA_ARCHS after the tree's CUDA_SUPPORTED_ARCHS filter (before 0.6.2: the targets'
    # CUDA_ARCHITECTURES, the same filter applied by override_gpu_arches)
    cuda_archs: tuple[str, ...]
    families: tuple[Family, ...]
    targets: tuple[Target, ...]
    source_options: dict[str, tuple[str, ...]]  # per-source COMPILE_OPTIONS
    source_props: dict[str, dict[str, str]]  # COMPILE_FLAGS, INCLUDE_DIRECTORIES, LANGUAGE
    cuda_flags: str  # CMAKE_CUDA_FLAGS at the end of CMakeLists.txt
    cxx_flags: str
    fatal: tuple[str, ...]  # message(FATAL_ERROR ...) the configuration reaches
    notes: tuple[str, ...]
    empty_globs: tuple[str, ...]  # file(GLOB) patterns that match nothing (generated sources)
    skipped_includes: tuple[str, ...]  # external projects (flash-attention, FlashMLA, ...)

    def target_of(self, src: str) -> Target | None:
        return next((t for t in self.targets if src in t.sources), None)

    def family_of(self, src: str) -> Family | None:
        return next((f for f in self.families if src in f.sources), None)

    def built_sources(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.targets:
            for s in t.sources:
                if s.endswith(CUDA_SUFFIXES + CXX_SUFFIXES):
                    seen[s] = None
        return list(seen)


class _Return(Exception):
    pass


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


@dataclass
class _TargetBuild:
    name: str
    sources: list[str]
    where: str
    sabi: str | None = None
    options: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)
    definition_where: dict[str, str] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)
    cuda_architectures: list[str] = field(default_factory=list)


class _CMake:
    """Just enough of CMake to run vLLM's CMakeLists.txt and cmake/utils.cmake.

    Variables, cache variables, if/elseif/else with CMake's operator precedence,
    foreach/while, function (own scope, PARENT_SCOPE) and macro (textual ${param}
    substitution), cmake_parse_arguments, list/string/file(GLOB), source and target
    properties. Everything else (find_package, execute_process, install, ...) is ignored:
    its effects are preset (``presets``) or irrelevant to compile lines.
    """

    def __init__(
        self,
        root: Path,
        presets: dict[str, str],
        env: dict[str, str],
        run_python: Callable[[str], str],
        fetch_dirs: dict[str, Path],
        external_vars: dict[str, dict[str, str]],
    ) -> None:
        self.root = root
        self.scopes: list[dict[str, str]] = [dict(presets)]
        self.cache: dict[str, str] = {}
        self.env = env
        self.run_python_hook = run_python
        self.fetch_dirs = fetch_dirs
        self.external_vars = external_vars
        self.defs: dict[str, _Def] = {}
        self.targets: dict[str, _TargetBuild] = {}
        self.src_options: dict[str, list[str]] = {}
        self.src_props: dict[str, dict[str, str]] = {}
        self.families: list[Family] = []
        self.fatal: list[str] = []
        self.notes: list[str] = []
        self.empty_globs: list[str] = []
        self.skipped_includes: list[str] = []
        self.steps = 0

    # ------------------------------------------------------------- variables
    def get(self, name: str) -> str | None:
        v = self.scopes[-1].get(name)
        return v if v is not None else self.cache.get(name)

    def set(self, name: str, value: str | None, parent: bool = False) -> None:
        scope = self.scopes[-2] if parent and len(self.scopes) > 1 else self.scopes[-1]
        if parent and len(self.scopes) == 1:
            return
        if value is None:
            scope.pop(name, None)
        else:
            scope[name] = value

    def expand(self, text: str) -> str:
        for _ in range(200):
            m = _REF.search(text)
            if not m:
                break
            kind, name = m.groups()
            if kind == "ENV":
                val = self.env.get(name, "")
            elif kind == "CACHE":
                val = self.cache.get(name, "")
            else:
                val = self.get(name) or ""
            text = text[: m.start()] + val + text[m.end() :]
        return text

    def args(self, toks: Iterable[_Tok]) -> list[str]:
        out: list[str] = []
        for t in toks:
            v = self.expand(t.text)
            if t.quoted:
                out.append(v)
            else:
                out.extend(x for x in _split(v) if x != "")
        return out

    def rel(self, path: str) -> str:
        p = Path(path)
        if p.is_absolute():
            with contextlib.suppress(ValueError):
                return p.relative_to(self.root).as_posix()
            return p.as_posix()
        return Path(os.path.normpath(path)).as_posix()

    # ------------------------------------------------------------- conditions
    def cond(self, toks: tuple[_Tok, ...]) -> bool:
        items: list[tuple[str, bool]] = []
        for t in toks:
            if t.quoted:
                items.append((self.expand(t.text), True))
            elif t.text in ("(", ")"):
                items.append((t.text, False))
            else:
                items.extend((x, False) for x in _split(self.expand(t.text)) if x != "")
        return _Cond(items, self).result()

    # ------------------------------------------------------------- execution
    def run_file(self, path: Path) -> None:
        rel = self.rel(str(path))
        nodes = _blocks(_lex(path.read_text(encoding="utf-8", errors="replace"), rel))
        saved = self.get("CMAKE_CURRENT_LIST_DIR")
        self.set("CMAKE_CURRENT_LIST_DIR", str(path.parent))
        try:
            self.exec(nodes)
        except _Return:
            pass
        finally:
            self.set("CMAKE_CURRENT_LIST_DIR", saved)

    def exec(self, nodes: list[_Node]) -> None:
        for n in nodes:
            self.steps += 1
            if self.steps > 200_000:
                raise MatrixError("CMake evaluation did not terminate", fix="report this tree")
            if isinstance(n, _Def):
                self.defs[n.name] = n
            elif isinstance(n, _If):
                for cond, body in n.arms:
                    if cond is None or self.cond(cond):
                        self.exec(body)
                        break
            elif isinstance(n, _Loop):
                self.loop(n)
            else:
                self.command(n)

    def loop(self, n: _Loop) -> None:
        if n.kind == "while":
            for _ in range(10_000):
                if not self.cond(n.args):
                    return
                try:
                    self.exec(n.body)
                except _Break:
                    return
                except _Continue:
                    continue
            return
        args = self.args(n.args)
        if not args:
            return
        var, rest = args[0], args[1:]
        if rest[:1] == ["RANGE"]:
            nums = [int(x) for x in rest[1:4]]
            if len(nums) == 1:
                start, stop, step = 0, nums[0], 1
            else:
                start, stop, step = nums[0], nums[1], nums[2] if len(nums) > 2 else 1
            items = [str(i) for i in range(start, stop + 1, step)]
        elif rest[:1] == ["IN"]:
            items, mode = [], ""
            for a in rest[1:]:
                if a in ("LISTS", "ITEMS", "ZIP_LISTS"):
                    mode = a
                elif mode == "LISTS":
                    items += _split(self.get(a) or "")
                else:
                    items.append(a)
        else:
            items = rest
        for item in items:
            self.set(var, item)
            try:
                self.exec(n.body)
            except _Break:
                break
            except _Continue:
                continue

    def call(self, d: _Def, cmd: _Cmd) -> None:
        argv = self.args(cmd.args)
        if d.kind == "macro":
            mapping = {p: (argv[i] if i < len(argv) else "") for i, p in enumerate(d.params)}
            mapping["ARGN"] = ";".join(argv[len(d.params) :])
            mapping["ARGV"] = ";".join(argv)
            mapping["ARGC"] = str(len(argv))
            for i, a in enumerate(argv):
                mapping[f"ARGV{i}"] = a
            with contextlib.suppress(_Return):
                self.exec(_subst_macro(d.body, mapping))
            return
        self.scopes.append(dict(self.scopes[-1]))
        try:
            for i, p in enumerate(d.params):
                self.set(p, argv[i] if i < len(argv) else None)
            self.set("ARGN", ";".join(argv[len(d.params) :]))
            self.set("ARGV", ";".join(argv))
            self.set("ARGC", str(len(argv)))
            for i, a in enumerate(argv):
                self.set(f"ARGV{i}", a)
            with contextlib.suppress(_Return):
                self.exec(d.body)
        finally:
            self.scopes.pop()

    def command(self, cmd: _Cmd) -> None:
        name = cmd.name
        native = getattr(self, f"c_{name}", None)
        if name == "set_gencode_flags_for_srcs":
            self.record_family(cmd)
        if (native is not None and name not in self.defs) or name in _ALWAYS_NATIVE:
            if native is not None:
                native(cmd)
            return
        d = self.defs.get(name)
        if d is not None:
            self.call(d, cmd)
        # anything else (find_package, install, execute_process, ...) has no effect here

    # ------------------------------------------------------------- families
    def record_family(self, cmd: _Cmd) -> None:
        toks = cmd.args
        raw: dict[str, str] = {}
        for i, t in enumerate(toks[:-1]):
            if not t.quoted and t.text in ("SRCS", "CUDA_ARCHS"):
                m = re.fullmatch(r"\$\{(\w+)\}", toks[i + 1].text.strip())
                raw[t.text] = m.group(1) if m else toks[i + 1].text
        argv = [x for a in self.args(toks) for x in _split(a)]  # as ${ARGN} re-splits them
        parsed = _parse_args(argv, (), ("BUILD_PTX_FOR_ARCH",), ("SRCS", "CUDA_ARCHS"))
        srcs = tuple(dict.fromkeys(self.rel(s) for s in parsed.get("SRCS", [])))
        archs = tuple(parsed.get("CUDA_ARCHS", []))
        self.families.append(
            Family(raw.get("CUDA_ARCHS", "?"), raw.get("SRCS", "?"), archs, srcs, cmd.where)
        )

    # ------------------------------------------------------------- natives
    def c_set(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if not a:
            return
        name, vals = a[0], a[1:]
        if vals and vals[-1] == "PARENT_SCOPE":
            v = vals[:-1]
            self.set(name, ";".join(v) if v else None, parent=True)
        elif "CACHE" in vals:
            i = vals.index("CACHE")
            if "FORCE" in vals[i:] or name not in self.cache:
                self.cache[name] = ";".join(vals[:i])
        elif not vals:
            self.set(name, None)
        else:
            self.set(name, ";".join(vals))

    def c_unset(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if a:
            if "CACHE" in a[1:]:
                self.cache.pop(a[0], None)
            else:
                self.set(a[0], None, parent="PARENT_SCOPE" in a[1:])

    def c_option(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if a and self.get(a[0]) is None:
            self.cache[a[0]] = a[2] if len(a) > 2 else "OFF"

    def c_list(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if len(a) < 2:
            return
        op, var, rest = a[0], a[1], a[2:]
        cur = _split(self.get(var) or "")
        if op == "APPEND":
            if rest:
                self.set(var, ";".join(cur + rest))
        elif op == "PREPEND":
            if rest:
                self.set(var, ";".join(rest + cur))
        elif op == "REMOVE_ITEM":
            self.set(var, ";".join(x for x in cur if x not in rest))
        elif op == "REMOVE_DUPLICATES":
            self.set(var, ";".join(dict.fromkeys(cur)))
        elif op == "SORT":
            natural = "NATURAL" in rest
            desc = "DESCENDING" in rest
            key: Callable[[str], Any] = _natural_key if natural else str
            self.set(var, ";".join(sorted(cur, key=key, reverse=desc)))
        elif op == "LENGTH" and rest:
            self.set(rest[0], str(len(cur)))
        elif op == "GET" and len(rest) >= 2:
            picked = []
            for x in rest[:-1]:
                with contextlib.suppress(ValueError, IndexError):
                    picked.append(cur[int(x)])
            self.set(rest[-1], ";".join(picked))
        elif op == "FIND" and len(rest) >= 2:
            self.set(rest[1], str(cur.index(rest[0])) if rest[0] in cur else "-1")
        elif op == "JOIN" and len(rest) >= 2:
            self.set(rest[1], rest[0].join(cur))
        elif op == "FILTER" and len(rest) >= 3 and rest[1] == "REGEX":
            keep = rest[0] == "INCLUDE"
            pat = re.compile(_py_regex(rest[2]))
            self.set(var, ";".join(x for x in cur if bool(pat.search(x)) == keep))

    def c_string(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if not a:
            return
        op = a[0]
        if op == "REPLACE" and len(a) >= 4:
            self.set(a[3], "".join(a[4:]).replace(a[1], a[2]))
        elif op == "REGEX" and len(a) >= 4:
            sub = a[1]
            if sub == "REPLACE" and len(a) >= 5:
                self.set(a[4], _regex_replace(a[2], a[3], "".join(a[5:])))
            elif sub in ("MATCH", "MATCHALL"):
                text = "".join(a[4:])
                pat = re.compile(_py_regex(a[2]))
                if sub == "MATCH":
                    m = pat.search(text)
                    self.set(a[3], m.group(0) if m else "")
                    for g in range(10):
                        grp = m.group(g) if m and g <= (pat.groups or 0) else None
                        self.set(f"CMAKE_MATCH_{g}", grp or "")
                else:
                    self.set(a[3], ";".join(m.group(0) for m in pat.finditer(text)))
        elif op == "FIND" and len(a) >= 4:
            text, sub = a[1], a[2]
            idx = text.rfind(sub) if "REVERSE" in a[4:] else text.find(sub)
            self.set(a[3], str(idx))
        elif op == "APPEND" and len(a) >= 2:
            self.set(a[1], (self.get(a[1]) or "") + "".join(a[2:]))
        elif op in ("TOLOWER", "TOUPPER") and len(a) >= 3:
            self.set(a[2], a[1].lower() if op == "TOLOWER" else a[1].upper())
        elif op == "STRIP" and len(a) >= 3:
            self.set(a[2], a[1].strip())
        elif op == "JOIN" and len(a) >= 3:
            self.set(a[2], a[1].join(a[3:]))
        elif op == "CONCAT" and len(a) >= 2:
            self.set(a[1], "".join(a[2:]))

    def c_file(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if len(a) < 2 or a[0] not in ("GLOB", "GLOB_RECURSE"):
            return
        var, pats, relative = a[1], a[2:], None
        if pats[:1] == ["RELATIVE"] and len(pats) > 1:
            relative, pats = pats[1], pats[2:]
        found: list[str] = []
        for p in pats:
            if p in ("CONFIGURE_DEPENDS", "LIST_DIRECTORIES") or p in ("true", "false"):
                continue
            full = p if os.path.isabs(p) else str(self.root / p)
            hits = sorted(glob.glob(full, recursive=a[0] == "GLOB_RECURSE"))
            if not hits:
                self.empty_globs.append(f"{self.rel(full)} ({cmd.where})")
            found += [os.path.relpath(h, relative) if relative else h for h in hits]
        self.set(var, ";".join(found))

    def c_message(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if a and a[0] in ("FATAL_ERROR", "SEND_ERROR"):
            self.fatal.append(f"{cmd.where}: {''.join(a[1:])}")

    def c_include(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if not a:
            return
        path = Path(a[0])
        if not path.is_absolute():
            path = Path(self.get("CMAKE_CURRENT_SOURCE_DIR") or self.root) / path
        if not path.is_file():
            return  # a CMake module (FetchContent, ...)
        rel = self.rel(str(path))
        if rel.startswith("cmake/external_projects/") or not path.resolve().is_relative_to(
            self.root.resolve()
        ):
            self.skipped_includes.append(rel)
            return
        self.run_file(path)

    def c_return(self, cmd: _Cmd) -> None:
        raise _Return

    def c_break(self, cmd: _Cmd) -> None:
        raise _Break

    def c_continue(self, cmd: _Cmd) -> None:
        raise _Continue

    def c_get_filename_component(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if len(a) < 3:
            return
        var, path, mode = a[0], a[1], a[2]
        p = Path(path)
        if mode in ("ABSOLUTE", "REALPATH"):
            base = Path(self.get("CMAKE_CURRENT_SOURCE_DIR") or self.root)
            val = str(p if p.is_absolute() else base / p)
        elif mode in ("DIRECTORY", "PATH"):
            val = str(p.parent)
        elif mode == "NAME":
            val = p.name
        elif mode == "NAME_WE":
            val = p.name.split(".")[0]
        elif mode in ("EXT", "LAST_EXT"):
            val = p.suffix
        else:
            val = path
        self.set(var, val)

    def c_cmake_parse_arguments(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if a[:1] == ["PARSE_ARGV"] and len(a) >= 5:
            start, prefix = int(a[1]), a[2]
            opts, ones, multis = _split(a[3]), _split(a[4]), _split(a[5] if len(a) > 5 else "")
            n = int(self.get("ARGC") or "0")
            argv = [self.get(f"ARGV{i}") or "" for i in range(start, n)]
        elif len(a) >= 4:
            prefix = a[0]
            opts, ones, multis = _split(a[1]), _split(a[2]), _split(a[3])
            argv = a[4:]
        else:
            return
        parsed = _parse_args(argv, tuple(opts), tuple(ones), tuple(multis))
        for o in opts:
            self.set(f"{prefix}_{o}", "TRUE" if parsed.get(o) else "FALSE")
        for k in (*ones, *multis):
            v = parsed.get(k)
            self.set(f"{prefix}_{k}", ";".join(v) if v else None)
        un = parsed.get("", [])
        self.set(f"{prefix}_UNPARSED_ARGUMENTS", ";".join(un) if un else None)

    def c_set_property(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if not a or a[0] not in ("SOURCE", "TARGET"):
            return
        stops = {"APPEND", "APPEND_STRING", "PROPERTY", "DIRECTORY", "TARGET_DIRECTORY"}
        i = 1
        while i < len(a) and a[i] not in stops:
            i += 1
        objs = a[1:i]
        append = "APPEND" in a[i:] or "APPEND_STRING" in a[i:]
        if "PROPERTY" not in a[i:]:
            return
        j = a.index("PROPERTY", i)
        if j + 1 >= len(a):
            return
        prop, vals = a[j + 1], a[j + 2 :]
        if a[0] == "SOURCE":
            for s in objs:
                key = self.rel(s)
                if prop == "COMPILE_OPTIONS":
                    lst = self.src_options.setdefault(key, [])
                    if not append:
                        lst.clear()
                    lst.extend(vals)
                else:
                    props = self.src_props.setdefault(key, {})
                    props[prop] = (
                        props.get(prop, "") + ";" if append and props.get(prop) else ""
                    ) + ";".join(vals)
        else:
            for t in objs:
                tb = self.targets.get(t)
                if tb is not None and prop == "COMPILE_OPTIONS":
                    tb.options.extend(vals)
                elif tb is not None and prop == "CUDA_ARCHITECTURES":
                    tb.cuda_architectures = [x for v in vals for x in _split(v)]

    def c_set_source_files_properties(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if "PROPERTIES" not in a:
            return
        i = a.index("PROPERTIES")
        srcs, kv = a[:i], a[i + 1 :]
        for s in srcs:
            props = self.src_props.setdefault(self.rel(s), {})
            for k in range(0, len(kv) - 1, 2):
                props[kv[k]] = kv[k + 1]

    def items(self, cmd: _Cmd) -> list[str]:
        """Arguments with quoted lists split too: commands taking items expand lists."""
        return [x for a in self.args(cmd.args) for x in _split(a)]

    def _new_target(self, cmd: _Cmd, kinds: frozenset[str]) -> None:
        a = self.items(cmd)
        if not a or any(x in ("IMPORTED", "INTERFACE", "ALIAS", "OBJECT") for x in a[1:2]):
            return
        name, rest = a[0], a[1:]
        sabi = None
        srcs = []
        k = 0
        while k < len(rest):
            x = rest[k]
            if x == "USE_SABI" and k + 1 < len(rest):
                sabi = rest[k + 1]
                k += 2
                continue
            if x not in kinds:
                srcs.append(self.rel(x))
            k += 1
        self.targets[name] = _TargetBuild(name, srcs, cmd.where, sabi)

    def c_python_add_library(self, cmd: _Cmd) -> None:
        self._new_target(
            cmd, frozenset({"MODULE", "SHARED", "STATIC", "WITH_SOABI", "EXCLUDE_FROM_ALL"})
        )

    def c_add_library(self, cmd: _Cmd) -> None:
        self._new_target(cmd, frozenset({"MODULE", "SHARED", "STATIC", "EXCLUDE_FROM_ALL"}))

    def _target_items(self, cmd: _Cmd) -> tuple[_TargetBuild | None, list[str]]:
        a = self.items(cmd)
        if not a:
            return None, []
        skip = {"PRIVATE", "PUBLIC", "INTERFACE", "SYSTEM", "BEFORE", "AFTER"}
        return self.targets.get(a[0]), [x for x in a[1:] if x not in skip]

    def c_target_include_directories(self, cmd: _Cmd) -> None:
        t, items = self._target_items(cmd)
        if t is not None:
            base = Path(self.get("CMAKE_CURRENT_SOURCE_DIR") or self.root)
            t.includes += [
                x if os.path.isabs(x) or x.startswith("$<") else str(base / x) for x in items
            ]

    def c_target_compile_options(self, cmd: _Cmd) -> None:
        t, items = self._target_items(cmd)
        if t is not None:
            t.options += items

    def c_target_compile_definitions(self, cmd: _Cmd) -> None:
        t, items = self._target_items(cmd)
        if t is not None:
            for x in items:
                d = x[2:] if x.startswith("-D") else x
                t.definitions.append(d)
                t.definition_where.setdefault(d, cmd.where)

    def c_target_sources(self, cmd: _Cmd) -> None:
        t, items = self._target_items(cmd)
        if t is not None:
            t.sources += [self.rel(x) for x in items]

    def c_set_target_properties(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if "PROPERTIES" not in a:
            return
        i = a.index("PROPERTIES")
        for name in a[:i]:
            t = self.targets.get(name)
            for k in range(i + 1, len(a) - 1, 2):
                if t is not None and a[k] == "CUDA_ARCHITECTURES":
                    t.cuda_architectures = _split(a[k + 1])

    def c_fetchcontent_makeavailable(self, cmd: _Cmd) -> None:
        for name in self.args(cmd.args):
            self._populated(name)

    def c_fetchcontent_populate(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if a:
            self._populated(a[0])

    def _populated(self, name: str) -> None:
        d = self.fetch_dirs.get(name.lower())
        if d is None:
            return
        self.set(f"{name.lower()}_SOURCE_DIR", str(d))
        self.set(f"{name.lower()}_POPULATED", "TRUE")
        for var, sub in self.external_vars.get(name.lower(), {}).items():
            self.cache[var] = str(d / sub) if sub else str(d)

    def c_find_program(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if a and a[0] == "NVCC_EXECUTABLE":
            self.cache.setdefault(a[0], self.get("CMAKE_CUDA_COMPILER") or "nvcc")

    def c_execute_process(self, cmd: _Cmd) -> None:
        # vLLM runs its kernel generators here (Marlin, Machete). The probe does not: the
        # tree is read-only and their outputs are globbed later (reported as generated).
        a = self.args(cmd.args)
        if "RESULT_VARIABLE" in a and a.index("RESULT_VARIABLE") + 1 < len(a):
            self.set(a[a.index("RESULT_VARIABLE") + 1], "0")
        script = next((x for x in a if x.endswith(".py")), None)
        if script:
            self.notes.append(
                f"generator not run (sources it writes are not probed): "
                f"{self.rel(script)} ({cmd.where})"
            )

    def c_run_python(self, cmd: _Cmd) -> None:
        a = self.args(cmd.args)
        if len(a) >= 2:
            self.set(a[0], self.run_python_hook(a[1]), parent=False)


# run_python is a function in utils.cmake; ours answers from the torch env's files,
# because the headers env cannot `import torch`.
_ALWAYS_NATIVE = {"run_python"}


def _parse_args(
    argv: Sequence[str], opts: tuple[str, ...], ones: tuple[str, ...], multis: tuple[str, ...]
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    cur: str | None = None
    for x in argv:
        if x in opts:
            out[x] = ["TRUE"]
            cur = None
        elif x in ones or x in multis:
            cur = x
            out.setdefault(x, [])
        elif cur is not None:
            out[cur].append(x)
            if cur in ones:
                cur = None
        else:
            out.setdefault("", []).append(x)
    return out


class _Cond:
    """CMake if(): parentheses, unary tests, binary tests, NOT, AND, OR (that precedence)."""

    def __init__(self, items: list[tuple[str, bool]], cm: _CMake) -> None:
        self.items, self.pos, self.cm = items, 0, cm

    def peek(self) -> str | None:
        if self.pos < len(self.items) and not self.items[self.pos][1]:
            return self.items[self.pos][0]
        return None

    def take(self) -> tuple[str, bool]:
        t = self.items[self.pos] if self.pos < len(self.items) else ("", True)
        self.pos += 1
        return t

    def result(self) -> bool:
        if not self.items:
            return False
        try:
            return self.or_()
        except (IndexError, ValueError, re.error):
            return False

    def or_(self) -> bool:
        v = self.and_()
        while self.peek() == "OR":
            self.pos += 1
            r = self.and_()
            v = v or r
        return v

    def and_(self) -> bool:
        v = self.not_()
        while self.peek() == "AND":
            self.pos += 1
            r = self.not_()
            v = v and r
        return v

    def not_(self) -> bool:
        if self.peek() == "NOT":
            self.pos += 1
            return not self.not_()
        return self.pred()

    def value(self, tok: tuple[str, bool]) -> str:
        text, quoted = tok
        if not quoted:
            v = self.cm.get(text)
            if v is not None:
                return v
        return text

    def pred(self) -> bool:
        if self.peek() == "(":
            self.pos += 1
            v = self.or_()
            if self.peek() == ")":
                self.pos += 1
            return v
        op = self.peek()
        if op in _UNARY:
            self.pos += 1
            return self.unary(op, self.take())
        left = self.take()
        op = self.peek()
        if op in _BINARY:
            self.pos += 1
            return self.binary(op, left, self.take())
        return self.truth(left)

    def truth(self, tok: tuple[str, bool]) -> bool:
        text, quoted = tok
        up = text.upper()
        num = _number(text)
        if up in _TRUE or (num is not None and num != 0):
            return True
        if _is_false(text) or num == 0:
            return False
        if quoted:
            return False
        v = self.cm.get(text)
        return v is not None and not _is_false(v)

    def unary(self, op: str, tok: tuple[str, bool]) -> bool:
        text = tok[0]
        if op == "DEFINED":
            m = re.fullmatch(r"(ENV|CACHE)\{(.*)\}", text)
            if m:
                return (self.cm.env if m.group(1) == "ENV" else self.cm.cache).get(
                    m.group(2)
                ) is not None
            return self.cm.get(text) is not None
        if op == "COMMAND":
            return text.lower() in self.cm.defs or hasattr(self.cm, f"c_{text.lower()}")
        if op == "TARGET":
            return text in self.cm.targets
        if op == "EXISTS":
            return bool(text) and os.path.exists(text)
        if op == "IS_DIRECTORY":
            return bool(text) and os.path.isdir(text)
        if op == "IS_ABSOLUTE":
            return os.path.isabs(text)
        return False

    def binary(self, op: str, left: tuple[str, bool], right: tuple[str, bool]) -> bool:
        a, b = self.value(left), self.value(right)
        if op == "MATCHES":
            m = re.search(_py_regex(right[0]), a)
            if m:
                for g in range(min(10, (m.re.groups or 0) + 1)):
                    self.cm.set(f"CMAKE_MATCH_{g}", m.group(g) or "")
            return m is not None
        if op == "IN_LIST":
            return a in _split(self.cm.get(right[0]) or "")
        if op.startswith("VERSION_"):
            c = _version_cmp(a, b)
            return {
                "VERSION_EQUAL": c == 0,
                "VERSION_LESS": c < 0,
                "VERSION_LESS_EQUAL": c <= 0,
                "VERSION_GREATER": c > 0,
                "VERSION_GREATER_EQUAL": c >= 0,
            }[op]
        if op in ("STREQUAL", "PATH_EQUAL"):
            return a == b
        if op.startswith("STR"):
            return {
                "STRLESS": a < b,
                "STRLESS_EQUAL": a <= b,
                "STRGREATER": a > b,
                "STRGREATER_EQUAL": a >= b,
            }[op]
        na, nb = _number(a), _number(b)
        if na is None or nb is None:
            return False
        return {
            "EQUAL": na == nb,
            "LESS": na < nb,
            "LESS_EQUAL": na <= nb,
            "GREATER": na > nb,
            "GREATER_EQUAL": na >= nb,
        }[op]


# ==================================================================== torch's own flags


@dataclass(frozen=True)
class TorchFlags:
    """What torch's CMake package and cpp_extension hand a CUDA extension build."""

    version: str  # without the local label
    common_nvcc: tuple[str, ...]  # torch.utils.cpp_extension.COMMON_NVCC_FLAGS
    cuda_flags: tuple[str, ...]  # Caffe2/public/cuda.cmake additions to CMAKE_CUDA_FLAGS
    cxx_flags: tuple[str, ...]  # TorchConfig.cmake TORCH_CXX_FLAGS (INTERFACE_COMPILE_OPTIONS)
    definitions: tuple[str, ...]  # Caffe2Targets.cmake INTERFACE_COMPILE_DEFINITIONS
    includes: tuple[str, ...]  # TorchConfig.cmake TORCH_INCLUDE_DIRS
    cmake_prefix: str
    python_include: str | None


# torch's documented defaults, used where a file cannot be read (unit tests, odd wheels).
_DEFAULT_COMMON_NVCC = (
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@functools.lru_cache(maxsize=16)
def torch_flags(tv: TorchEnv) -> TorchFlags:
    td = tv.torch_dir
    common: tuple[str, ...] = _DEFAULT_COMMON_NVCC
    try:
        mod = ast.parse(_read(td / "utils" / "cpp_extension.py"))
        for node in mod.body:
            if (
                isinstance(node, ast.Assign)
                and any(
                    isinstance(t, ast.Name) and t.id == "COMMON_NVCC_FLAGS" for t in node.targets
                )
                and isinstance(node.value, ast.List)
            ):
                common = tuple(
                    e.value
                    for e in node.value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    except SyntaxError:
        pass
    cuda_cmake = _read(td / "share" / "cmake" / "Caffe2" / "public" / "cuda.cmake")
    cuda_flags: list[str] = []
    m = re.search(r'"-DONNX_NAMESPACE=(onnx_c2)"', cuda_cmake)
    if m:  # else-branch default: ONNX_NAMESPACE is not set for an extension build
        cuda_flags.append(f"-DONNX_NAMESPACE={m.group(1)}")
    m = re.search(r"foreach\(diag\s+([^)]*)\)", cuda_cmake)
    if m and "-Xcudafe" in cuda_cmake:
        diags = ",".join(f"--diag_suppress={d}" for d in m.group(1).split())
        cuda_flags += ["-Xcudafe", diags]
    for flag in ("--expt-relaxed-constexpr", "--expt-extended-lambda"):
        if re.search(r'list\(APPEND CUDA_NVCC_FLAGS "' + re.escape(flag) + '"\\)', cuda_cmake):
            cuda_flags.append(flag)
    torch_config = _read(td / "share" / "cmake" / "Torch" / "TorchConfig.cmake")
    m = re.search(r'set\(TORCH_CXX_FLAGS "([^"]*)"\)', torch_config)
    cxx = tuple(m.group(1).split()) if m else ()
    targets = _read(td / "share" / "cmake" / "Caffe2" / "Caffe2Targets.cmake")
    defs: list[str] = []
    for tm in re.finditer(r'INTERFACE_COMPILE_DEFINITIONS "([^"$]*)"', targets):
        defs += [d for d in tm.group(1).split(";") if d]
    return TorchFlags(
        tv.torch_version.split("+")[0],
        common,
        tuple(cuda_flags),
        cxx,
        tuple(sorted(set(defs))),
        (str(td / "include"), str(td / "include" / "torch" / "csrc" / "api" / "include")),
        str(td / "share" / "cmake"),
        _python_include(tv.python_exe),
    )


@functools.lru_cache(maxsize=16)
def _python_include(exe: Path) -> str | None:
    """The include dir CMake's FindPython reports for VLLM_PYTHON_EXECUTABLE."""
    if not exe.exists():
        return None
    try:
        out = proc.run(
            [exe, "-c", "import sysconfig;print(sysconfig.get_paths()['include'])"],
            check=False,
            timeout=60,
        )
    except MatrixError:
        return None
    lines = out.output.strip().splitlines()
    return lines[-1] if out.returncode == 0 and lines else None


def _torch_gencode(archs: Sequence[str]) -> list[str]:
    """torch's cuda.cmake (torch_cuda_get_nvcc_gencode_flag) for TORCH_CUDA_ARCH_LIST."""
    out = []
    for a in torch_arch_list(tuple(archs)).split(";"):
        if not a:
            continue
        ptx = a.endswith("+PTX")
        num = a.removesuffix("+PTX").replace(".", "")
        out.append(f"-gencode arch=compute_{num},code=sm_{num}")
        if ptx:
            out.append(f"-gencode arch=compute_{num},code=compute_{num}")
    return out


# ==================================================================== evaluating a tree


def _cmake_arch(arch: str) -> str:
    """A CUDA_ARCHITECTURES entry as vLLM writes arches: "80-real" -> "8.0", "90a" -> "9.0a"."""
    num = arch.split("-", 1)[0]
    suffix = "a" if num.endswith("a") else ""
    num = num.removesuffix("a")
    return f"{num[:-1]}.{num[-1]}{suffix}" if len(num) >= 2 else num


def build_model(
    tree: Path,
    nvcc_version: str,
    archs: tuple[str, ...],
    tflags: TorchFlags | None = None,
    python: str | None = None,
    fetch_dirs: dict[str, Path] | None = None,
    know: ProbeKnowledge | None = None,
) -> BuildModel:
    """Evaluate the tree's CMakeLists.txt for CUDA with ``nvcc_version`` and ``archs``."""
    return _build_model_cached(
        tree.resolve(),
        nvcc_version,
        archs,
        tflags,
        python,
        tuple(sorted((fetch_dirs or {}).items())),
        know or load_knowledge(),
    )


@functools.lru_cache(maxsize=32)
def _build_model_cached(
    tree: Path,
    nvcc_version: str,
    archs: tuple[str, ...],
    tflags: TorchFlags | None,
    python: str | None,
    fetch_items: tuple[tuple[str, Path], ...],
    know: ProbeKnowledge,
) -> BuildModel:
    fetch_dirs = dict(fetch_items)
    mm = ".".join(nvcc_version.split(".")[:2])
    # CMAKE_CUDA_FLAGS as torch's cuda.cmake leaves it: ONNX_NAMESPACE, the -gencode of
    # TORCH_CUDA_ARCH_LIST, -Xcudafe --diag_suppress=..., --expt-* (in that order).
    tcf = tflags.cuda_flags if tflags else ()
    onnx = [f for f in tcf if f.startswith("-DONNX")]
    torch_cuda_flags = " ".join(onnx + _torch_gencode(archs) + [f for f in tcf if f not in onnx])
    src = str(tree)
    presets = {
        "CMAKE_SOURCE_DIR": src,
        "CMAKE_CURRENT_SOURCE_DIR": src,
        "PROJECT_SOURCE_DIR": src,
        "CMAKE_CURRENT_LIST_DIR": src,
        "CMAKE_BINARY_DIR": str(tree / "build"),  # never written: nothing is generated
        "CMAKE_CURRENT_BINARY_DIR": str(tree / "build"),
        "CMAKE_BUILD_TYPE": BUILD_TYPE,
        "CMAKE_SYSTEM_NAME": "Linux",
        "CMAKE_SYSTEM_PROCESSOR": "x86_64",
        "UNIX": "1",
        "LINUX": "1",
        # find_package(Torch) -> torch's FindCUDA / enable_language(CUDA):
        "CUDA_FOUND": "TRUE",
        "CUDA_VERSION": mm,
        "CUDAToolkit_VERSION": nvcc_version,
        "CMAKE_CUDA_COMPILER_VERSION": nvcc_version,
        "CMAKE_CUDA_COMPILER_ID": "NVIDIA",
        "CMAKE_CUDA_FLAGS": torch_cuda_flags,
        "Torch_FOUND": "TRUE",
        "TORCH_FOUND": "TRUE",
        "Python_FOUND": "TRUE",
        "VLLM_PYTHON_EXECUTABLE": "python3",
        "Python_EXECUTABLE": "python3",
    }
    if tflags is not None:
        presets["Torch_VERSION"] = tflags.version
        presets["TORCH_INCLUDE_DIRS"] = ";".join(tflags.includes)
    if python:
        presets["Python_VERSION_MAJOR"], presets["Python_VERSION_MINOR"] = python.split(".")[:2]
    env = {}
    externals = {e.name: e for e in know.externals}
    for name, d in fetch_dirs.items():
        spec = externals.get(name)
        if name == "cutlass" or spec is not None:
            env[f"VLLM_{name.upper()}_SRC_DIR"] = str(d)

    def run_python(expr: str) -> str:
        if "COMMON_NVCC_FLAGS" in expr:
            return ";".join(tflags.common_nvcc if tflags else _DEFAULT_COMMON_NVCC)
        if "cmake_prefix_path" in expr:
            return tflags.cmake_prefix if tflags else ""
        cm.notes.append(f"run_python not evaluated (headers-only torch env): {expr[:120]}")
        return ""

    cm = _CMake(
        tree,
        presets,
        env,
        run_python,
        fetch_dirs,
        {e.name: dict(e.cmake_vars) for e in know.externals},
    )
    cm.run_file(tree / "CMakeLists.txt")
    targets = []
    for t in cm.targets.values():
        definitions = list(t.definitions)
        targets.append(
            Target(
                t.name,
                tuple(dict.fromkeys(t.sources)),
                tuple(t.options),
                tuple(definitions),
                tuple(dict.fromkeys(i for i in t.includes if i)),
                t.sabi,
                t.where,
                definition_where=tuple(t.definition_where.items()),
                cuda_architectures=tuple(t.cuda_architectures),
            )
        )
    cuda_archs = tuple(_split(cm.get("CUDA_ARCHS") or ""))
    if cm.get("CUDA_ARCHS") is None:
        # Before 0.6.2 there is no CUDA_ARCHS: override_gpu_arches filters torch's -gencode
        # by CUDA_SUPPORTED_ARCHS into VLLM_GPU_ARCHES, which each target gets as its
        # CUDA_ARCHITECTURES ("80-real"); those are the arches the tree builds.
        cuda_archs = tuple(
            dict.fromkeys(_cmake_arch(a) for t in targets for a in t.cuda_architectures)
        )
    # Sources no set_gencode_flags_for_srcs names (every source before 0.6.2, where the
    # target's CUDA_ARCHITECTURES holds the arches; a few later ones, which then build for
    # nvcc's default arch): one family per target.
    families = list(cm.families)
    in_family = {s for f in families for s in f.sources}
    for tgt in targets:
        rest = tuple(s for s in tgt.sources if s.endswith(CUDA_SUFFIXES) and s not in in_family)
        if rest:
            archs = tuple(tgt.cuda_architectures) or tuple(
                re.findall(r"code=(?:sm|compute)_(\d+a?)", cm.get("CMAKE_CUDA_FLAGS") or "")
            )
            families.append(Family(f"target {tgt.name}", "", archs, rest, tgt.where))
    return BuildModel(
        cuda_archs=cuda_archs,
        families=tuple(families),
        targets=tuple(targets),
        source_options={k: tuple(v) for k, v in cm.src_options.items()},
        source_props=dict(cm.src_props),
        cuda_flags=cm.get("CMAKE_CUDA_FLAGS") or "",
        cxx_flags=cm.get("CMAKE_CXX_FLAGS") or "",
        fatal=tuple(dict.fromkeys(cm.fatal)),
        notes=tuple(dict.fromkeys(cm.notes)),
        empty_globs=tuple(dict.fromkeys(cm.empty_globs)),
        skipped_includes=tuple(dict.fromkeys(cm.skipped_includes)),
    )


# ==================================================================== include closure

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"]([^">]+)[">]', re.M)


@functools.lru_cache(maxsize=4096)
def _includes_of(path: Path) -> tuple[str, ...]:
    return tuple(_INCLUDE.findall(_read(path)))


def include_closure(
    tree: Path, src: str, search: Sequence[Path], know: ProbeKnowledge
) -> tuple[tuple[str, ...], dict[str, str]]:
    """In-tree files ``src`` includes (transitively) and the externals it needs.

    Returns (in-tree files, {external name: first include that needs it}). Includes are
    resolved like the compiler does for quoted includes: the includer's directory first,
    then the target's include directories. Conditional includes count (#ifdef is not
    evaluated): a unit may be reported as needing CUTLASS on a path it does not take.
    """
    seen: dict[Path, None] = {}
    needs: dict[str, str] = {}
    todo = [tree / src]
    root = tree.resolve()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen[f] = None
        for inc in _includes_of(f):
            hit = next(
                (d / inc for d in (f.parent, *search) if (d / inc).is_file()),
                None,
            )
            if hit is not None:
                hit = Path(os.path.normpath(hit))
                if hit.resolve().is_relative_to(root):
                    todo.append(hit)
                    continue
            # outside the tree (a provided dependency) or nowhere: whose is it?
            ext = next(
                (e for e in know.externals if any(inc.startswith(p) for p in e.include_prefixes)),
                None,
            )
            if ext is not None:
                needs.setdefault(ext.name, f"{_rel(f, tree)}: #include <{inc}>")
            elif hit is None and "/" not in inc and (gen := generator_of(root, inc)) is not None:
                needs.setdefault(
                    GENERATED, f"{_rel(f, tree)}: #include {inc}, written by {gen} at build time"
                )
    files = tuple(sorted(_rel(f, tree) for f in seen))
    return files, needs


# include_closure's name for "a file the build generates" (vLLM 0.20's marlin
# kernel_selector.h, written by csrc/quantization/marlin/generate_kernels.py from CMake).
GENERATED = "generated"


@functools.lru_cache(maxsize=8)
def _generator_texts(tree: Path) -> tuple[tuple[str, str], ...]:
    """The tree's code generators (csrc/**/*.py), with their text."""
    return tuple((_rel(p, tree), _read(p)) for p in tree.glob("csrc/**/*.py") if p.is_file())


def generator_of(tree: Path, name: str) -> str | None:
    """The generator script or CMake file of ``tree`` that names ``name`` (a header a unit
    includes that the tree does not hold), if any."""
    if not re.fullmatch(r"[\w.-]+\.(?:h|hpp|cuh|inc)", name):
        return None
    # Code generators only: a CMake file naming a header (deepgemm.cmake names torch's
    # shim.h) is no evidence that the build writes it.
    found = [rel for rel, text in _generator_texts(tree) if name in text]
    return found[0] if found else None


def _rel(path: Path, tree: Path) -> str:
    with contextlib.suppress(ValueError):
        return path.relative_to(tree).as_posix()
    return path.as_posix()


# ==================================================================== unit selection


@dataclass(frozen=True)
class Unit:
    path: str  # relative to the tree
    why: str
    kind: str  # "cuda" | "cxx"
    needs: tuple[str, ...] = ()  # FetchContent dependencies its includes reach
    family: str = ""  # Family.name, or "" when the unit has no per-source arches
    gated: bool = False  # the family's arches are an arch-gated intersection
    target: str = ""  # _C, _moe_C, ...
    archs: tuple[str, ...] = ()  # its arches for this cell, as vLLM writes them

    @property
    def name(self) -> str:
        return self.path.replace("/", "__")


@dataclass(frozen=True)
class Selection:
    units: tuple[Unit, ...]
    model: BuildModel
    not_built: tuple[str, ...]  # API hits in files this configuration does not compile
    families: tuple[dict[str, Any], ...]


def _kind(src: str, props: dict[str, str]) -> str | None:
    lang = props.get("LANGUAGE")
    if lang == "CUDA" or (lang is None and src.endswith(CUDA_SUFFIXES)):
        return "cuda"
    if lang == "CXX" or (lang is None and src.endswith(CXX_SUFFIXES)):
        return "cxx"
    return None


def _search_dirs(model: BuildModel, tree: Path, src: str) -> list[Path]:
    t = model.target_of(src)
    dirs = [Path(i) for i in (t.includes if t else ()) if not i.startswith("$<")]
    extra = model.source_props.get(src, {}).get("INCLUDE_DIRECTORIES", "")
    dirs += [Path(x) for x in _split(extra) if x]
    return dirs or [tree / "csrc"]


def select(
    tree: Path,
    facts: SourceFacts,
    archs: tuple[str, ...],
    nvcc_version: str,
    api_hits: Sequence[ApiHit],
    model: BuildModel | None = None,
    know: ProbeKnowledge | None = None,
) -> Selection:
    know = know or load_knowledge()
    model = model or build_model(tree, nvcc_version, archs, know=know)
    built = model.built_sources()
    chosen: dict[str, list[str]] = {}
    order: list[str] = []
    closures: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}

    def closure(src: str) -> tuple[tuple[str, ...], dict[str, str]]:
        if src not in closures:
            closures[src] = include_closure(tree, src, _search_dirs(model, tree, src), know)
        return closures[src]

    def pick(src: str, why: str) -> None:
        if src not in chosen:
            chosen[src] = []
            order.append(src)
        if why not in chosen[src]:
            chosen[src].append(why)

    for cand in know.bindings:
        if cand in built:
            pick(
                cand, "bindings: registers every op with torch and includes every op's declaration"
            )
            break

    not_built: list[str] = []
    by_file: dict[str, list[ApiHit]] = {}
    for h in api_hits:
        by_file.setdefault(h.file, []).append(h)
    for file, hits in by_file.items():
        sym = hits[0].symbol
        lines = ", ".join(str(h.line) for h in hits)
        why = f"API scan: {sym.name} (torch >= {sym.torch}) at {file}:{lines}"
        if file in built:
            pick(file, why)
            continue
        # A header: a chosen unit that includes it, else the built unit that includes it
        # with the smallest include closure.
        users = [s for s in built if file in closure(s)[0]]
        done = [s for s in order if s in users]
        if done:
            pick(done[0], why + f" (via {Path(file).name})")
        elif users:
            best = min(users, key=lambda s: (bool(closure(s)[1]), len(closure(s)[0]), s))
            pick(best, why + f" (via {Path(file).name})")
        else:
            not_built.append(f"{file}:{lines} ({sym.name}): not compiled for this configuration")

    fam_info: list[dict[str, Any]] = []
    seen_fams: list[Family] = []
    for fam in model.families:
        members = [
            s
            for s in fam.sources
            if s in built and _kind(s, model.source_props.get(s, {})) is not None
        ]
        info: dict[str, Any] = {
            "family": fam.name,
            "archs": list(fam.archs),
            "where": fam.where,
            "units": len(members),
        }
        fam_info.append(info)
        if not members:
            info["probe"] = "no units (generated at configure time, or none built)"
            continue
        # No arches (the cell's are outside the tree's list): the real build still compiles
        # these units, for nvcc's default arch; they are probed the same way.
        kinds = {s: _kind(s, model.source_props.get(s, {})) for s in members}
        # A CUDA family is covered only by a CUDA unit (the bindings .cpp is in VLLM_EXT_SRC
        # but says nothing about nvcc); a family whose units an earlier family with the same
        # arches already holds adds nothing.
        want_cuda = "cuda" in kinds.values()
        covered = [s for s in members if s in chosen and (kinds[s] == "cuda" or not want_cuda)]
        if covered:
            info["probe"] = f"covered by {covered[0]}"
            continue
        same = next(
            (g for g in seen_fams if g.archs == fam.archs and set(members) <= set(g.sources)), None
        )
        seen_fams.append(fam)
        if same is not None:
            info["probe"] = f"same units as family {same.name} ({same.where})"
            continue

        def score(s: str) -> tuple[int, int, int, int, str]:
            files, needs = closure(s)
            kind = _kind(s, model.source_props.get(s, {}))
            size = sum((tree / f).stat().st_size for f in files if (tree / f).is_file())
            return (0 if kind == "cuda" else 1, len(needs), -len(files), size, s)

        rep = min((m for m in members if m not in chosen), key=score, default=members[0])
        info["probe"] = rep
        pick(
            rep,
            f"representative of family {fam.name} ({fam.where}, {len(members)} units, "
            f"arches {';'.join(fam.archs)}): most in-tree headers ({len(closure(rep)[0])})",
        )

    units = []
    for src in order:
        props = model.source_props.get(src, {})
        kind = _kind(src, props) or "cxx"
        home = model.family_of(src)
        t = model.target_of(src)
        units.append(
            Unit(
                src,
                "; ".join(chosen[src]),
                kind,
                tuple(sorted(closure(src)[1])),
                home.name if home else "",
                home.gated if home else False,
                t.name if t else "",
                unit_archs(model, src),
            )
        )
    return Selection(tuple(units), model, tuple(not_built), tuple(fam_info))


def select_units(
    tree: Path,
    facts: SourceFacts,
    archs: tuple[str, ...],
    nvcc_version: str,
    api_hits: Sequence[ApiHit],
) -> list[Unit]:
    """The units worth compiling for (tree, arches, nvcc); see the module docstring."""
    return list(select(tree, facts, archs, nvcc_version, api_hits).units)


def unit_archs(model: BuildModel, src: str) -> tuple[str, ...]:
    """The arches of ``src``'s -gencode flags, as 'sm_90' / 'sm_90a' / 'compute_90'."""
    opts = eval_genex(";".join(model.source_options.get(src, ())), "CUDA")
    out = re.findall(r"code=((?:sm|compute)_\d+[af]?)", opts)
    if not out:  # older trees: the target's CUDA_ARCHITECTURES, or CMAKE_CUDA_FLAGS
        t = model.target_of(src)
        gen = " ".join(t.gencode()) if t else ""
        out = re.findall(r"code=((?:sm|compute)_\d+[af]?)", gen or model.cuda_flags)
    return tuple(dict.fromkeys(out))


# ==================================================================== flags


def explain_flags(
    unit: Unit,
    tree: Path,
    tk: Toolkit,
    tv: TorchEnv,
    archs: tuple[str, ...],
    facts: SourceFacts,
    *,
    model: BuildModel | None = None,
    fetch_dirs: dict[str, Path] | None = None,
) -> list[tuple[str, str]]:
    """(flag, where it comes from) for compiling ``unit`` as the real CMake build does.

    Order follows CMake's Ninja rule: <DEFINES> <INCLUDES> <FLAGS>, FLAGS being
    CMAKE_<LANG>_FLAGS, CMAKE_<LANG>_FLAGS_<CONFIG>, the language standard, -fPIC,
    the target's COMPILE_OPTIONS (own + from linked targets), then the source's
    COMPILE_OPTIONS and COMPILE_FLAGS.
    """
    know = load_knowledge()
    tfl = torch_flags(tv)
    if fetch_dirs is None:
        fetch_dirs = _available_dirs(facts, know)
    model = model or build_model(tree, tk.full_version, archs, tfl, tv.python, fetch_dirs, know)
    src = unit.path
    lang = "CUDA" if unit.kind == "cuda" else "CXX"
    t = model.target_of(src)
    out: list[tuple[str, str]] = []

    def add(origin: str, *flags: str) -> None:
        out.extend((f, origin) for f in flags if f)

    tname = t.name if t else "_C"
    utils = "cmake/utils.cmake define_gpu_extension_target"
    if lang == "CUDA":
        add("CMake's nvcc rule (CMake >= 3.17)", "-forward-unknown-to-host-compiler")
    # ---- DEFINES (CMake emits them sorted)
    defs: list[tuple[str, str]] = []
    where_of = dict(t.definition_where) if t else {}
    for d in t.definitions if t else ():
        defs.append((f"-D{d}", f"target_compile_definitions ({where_of.get(d, '?')})"))
    if t and t.sabi:
        sabi = (
            t.sabi
            if "." not in t.sabi
            else "0x{:02X}{:02X}0000".format(*(int(x) for x in t.sabi.split(".")[:2]))
        )
        defs.append((f"-DPy_LIMITED_API={sabi}", f"Python_add_library USE_SABI {t.sabi}"))
    defs += [
        (f"-D{d}", "torch Caffe2Targets.cmake INTERFACE_COMPILE_DEFINITIONS (torch_cpu/torch_cuda)")
        for d in tfl.definitions
    ]
    defs.append((f"-D{tname}_EXPORTS", "CMake: <target>_EXPORTS for a MODULE library"))
    for f, o in sorted(dict(defs).items(), key=lambda kv: kv[0]):
        add(o, f)
    # ---- INCLUDES
    src_inc = model.source_props.get(src, {}).get("INCLUDE_DIRECTORIES", "")
    for i in _split(src_inc):
        add("set_source_files_properties INCLUDE_DIRECTORIES (CMakeLists.txt)", f"-I{i}")
    for i in t.includes if t else (str(tree / "csrc"),):
        if not i.startswith("$<"):
            add(f"{utils}: target_include_directories(csrc + INCLUDE_DIRECTORIES)", f"-I{i}")
    for i in tfl.includes:
        add("torch TorchConfig.cmake TORCH_INCLUDE_DIRS (imported: -isystem)", "-isystem", i)
    if tfl.python_include:
        add(
            "FindPython (Python::SABIModule/Module via Python_add_library)",
            "-isystem",
            tfl.python_include,
        )
    if lang == "CXX":
        add(
            "CUDA::cudart INTERFACE_INCLUDE_DIRECTORIES (implicit for nvcc, explicit for g++)",
            "-isystem",
            str(tk.root / "include"),
        )
    # ---- FLAGS
    if lang == "CUDA":
        flags_text = model.cuda_flags
        add(
            "CMAKE_CUDA_FLAGS: torch Caffe2/public/cuda.cmake (ONNX_NAMESPACE, -Xcudafe "
            "--diag_suppress, --expt-*), its -gencode removed by vLLM's clear_cuda_arches",
            *shlex.split(flags_text),
        )
        add(
            f"CMAKE_CUDA_FLAGS_{BUILD_TYPE.upper()} (CMake default; vLLM setup.py build type)",
            "-O2",
            "-g",
            "-DNDEBUG",
        )
        add(
            "C++17: nvcc 11+ default dialect, stated explicitly (torch requires C++17)",
            "-std=c++17",
        )
        add("CMake POSITION_INDEPENDENT_CODE for MODULE libraries", "-Xcompiler=-fPIC")
    else:
        add("CMAKE_CXX_FLAGS (CMakeLists.txt)", *shlex.split(model.cxx_flags))
        add(f"CMAKE_CXX_FLAGS_{BUILD_TYPE.upper()} (CMake default)", "-O2", "-g", "-DNDEBUG")
        add("define_gpu_extension_target: CXX_STANDARD 17 (CMake: gnu++17)", "-std=gnu++17")
        add("CMake POSITION_INDEPENDENT_CODE for MODULE libraries", "-fPIC")
    # A property is a ;-list whose generator expressions may span items: join, evaluate, split.
    for f in _split(eval_genex(";".join(t.options if t else ()), lang)):
        if f:
            add(
                f"{utils}: COMPILE_FLAGS ${{VLLM_GPU_FLAGS}} (get_torch_gpu_compiler_flags: "
                "torch COMMON_NVCC_FLAGS adjusted for CUDA >= 12, -DENABLE_FP8, "
                "-DENABLE_* of the enabled kernel families)",
                f,
            )
    add("torch TorchConfig.cmake TORCH_CXX_FLAGS (torch INTERFACE_COMPILE_OPTIONS)", *tfl.cxx_flags)
    opts = _split(eval_genex(";".join(model.source_options.get(src, ())), lang))
    if lang == "CUDA" and opts:
        add(
            "set_gencode_flags_for_srcs (cuda_archs_loose_intersection of the family's "
            "arches with the cell's)",
            *_gencode_args(opts),
        )
    elif lang == "CUDA" and t and t.cuda_architectures:
        add(
            "target CUDA_ARCHITECTURES (override_gpu_arches: the cell's arches that the "
            "tree supports)",
            *t.gencode(),
        )
    src_flags = model.source_props.get(src, {}).get("COMPILE_FLAGS", "")
    add("set_source_files_properties COMPILE_FLAGS (CMakeLists.txt)", *shlex.split(src_flags))
    if lang == "CUDA":
        add("CMake's nvcc rule", "-x", "cu")
    return out


def _gencode_args(opts: Sequence[str]) -> list[str]:
    out: list[str] = []
    for o in opts:
        out += o.split() if o.startswith("-gencode ") else [o]
    # "-gencode" "arch=..,code=.." pairs, deduplicated in order
    pairs: dict[tuple[str, str], None] = {}
    rest: list[str] = []
    i = 0
    while i < len(out):
        if out[i] == "-gencode" and i + 1 < len(out):
            pairs[("-gencode", out[i + 1])] = None
            i += 2
        else:
            rest.append(out[i])
            i += 1
    return [x for p in pairs for x in p] + rest


def flags(
    unit: Unit,
    tree: Path,
    tk: Toolkit,
    tv: TorchEnv,
    archs: tuple[str, ...],
    facts: SourceFacts,
) -> list[str]:
    """The compile flags of ``unit`` in the real build (compiler, -c, source, -o excluded)."""
    return [f for f, _ in explain_flags(unit, tree, tk, tv, archs, facts)]


def _available_dirs(facts: SourceFacts, know: ProbeKnowledge) -> dict[str, Path]:
    out = {}
    for e in know.externals:
        d = external_dir(facts, e.name, know, fetch=False)
        if d.path is not None:
            out[e.name] = d.path
    return out


def lowest_gencode(unit_flags: Sequence[str]) -> list[str]:
    """The -gencode pair of the lowest arch in ``unit_flags`` (SASS for it)."""
    pairs = []
    for i, f in enumerate(unit_flags[:-1]):
        if f == "-gencode":
            m = re.match(
                r"arch=compute_(\d+)([af]?),code=(sm|compute)_(\d+)([af]?)", unit_flags[i + 1]
            )
            if m:
                pairs.append((int(m.group(1)), m.group(3) != "sm", m.group(1) + m.group(2)))
    if not pairs:
        return []
    _, _, arch = min(pairs)
    return ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]


# ==================================================================== running units

PHASES = (
    "host-preprocess",
    "front-end",
    "device-preprocess",
    "device-codegen",
    "ptxas",
    "fatbinary",
    "host-compile",
    "other",
)


@dataclass(frozen=True)
class Step:
    phase: str
    argv: tuple[str, ...]


def parse_dryrun(text: str) -> tuple[list[Step], dict[str, str]]:
    """nvcc --dryrun output -> (the commands in order, the environment nvcc gives them)."""
    steps: list[Step] = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("#$ "):
            continue
        body = line[3:].strip()
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", body)
        if m:
            env[m.group(1)] = m.group(2).strip()
            continue
        try:
            argv = tuple(_expand(a, env) for a in shlex.split(body))
        except ValueError:
            continue
        if not argv:
            continue
        steps.append(Step(_phase(argv), argv))
    return steps, env


_VAR_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _expand(token: str, env: dict[str, str]) -> str:
    """``$NAME`` / ``${NAME}`` of nvcc's own assignments, as its shell would expand them
    (nvcc 13 calls ``"$CICC_PATH/cicc"``; 12.x found cicc on its PATH)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(sub, token)


def _phase(argv: Sequence[str]) -> str:
    prog = Path(argv[0]).name
    if prog == "cudafe++":
        return "front-end"
    if prog == "cicc":
        return "device-codegen"
    if prog in ("ptxas", "fatbinary", "nvlink"):
        return "ptxas" if prog == "ptxas" else "fatbinary"
    if prog == "rm":
        return "rm"
    if "-E" in argv:
        device = any(a.startswith("-D__CUDA_ARCH__=") for a in argv)
        return "device-preprocess" if device else "host-preprocess"
    if "-c" in argv:
        return "host-compile"
    return "other"


@dataclass
class UnitResult:
    unit: Unit
    status: str = "not-run"  # pass | fail | not-probed | timeout | not-run
    depth: str = "none"  # none | front-end | codegen (the deepest phase group run)
    seconds: float = 0.0
    front_end_s: float = 0.0
    codegen_s: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)
    first_error: str | None = None
    log: str = ""
    note: str = ""
    finding: Finding | None = None
    # the front end's pass came from the content cache (frontcache.py): "hit" | "miss" | ""
    front_end_cache: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "front_end_cache": self.front_end_cache,
            "path": self.unit.path,
            "why": self.unit.why,
            "kind": self.unit.kind,
            "family": self.unit.family,
            "target": self.unit.target,
            "archs": list(self.unit.archs),
            "needs": list(self.unit.needs),
            "depth": self.depth,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "front_end_s": round(self.front_end_s, 1),
            "codegen_s": round(self.codegen_s, 1),
            "steps": self.steps,
            "first_error": self.first_error,
            "log": self.log,
            "note": self.note,
        }


_ERROR_LINE = re.compile(r"(\berror\b|\bError\b|fatal error|Killed|signal 9)")


def first_error(log: Path) -> str | None:
    for line in _read(log).splitlines():
        if line.startswith(("$ ", "# ", "#$ ")):
            continue
        if _ERROR_LINE.search(line):
            return line.strip()
    return None


class _UnitRunner:
    def __init__(
        self,
        unit: Unit,
        unit_flags: list[str],
        tree: Path,
        tk: Toolkit,
        env: dict[str, str],
        work: Path,
        timeout_s: float,
    ) -> None:
        self.u, self.flags, self.tree, self.tk, self.env = unit, unit_flags, tree, tk, env
        self.work, self.timeout_s = work, timeout_s
        self.log = work / "logs" / f"{unit.name}.log"
        self.pass_ = "main"
        self.keep = work / "tmp" / unit.name
        self.obj = work / "obj" / f"{unit.name}.o"
        self.fe_cache: frontcache.FrontEndCache | None = None

    def _exec(self, phase: str, argv: Sequence[str], env: dict[str, str], res: UnitResult) -> bool:
        if phase == "rm":
            for p in argv[1:]:
                with contextlib.suppress(OSError):
                    Path(p).unlink()
            return True
        if _STOP.is_set():
            res.status, res.note = "interrupted", "stopped by Ctrl-C"
            return False
        left = self.timeout_s - res.seconds
        if left <= 0:
            res.status = "timeout"
            return False
        t0 = time.monotonic()
        done = proc.run(argv, log=self.log, env=env, cwd=self.work, check=False, timeout=left)
        dt = time.monotonic() - t0
        res.seconds += dt
        # A second, codegen-only pass (depth auto) redoes the front end for one arch: its
        # whole pipeline is the codegen cost.
        if phase in ("host-preprocess", "front-end") and self.pass_ != "codegen-pass":
            res.front_end_s += dt
        else:
            res.codegen_s += dt
        res.steps.append(
            {
                "pass": self.pass_,
                "phase": phase,
                "tool": Path(argv[0]).name,
                "seconds": round(dt, 1),
                "rc": done.returncode,
            }
        )
        if done.returncode == -9 and time.monotonic() - t0 >= left:  # proc.run's timeout
            res.status = "timeout"
            res.note = f"stopped after {res.seconds:.0f}s (limit {self.timeout_s:.0f}s) in {phase}"
            return False
        if done.returncode != 0:
            res.status = "fail"
            return False
        return True

    def run(
        self, depth: str, res: UnitResult, gencode: list[str] | None = None, pass_: str = "main"
    ) -> None:
        """Run the unit's pipeline through ``depth`` ("front-end" | "codegen")."""
        self.pass_ = pass_
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.keep.mkdir(parents=True, exist_ok=True)
        self.obj.parent.mkdir(parents=True, exist_ok=True)
        src = str(self.tree / self.u.path)
        flags_now = list(self.flags)
        if gencode is not None:
            flags_now = _replace_gencode(flags_now, gencode)
        if self.u.kind == "cxx":
            cxx = self.env.get("CXX") or shutil.which("c++") or "g++"
            mode = ["-fsyntax-only"] if depth == "front-end" else ["-c", "-o", str(self.obj)]
            ok = self._exec(
                "front-end" if depth == "front-end" else "host-compile",
                [cxx, *flags_now, *mode, src],
                self.env,
                res,
            )
            res.depth = depth
            if ok:
                res.status = "pass"
            return
        dry = proc.run(
            [
                str(self.tk.nvcc),
                *flags_now,
                "-c",
                src,
                "-o",
                str(self.obj),
                "--dryrun",
                "--keep",
                "--keep-dir",
                str(self.keep),
            ],
            log=self.log,
            env=self.env,
            cwd=self.work,
            check=False,
            timeout=120,
        )
        steps, nvcc_env = parse_dryrun(dry.output)
        if dry.returncode != 0 or not steps:
            res.status, res.depth = "fail", "none"
            res.note = "nvcc --dryrun failed"
            return
        env = dict(self.env)
        env.update(nvcc_env)
        stop = len(steps)
        if depth == "front-end":
            fe = next((i for i, s in enumerate(steps) if s.phase == "front-end"), None)
            stop = fe + 1 if fe is not None else stop
        key = None
        for s in steps[:stop]:
            res.depth = "front-end" if s.phase in ("host-preprocess", "front-end") else "codegen"
            # only when the front end is the last step: a codegen run needs its outputs
            if s.phase == "front-end" and depth == "front-end" and self.fe_cache is not None:
                key = self.fe_cache.key(s.argv, self._roots())
                if key is not None and self.fe_cache.passed(key):
                    res.front_end_cache = "hit"
                    res.steps.append(
                        {
                            "pass": pass_,
                            "phase": s.phase,
                            "tool": Path(s.argv[0]).name,
                            "seconds": 0.0,
                            "rc": 0,
                            "cached": True,
                        }
                    )
                    continue
                res.front_end_cache = "miss" if key is not None else ""
            t_fe = res.seconds
            if not self._exec(s.phase, s.argv, env, res):
                return
            if s.phase == "front-end" and key is not None and self.fe_cache is not None:
                self.fe_cache.store(key, self.u.path, res.seconds - t_fe)
        res.depth = depth
        res.status = "pass"

    def _roots(self) -> dict[str, str]:
        """Paths that differ between cells but not in content: the release's tree and the
        probe's work dir (nvcc's --keep files)."""
        return {str(self.tree): "<tree>", str(self.work): "<work>"}


def _replace_gencode(unit_flags: list[str], gencode: list[str]) -> list[str]:
    out: list[str] = []
    i, placed = 0, False
    while i < len(unit_flags):
        if unit_flags[i] == "-gencode" and i + 1 < len(unit_flags):
            if not placed:
                out += gencode
                placed = True
            i += 2
            continue
        out.append(unit_flags[i])
        i += 1
    return out if placed else out + gencode


# ==================================================================== resources


def mem_available_gib(meminfo: Path = Path("/proc/meminfo")) -> float:
    for line in _read(meminfo).splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 4.0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def job_limit(
    per_unit_gib: float, jobs: int | None = None, meminfo: Path = Path("/proc/meminfo")
) -> int:
    """Concurrent units: cores (or ``jobs``), capped by MemAvailable / per-unit memory."""
    by_mem = int(mem_available_gib(meminfo) // per_unit_gib)
    return max(1, min(jobs or cpu_count(), by_mem))


# ==================================================================== the stage


def _classify(log: Path) -> tuple[Finding, str, str | None]:
    """classify's finding for a failed unit log, a short label, and the quoted line."""
    c = classify.classify_file(log)
    line = c.line.strip() or None
    m = re.search(r'(?:has no member|is not a member of|identifier) "?\'?([A-Za-z_][\w:]*)', c.line)
    if m:
        label = m.group(1).split("::")[-1]
    elif c.signature is not None:
        label = c.signature.id
    else:
        em = re.search(r"error\s*:\s*(.{1,60})", c.line)
        label = em.group(1).strip() if em else "unknown error"
    return c.to_finding(log), label, line


def run_probe(
    cell: Cell,
    tree: Path,
    facts: SourceFacts,
    tk: Toolkit,
    tv: TorchEnv,
    fx: Fixups,
    work: Path,
    *,
    depth: str = "auto",
    jobs: int | None = None,
    budget_s: float = 180.0,
    api_hits: Sequence[ApiHit] | None = None,
    timeout_s: float = UNIT_TIMEOUT_S,
    only: Sequence[str] | None = None,
    front_end_cache: bool = True,
    units_mode: str = "selected",
) -> StageResult:
    """Compile the cell's deciding units; one StageResult with a row per unit.

    ``only`` restricts the run to those unit paths (measurements, debugging).
    """
    if depth not in DEPTHS:
        raise MatrixError(
            f"unknown probe depth '{depth}'", fix=tomlfile.did_you_mean(depth, DEPTHS)
        )
    if units_mode not in UNITS_MODES:
        raise MatrixError(
            f"unknown probe units mode '{units_mode}'",
            fix=tomlfile.did_you_mean(units_mode, UNITS_MODES),
        )
    t_start = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    know = load_knowledge()
    archs = tuple(cell.arch)
    work.mkdir(parents=True, exist_ok=True)
    fe_cache = frontcache.FrontEndCache(tk.full_version) if front_end_cache else None
    if api_hits is None:
        from vllm_matrix.knowledge import toolchains as knowledge
        from vllm_matrix.stages import apiscan

        api_hits = apiscan.scan(tree, knowledge.load().api)

    # Externals: the tree's pins, from the override variable or PyPI (checksum-verified).
    ext_dirs: dict[str, ExternalDir] = {}
    for e in know.externals:
        if any(x.name == e.name for x in facts.external):
            ext_dirs[e.name] = external_dir(facts, e.name, know, fetch=True)
    fetch_dirs = {k: v.path for k, v in ext_dirs.items() if v.path is not None}
    tfl = torch_flags(tv)
    model = build_model(tree, tk.full_version, archs, tfl, cell.python, fetch_dirs, know)
    sel = select(tree, facts, archs, tk.full_version, api_hits, model, know)
    if units_mode == "all":  # every unit the build compiles (the accuracy study's sweep)
        only = model.built_sources()
    units = [u for u in sel.units if only is None or u.path in only]
    if only:
        known = {u.path for u in units}
        for p in only:
            if p not in known:
                kind = "cuda" if p.endswith(CUDA_SUFFIXES) else "cxx"
                fam = model.family_of(p)
                t = model.target_of(p)
                needs = include_closure(tree, p, _search_dirs(model, tree, p), know)[1]
                units.append(
                    Unit(
                        p,
                        "all" if units_mode == "all" else "requested",
                        kind,
                        tuple(sorted(needs)),
                        fam.name if fam else "",
                        fam.gated if fam else False,
                        t.name if t else "",
                        unit_archs(model, p),
                    )
                )
    env = fx.env()
    results: list[UnitResult] = []
    runners: list[tuple[_UnitRunner, UnitResult]] = []
    for u in units:
        res = UnitResult(u)
        results.append(res)
        missing = [n for n in u.needs if n not in fetch_dirs]
        if GENERATED in missing:
            # A header the build writes (a code generator run from CMake): the probe does
            # not run generators, so the unit cannot be compiled here; not a failure.
            why = include_closure(tree, u.path, _search_dirs(model, tree, u.path), know)[1]
            res.status = "not-probed"
            res.note = f"not probed: needs a generated file ({why.get(GENERATED, '?')})"
            continue
        if missing:
            ed = ext_dirs.get(missing[0])
            pin = ed.pin if ed else None
            var = next((x.env_var for x in facts.external if x.name == missing[0]), None)
            res.status = "not-probed"
            res.note = (
                f"not probed: needs {missing[0]}"
                + (f" {pin}" if pin else "")
                + f" ({var or 'its *_SRC_DIR'})"
                + (f": {ed.origin}" if ed else "")
            )
            continue
        explained = explain_flags(u, tree, tk, tv, archs, facts, model=model, fetch_dirs=fetch_dirs)
        r = _UnitRunner(u, [f for f, _ in explained], tree, tk, env, work, timeout_s)
        r.fe_cache = fe_cache
        r.log.parent.mkdir(parents=True, exist_ok=True)
        res.log = str(r.log)
        _write_flag_notes(r.log, explained)  # starts the log afresh
        runners.append((r, res))

    first_depth = "codegen" if depth == "codegen" else "front-end"
    n_jobs = job_limit(know.codegen_gib if depth == "codegen" else know.front_end_gib, jobs)

    def phase1(item: tuple[_UnitRunner, UnitResult]) -> None:
        r, res = item
        if depth == "codegen" and r.u.kind == "cuda":
            r.run("codegen", res, lowest_gencode(r.flags))
        else:
            r.run(first_depth, res)

    with progress.Progress(
        f"probing vLLM {cell.vllm} ({first_depth}, {n_jobs} at a time)", len(runners), "units"
    ) as bar:
        _run_all(bar.each(phase1, _unit_label), runners, n_jobs)

    # depth auto: code generation for the lowest arch of arch-gated units that passed their
    # front end, cheapest first, while the estimate fits the rest of the budget.
    codegen_jobs = 0
    if depth == "auto":
        elapsed = time.monotonic() - t_start
        left = budget_s - elapsed
        cands = sorted(
            (
                (r, res)
                for r, res in runners
                if res.status == "pass" and r.u.gated and r.u.kind == "cuda"
            ),
            key=lambda it: it[1].front_end_s,
        )
        plan: list[tuple[_UnitRunner, UnitResult]] = []
        cg_jobs = job_limit(know.codegen_gib, jobs)
        total = 0.0
        for r, res in cands:
            est = know.codegen_per_front_end * res.front_end_s
            if (total + est) / cg_jobs <= left:
                total += est
                plan.append((r, res))
            else:
                res.note = (
                    f"codegen skipped: estimated {est:.0f}s "
                    f"({know.codegen_per_front_end:g} x front end) exceeds the "
                    f"{max(left, 0):.0f}s left of the {budget_s:.0f}s budget"
                )
        codegen_jobs = cg_jobs if plan else 0

        # The estimate can be far off (cicc on CUTLASS kernels for sm_120 ran for many
        # minutes on 16 cores): the budget is a deadline. A unit still in code generation
        # then keeps its front-end pass.
        deadline = t_start + budget_s

        def phase2(item: tuple[_UnitRunner, UnitResult]) -> None:
            r, res = item
            res.status = "not-run"
            r.timeout_s = res.seconds + max(deadline - time.monotonic(), 1.0)
            r.run("codegen", res, lowest_gencode(r.flags), pass_="codegen-pass")
            if res.status == "timeout":
                res.status, res.depth = "pass", "front-end"
                res.note = (
                    f"code generation stopped at the {budget_s:.0f}s budget after "
                    f"{res.codegen_s:.0f}s (the front end passed)"
                )

        if plan:
            with progress.Progress(
                f"probing vLLM {cell.vllm} (code generation, {cg_jobs} at a time)",
                len(plan),
                "units",
            ) as bar:
                _run_all(bar.each(phase2, _unit_label), plan, cg_jobs)

    # ---- findings and summary
    findings: list[Finding] = []
    failed: list[tuple[UnitResult, str]] = []
    for res in results:
        if res.status == "fail":
            f, label, line = _classify(Path(res.log))
            res.first_error = line or first_error(Path(res.log))
            res.finding = f
            findings.append(f)
            failed.append((res, label))
        elif res.status == "timeout":
            res.first_error = None
            findings.append(
                Finding(
                    "probe-timeout",
                    "warn",
                    f"{res.unit.path}: {res.note or 'timed out'}",
                    fix="raise the unit timeout or probe on a bigger machine",
                    evidence=(res.log,),
                )
            )
        elif res.status == "not-probed":
            findings.append(
                Finding(
                    "probe-not-probed",
                    "info",
                    f"{res.unit.path}: {res.note}",
                    fix="only a full build compiles it (its generator runs at configure time)"
                    if GENERATED in res.unit.needs
                    else "set the dependency's *_SRC_DIR to a checkout at the pin",
                    source=next((e.source for e in know.externals if e.name in res.unit.needs), ""),
                )
            )
    if not model.cuda_archs:
        findings.append(
            Finding(
                "probe-no-arch",
                "warn",
                f"the tree builds none of the cell's arches {', '.join(archs)} with nvcc "
                f"{tk.full_version} (its CUDA_SUPPORTED_ARCHS for this nvcc leave nothing): "
                "units compile for nvcc's default arch only",
                fix="pick an arch the tree supports, or a newer toolkit",
            )
        )
    for msg in model.fatal:
        findings.append(
            Finding(
                "probe-configure",
                "warn",
                f"the tree's CMake stops for this cell: {msg}",
                evidence=(msg.split(": ", 1)[0],),
            )
        )
    probed = [r for r in results if r.status in ("pass", "fail", "timeout")]
    deepest = (
        "codegen"
        if any(r.depth == "codegen" for r in probed)
        else ("front-end" if probed else "none")
    )
    n_cg = sum(1 for r in probed if r.depth == "codegen")
    depth_label = (
        deepest
        if deepest != "codegen" or n_cg == len(probed)
        else (f"front-end ({n_cg} also codegen)")
    )
    summary = f"{len(probed)} units, {depth_label}"
    if failed:
        summary += f", {len(failed)} failed: " + ", ".join(
            f"{Path(r.unit.path).name} ({cause})" for r, cause in failed
        )
    else:
        n_pass = sum(1 for r in probed if r.status == "pass")
        if probed:
            summary += ", all passed" if n_pass == len(probed) else f", {n_pass} passed"
    n_np = sum(1 for r in results if r.status == "not-probed")
    if n_np:
        lacking = sorted({n for r in results if r.status == "not-probed" for n in r.unit.needs})
        summary += f"; {n_np} not probed (needs {', '.join(lacking)})"
    n_to = sum(1 for r in results if r.status == "timeout")
    if n_to:
        summary += f"; {n_to} timed out"
    status = FAIL if failed else (WARN if n_to else PASS)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    details: dict[str, Any] = {
        "depth": deepest,
        "requested_depth": depth,
        "jobs": n_jobs,
        "codegen_jobs": codegen_jobs,
        "cpus": cpu_count(),
        "mem_available_gib": round(mem_available_gib(), 1),
        "loadavg_at_start": _loadavg(),
        "wall_seconds": round(time.monotonic() - t_start, 1),
        "cpu_seconds": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 1),
        "budget_s": budget_s,
        "front_end_cache": {
            "hits": sum(1 for r in results if r.front_end_cache == "hit"),
            "misses": sum(1 for r in results if r.front_end_cache == "miss"),
            "key": "sha256 of the preprocessed unit (tree/work paths normalised), cudafe++ "
            "argv, nvcc version",
        },
        "units": [r.to_json() for r in results],
        "families": list(sel.families),
        "api_hits_not_built": list(sel.not_built),
        "generated_sources": list(model.empty_globs),
        "external_projects_not_probed": list(model.skipped_includes),
        "externals": {
            k: {"pin": v.pin, "path": str(v.path) if v.path else None, "origin": v.origin}
            for k, v in ext_dirs.items()
        },
        "cuda_archs": list(model.cuda_archs),
        "notes": list(model.notes),
    }
    summary_log = work / "probe.log"
    atomic_write_text(summary_log, _render_log(summary, results, details))
    return StageResult(
        "probe",
        status,
        round(time.monotonic() - t_start, 1),
        summary,
        tuple(findings),
        details,
        str(summary_log),
    )


# "selected": the units the probe chooses (API hits, arch-gated families, one per target);
# "all": every unit the build compiles, to the front end (what the selection is measured by)
UNITS_MODES = ("selected", "all")

_STOP = threading.Event()  # set on Ctrl-C: units not started yet must not start


def _run_all(
    fn: Callable[[tuple[_UnitRunner, UnitResult]], None],
    items: Sequence[tuple[_UnitRunner, UnitResult]],
    jobs: int,
) -> None:
    """``fn`` over ``items`` on ``jobs`` threads. Ctrl-C (or a SIGINT to this process
    alone) cancels what has not started and ends the compilers running, so it stops in
    seconds instead of waiting for every unit."""
    _STOP.clear()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        list(pool.map(fn, items))
    except KeyboardInterrupt:
        _STOP.set()
        pool.shutdown(wait=False, cancel_futures=True)
        for pid in proc.descendants(os.getpid()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        raise
    finally:
        pool.shutdown(wait=True)


def _unit_label(item: tuple[_UnitRunner, UnitResult]) -> str:
    return Path(item[0].u.path).name


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def _write_flag_notes(log: Path, explained: Sequence[tuple[str, str]]) -> None:
    lines = ["# flags and where they come from:"]
    last = None
    for f, origin in explained:
        if origin != last:
            lines.append(f"#   [{origin}]")
            last = origin
        lines.append(f"#     {f}")
    log.write_text("\n".join(lines) + "\n")


def _render_log(summary: str, results: Sequence[UnitResult], details: dict[str, Any]) -> str:
    out = [f"probe: {summary}", ""]
    for r in results:
        out.append(f"{r.status:10} {r.depth:9} {r.seconds:7.1f}s  {r.unit.path}")
        out.append(f"           why: {r.unit.why}")
        if r.first_error:
            out.append(f"           error: {r.first_error}")
        if r.note:
            out.append(f"           note: {r.note}")
        if r.log:
            out.append(f"           log: {r.log}")
    out += ["", json.dumps({k: v for k, v in details.items() if k != "units"}, indent=1)]
    return "\n".join(out) + "\n"


__all__ = [
    "DEPTHS",
    "BuildModel",
    "Family",
    "Unit",
    "build_model",
    "explain_flags",
    "flags",
    "job_limit",
    "parse_dryrun",
    "run_probe",
    "select_units",
]
