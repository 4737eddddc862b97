"""Just enough of a CMake interpreter to run vLLM's CMakeLists.txt and cmake/utils.cmake."""

from __future__ import annotations

import contextlib
import functools
import glob
import itertools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from vllm_matrix.cmake.conditions import Cond
from vllm_matrix.cmake.lexer import Cmd, Def, If, Loop, Node, Tok, blocks, lex, subst_macro
from vllm_matrix.cmake.model import Assignment, Family, Fetch, Gate, TargetBuild
from vllm_matrix.cmake.values import natural_key, parse_args, py_regex, regex_replace, split_list
from vllm_matrix.infra.errors import MatrixError

_REF = re.compile(r"\$(ENV|CACHE)?\{([^${}]*)\}")
_ONE_REF = re.compile(r"\$\{([^${}]+)\}")
# The variables that hold the nvcc version once find_package(Torch) enabled CUDA.
NVCC_VARS = ("CMAKE_CUDA_COMPILER_VERSION", "CUDA_VERSION", "CUDAToolkit_VERSION")
_NVCC_REF = re.compile(r"\$\{(" + "|".join(NVCC_VARS) + r")\}|(" + "|".join(NVCC_VARS) + ")")
_MIRROR = {"GREATER": "LESS", "LESS": "GREATER", "GREATER_EQUAL": "LESS_EQUAL"}
_MIRROR |= {v: k for k, v in _MIRROR.items()} | {"EQUAL": "EQUAL"}
_FETCH_KEYS = ("GIT_REPOSITORY", "GIT_TAG", "URL", "SOURCE_DIR")

# run_python is a function in utils.cmake; ours answers from the torch env's files,
# because the headers env cannot `import torch`.
_ALWAYS_NATIVE = {"run_python"}


@functools.lru_cache(maxsize=64)
def _parsed(path: Path, rel: str, _stamp: int) -> list[Node]:
    """A file's blocks, parsed once per file state (the evaluator never changes them)."""
    return blocks(lex(path.read_text(encoding="utf-8", errors="replace"), rel))


class _Return(Exception):
    pass


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class CMake:
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
        env: Mapping[str, str],
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
        self.defs: dict[str, Def] = {}
        self.targets: dict[str, TargetBuild] = {}
        self.src_options: dict[str, list[str]] = {}
        self.src_props: dict[str, dict[str, str]] = {}
        self.families: list[Family] = []
        self.fatal: list[str] = []
        self.notes: list[str] = []
        self.empty_globs: list[str] = []
        self.skipped_includes: list[str] = []
        self.steps = 0
        # What the tree declares, for the survey (cmake/survey.py): every set() executed,
        # where each variable's value is written, the FetchContent sources, the nvcc
        # versions the conditions compare with, and the arch-gated kernels.
        self.follow_external_projects = False  # the probe skips them; the survey runs them
        self.assignments: list[Assignment] = []
        self.origins: dict[str, str] = {}
        self.fetches: list[Fetch] = []
        self.minimum: tuple[str, str] | None = None  # cmake_minimum_required VERSION, where
        self.nvcc_thresholds: set[tuple[str, str]] = set()  # (VERSION_* op, version)
        self.intersections: dict[str, tuple[tuple[str, ...], str]] = {}
        self.gates: list[tuple[str, Gate]] = []  # (file, gate)

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
        if "$" not in text:
            return text
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

    def args(self, toks: Iterable[Tok]) -> list[str]:
        out: list[str] = []
        for t in toks:
            v = self.expand(t.text)
            if t.quoted:
                out.append(v)
            else:
                out.extend(x for x in split_list(v) if x != "")
        return out

    def rel(self, path: str) -> str:
        p = Path(path)
        if p.is_absolute():
            with contextlib.suppress(ValueError):
                return p.relative_to(self.root).as_posix()
            return p.as_posix()
        return Path(os.path.normpath(path)).as_posix()

    # ------------------------------------------------------------- conditions
    def cond(self, toks: tuple[Tok, ...]) -> bool:
        items: list[tuple[str, bool]] = []
        for t in toks:
            if t.quoted:
                items.append((self.expand(t.text), True))
            elif t.text in ("(", ")"):
                items.append((t.text, False))
            else:
                items.extend((x, False) for x in split_list(self.expand(t.text)) if x != "")
        return Cond(items, self).result()

    # ------------------------------------------------------------- execution
    def run_file(self, path: Path) -> None:
        rel = self.rel(str(path))
        nodes = _parsed(path, rel, path.stat().st_mtime_ns)
        saved = self.get("CMAKE_CURRENT_LIST_DIR")
        self.set("CMAKE_CURRENT_LIST_DIR", str(path.parent))
        try:
            self.exec(nodes)
        except _Return:
            pass
        finally:
            self.set("CMAKE_CURRENT_LIST_DIR", saved)

    def exec(self, nodes: list[Node]) -> None:
        for n in nodes:
            self.steps += 1
            if self.steps > 200_000:
                raise MatrixError("CMake evaluation did not terminate", fix="report this tree")
            if isinstance(n, Def):
                self.defs[n.name] = n
            elif isinstance(n, If):
                for cond, body in n.arms:
                    if cond is not None:
                        self.observe(cond, body)
                    if cond is None or self.cond(cond):
                        self.exec(body)
                        break
            elif isinstance(n, Loop):
                self.loop(n)
            else:
                self.command(n)

    def loop(self, n: Loop) -> None:
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
                    items += split_list(self.get(a) or "")
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

    def call(self, d: Def, cmd: Cmd) -> None:
        argv = self.args(cmd.args)
        if d.kind == "macro":
            mapping = {p: (argv[i] if i < len(argv) else "") for i, p in enumerate(d.params)}
            mapping["ARGN"] = ";".join(argv[len(d.params) :])
            mapping["ARGV"] = ";".join(argv)
            mapping["ARGC"] = str(len(argv))
            for i, a in enumerate(argv):
                mapping[f"ARGV{i}"] = a
            with contextlib.suppress(_Return):
                self.exec(subst_macro(d.body, mapping))
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

    def command(self, cmd: Cmd) -> None:
        name = cmd.name
        native = getattr(self, f"c_{name}", None)
        if name == "set_gencode_flags_for_srcs":
            self.record_family(cmd)
        elif name == "cuda_archs_loose_intersection":
            argv = self.args(cmd.args)
            if len(argv) >= 2:
                archs = tuple(a for a in split_list(argv[1]) if a)
                self.intersections[argv[0]] = (archs, cmd.where)
        if (native is not None and name not in self.defs) or name in _ALWAYS_NATIVE:
            if native is not None:
                native(cmd)
            return
        d = self.defs.get(name)
        if d is not None:
            self.call(d, cmd)
        # anything else (find_package, install, execute_process, ...) has no effect here

    # ------------------------------------------------------------- nvcc and gates
    def nvcc_tests(self, toks: tuple[Tok, ...]) -> list[tuple[str, str]]:
        """The condition's comparisons of the nvcc version, as ("VERSION_GREATER", "12.8")
        with nvcc on the left (a comparison written the other way round is mirrored)."""
        out = []
        for i in range(1, len(toks) - 1):
            op = toks[i].text
            if toks[i].quoted or not op.startswith("VERSION_") or op[8:] not in _MIRROR:
                continue
            left, right = toks[i - 1], toks[i + 1]
            if _NVCC_REF.fullmatch(left.text.strip()):
                other = right
            elif _NVCC_REF.fullmatch(right.text.strip()):
                other, op = left, "VERSION_" + _MIRROR[op.removeprefix("VERSION_")]
            else:
                continue
            value = self.expand(other.text)
            if not other.quoted and self.get(value) is not None:
                value = self.get(value) or ""
            out.append((op, value))
        return out

    def observe(self, cond: tuple[Tok, ...], body: list[Node]) -> None:
        """An if() arm about to be tested: the nvcc versions it compares with, and, where it
        needs a new enough nvcc and a cuda_archs_loose_intersection result, a kernel gate."""
        tests = self.nvcc_tests(cond)
        self.nvcc_thresholds.update(tests)
        floors = [(op, t) for op, t in tests if op in ("VERSION_GREATER", "VERSION_GREATER_EQUAL")]
        if not floors:
            return
        op, nvcc = floors[0]
        for tok in cond:
            hit = None if tok.quoted else self.intersections.get(tok.text)
            if hit is None:
                continue
            sources: list[str] = []
            for node in body:
                if isinstance(node, Cmd) and node.name == "set":
                    sources = [self.rel(x) for x in self.args(node.args)[1:] if x.endswith(".cu")]
                    if sources:
                        break
            sign = ">=" if op == "VERSION_GREATER_EQUAL" else ">"
            file, line = hit[1].rsplit(":", 1)
            gate = Gate(tok.text, hit[0], sign, nvcc, tuple(sources), int(line))
            self.gates.append((file, gate))

    # ------------------------------------------------------------- families
    def record_family(self, cmd: Cmd) -> None:
        toks = cmd.args
        raw: dict[str, str] = {}
        for i, t in enumerate(toks[:-1]):
            if not t.quoted and t.text in ("SRCS", "CUDA_ARCHS"):
                m = re.fullmatch(r"\$\{(\w+)\}", toks[i + 1].text.strip())
                raw[t.text] = m.group(1) if m else toks[i + 1].text
        argv = [x for a in self.args(toks) for x in split_list(a)]  # as ${ARGN} re-splits them
        parsed = parse_args(argv, (), ("BUILD_PTX_FOR_ARCH",), ("SRCS", "CUDA_ARCHS"))
        srcs = tuple(dict.fromkeys(self.rel(s) for s in parsed.get("SRCS", [])))
        archs = tuple(parsed.get("CUDA_ARCHS", []))
        self.families.append(
            Family(raw.get("CUDA_ARCHS", "?"), raw.get("SRCS", "?"), archs, srcs, cmd.where)
        )

    # ------------------------------------------------------------- natives
    def origin(self, tok: Tok, where: str) -> str:
        """Where ``tok``'s value is written: a lone ``${X}`` is X's origin."""
        m = _ONE_REF.fullmatch(tok.text.strip())
        if m and m.group(1) in self.origins:
            return self.origins[m.group(1)]
        return f"{where.rsplit(':', 1)[0]}:{tok.line}"

    def as_read(self, toks: tuple[Tok, ...]) -> tuple[str, ...]:
        """set() values as a reader takes them: up to CACHE/PARENT_SCOPE, and a value that
        names a variable no set() reached kept as written (the reader cannot resolve it)."""
        out: list[str] = []
        for tok in toks:
            if not tok.quoted and tok.text in ("CACHE", "PARENT_SCOPE"):
                break
            if any(self.get(r) is None for r in _ONE_REF.findall(tok.text)):
                out.append(tok.text)
            else:
                out += self.args((tok,))
        return tuple(out)

    def c_set(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if not a:
            return
        name, vals = a[0], a[1:]
        raw = cmd.args[1:]
        if any(self.get(r) is None for t in raw for r in _ONE_REF.findall(t.text)):
            shown = self.as_read(raw)
        else:  # the values as evaluated: no second expansion
            stop = ("CACHE", "PARENT_SCOPE")
            shown = tuple(itertools.takewhile(lambda v: v not in stop, vals))
        self.assignments.append(Assignment(name, shown, cmd.where))
        if len(cmd.args) > 1:
            self.origins[name] = self.origin(cmd.args[1], cmd.where)
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

    def c_unset(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if a:
            if "CACHE" in a[1:]:
                self.cache.pop(a[0], None)
            else:
                self.set(a[0], None, parent="PARENT_SCOPE" in a[1:])

    def c_option(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if a and self.get(a[0]) is None:
            self.cache[a[0]] = a[2] if len(a) > 2 else "OFF"

    def c_list(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if len(a) < 2:
            return
        op, var, rest = a[0], a[1], a[2:]
        cur = split_list(self.get(var) or "")
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
            key: Callable[[str], Any] = natural_key if natural else str
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
            pat = re.compile(py_regex(rest[2]))
            self.set(var, ";".join(x for x in cur if bool(pat.search(x)) == keep))

    def c_string(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if not a:
            return
        op = a[0]
        if op == "REPLACE" and len(a) >= 4:
            self.set(a[3], "".join(a[4:]).replace(a[1], a[2]))
        elif op == "REGEX" and len(a) >= 4:
            sub = a[1]
            if sub == "REPLACE" and len(a) >= 5:
                self.set(a[4], regex_replace(a[2], a[3], "".join(a[5:])))
            elif sub in ("MATCH", "MATCHALL"):
                text = "".join(a[4:])
                pat = re.compile(py_regex(a[2]))
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

    def c_file(self, cmd: Cmd) -> None:
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

    def c_message(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if a and a[0] in ("FATAL_ERROR", "SEND_ERROR"):
            self.fatal.append(f"{cmd.where}: {''.join(a[1:])}")

    def c_include(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if not a:
            return
        path = Path(a[0])
        if not path.is_absolute():
            path = Path(self.get("CMAKE_CURRENT_SOURCE_DIR") or self.root) / path
        if not path.is_file():
            return  # a CMake module (FetchContent, ...)
        rel = self.rel(str(path))
        external = rel.startswith("cmake/external_projects/")
        if (external and not self.follow_external_projects) or not path.resolve().is_relative_to(
            self.root.resolve()
        ):
            self.skipped_includes.append(rel)
            return
        self.run_file(path)

    def c_return(self, cmd: Cmd) -> None:
        raise _Return

    def c_break(self, cmd: Cmd) -> None:
        raise _Break

    def c_continue(self, cmd: Cmd) -> None:
        raise _Continue

    def c_get_filename_component(self, cmd: Cmd) -> None:
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

    def c_cmake_parse_arguments(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if a[:1] == ["PARSE_ARGV"] and len(a) >= 5:
            start, prefix = int(a[1]), a[2]
            opts, ones, multis = (
                split_list(a[3]),
                split_list(a[4]),
                split_list(a[5] if len(a) > 5 else ""),
            )
            n = int(self.get("ARGC") or "0")
            argv = [self.get(f"ARGV{i}") or "" for i in range(start, n)]
        elif len(a) >= 4:
            prefix = a[0]
            opts, ones, multis = split_list(a[1]), split_list(a[2]), split_list(a[3])
            argv = a[4:]
        else:
            return
        parsed = parse_args(argv, tuple(opts), tuple(ones), tuple(multis))
        for o in opts:
            self.set(f"{prefix}_{o}", "TRUE" if parsed.get(o) else "FALSE")
        for k in (*ones, *multis):
            v = parsed.get(k)
            self.set(f"{prefix}_{k}", ";".join(v) if v else None)
        un = parsed.get("", [])
        self.set(f"{prefix}_UNPARSED_ARGUMENTS", ";".join(un) if un else None)

    def c_set_property(self, cmd: Cmd) -> None:
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
                    tb.cuda_architectures = [x for v in vals for x in split_list(v)]

    def c_set_source_files_properties(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if "PROPERTIES" not in a:
            return
        i = a.index("PROPERTIES")
        srcs, kv = a[:i], a[i + 1 :]
        for s in srcs:
            props = self.src_props.setdefault(self.rel(s), {})
            for k in range(0, len(kv) - 1, 2):
                props[kv[k]] = kv[k + 1]

    def items(self, cmd: Cmd) -> list[str]:
        """Arguments with quoted lists split too: commands taking items expand lists."""
        return [x for a in self.args(cmd.args) for x in split_list(a)]

    def _new_target(self, cmd: Cmd, kinds: frozenset[str]) -> None:
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
        self.targets[name] = TargetBuild(name, srcs, cmd.where, sabi)

    def c_python_add_library(self, cmd: Cmd) -> None:
        self._new_target(
            cmd, frozenset({"MODULE", "SHARED", "STATIC", "WITH_SOABI", "EXCLUDE_FROM_ALL"})
        )

    def c_add_library(self, cmd: Cmd) -> None:
        self._new_target(cmd, frozenset({"MODULE", "SHARED", "STATIC", "EXCLUDE_FROM_ALL"}))

    def _target_items(self, cmd: Cmd) -> tuple[TargetBuild | None, list[str]]:
        a = self.items(cmd)
        if not a:
            return None, []
        skip = {"PRIVATE", "PUBLIC", "INTERFACE", "SYSTEM", "BEFORE", "AFTER"}
        return self.targets.get(a[0]), [x for x in a[1:] if x not in skip]

    def c_target_include_directories(self, cmd: Cmd) -> None:
        t, items = self._target_items(cmd)
        if t is not None:
            base = Path(self.get("CMAKE_CURRENT_SOURCE_DIR") or self.root)
            t.includes += [
                x if os.path.isabs(x) or x.startswith("$<") else str(base / x) for x in items
            ]

    def c_target_compile_options(self, cmd: Cmd) -> None:
        t, items = self._target_items(cmd)
        if t is not None:
            t.options += items

    def c_target_compile_definitions(self, cmd: Cmd) -> None:
        t, items = self._target_items(cmd)
        if t is not None:
            for x in items:
                d = x[2:] if x.startswith("-D") else x
                t.definitions.append(d)
                t.definition_where.setdefault(d, cmd.where)

    def c_target_sources(self, cmd: Cmd) -> None:
        t, items = self._target_items(cmd)
        if t is not None:
            t.sources += [self.rel(x) for x in items]

    def c_set_target_properties(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if "PROPERTIES" not in a:
            return
        i = a.index("PROPERTIES")
        for name in a[:i]:
            t = self.targets.get(name)
            for k in range(i + 1, len(a) - 1, 2):
                if t is not None and a[k] == "CUDA_ARCHITECTURES":
                    t.cuda_architectures = split_list(a[k + 1])

    def c_fetchcontent_makeavailable(self, cmd: Cmd) -> None:
        for name in self.args(cmd.args):
            self._populated(name)

    def c_fetchcontent_populate(self, cmd: Cmd) -> None:
        self.record_fetch(cmd)
        a = self.args(cmd.args)
        if a:
            self._populated(a[0])

    def c_fetchcontent_declare(self, cmd: Cmd) -> None:
        self.record_fetch(cmd)

    def c_cmake_minimum_required(self, cmd: Cmd) -> None:
        a = self.as_read(cmd.args)
        if self.minimum is None and "VERSION" in a[:-1]:
            self.minimum = (a[a.index("VERSION") + 1], cmd.where)

    def record_fetch(self, cmd: Cmd) -> None:
        """A FetchContent source: its GIT_REPOSITORY/GIT_TAG/URL/SOURCE_DIR values and where
        each is written (a ``${X}`` value: where X was set)."""
        toks = cmd.args
        if not toks:
            return
        values: dict[str, str] = {}
        where: dict[str, str] = {}
        for i, t in enumerate(toks[:-1]):
            if t.quoted or t.text not in _FETCH_KEYS or t.text in values:
                continue
            raw = toks[i + 1].text
            refs = _ONE_REF.findall(raw)
            # a variable no set() reached stays as written: the reader cannot resolve it
            values[t.text] = raw if any(self.get(r) is None for r in refs) else self.expand(raw)
            where[t.text] = self.origin(toks[i + 1], cmd.where)
        self.fetches.append(
            Fetch(self.expand(toks[0].text), values, where, cmd.where.rsplit(":", 1)[0])
        )

    def _populated(self, name: str) -> None:
        d = self.fetch_dirs.get(name.lower())
        if d is None:
            return
        self.set(f"{name.lower()}_SOURCE_DIR", str(d))
        self.set(f"{name.lower()}_POPULATED", "TRUE")
        for var, sub in self.external_vars.get(name.lower(), {}).items():
            self.cache[var] = str(d / sub) if sub else str(d)

    def c_find_program(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if a and a[0] == "NVCC_EXECUTABLE":
            self.cache.setdefault(a[0], self.get("CMAKE_CUDA_COMPILER") or "nvcc")

    def c_execute_process(self, cmd: Cmd) -> None:
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

    def c_run_python(self, cmd: Cmd) -> None:
        a = self.args(cmd.args)
        if len(a) >= 2:
            self.set(a[0], self.run_python_hook(a[1]), parent=False)
