"""CMake values: lists, truth, numbers, versions, regexes, arguments, generator expressions."""

from __future__ import annotations

import re
from collections.abc import Sequence

_FALSE = {"0", "OFF", "NO", "FALSE", "N", "IGNORE", "NOTFOUND", ""}


def split_list(value: str) -> list[str]:
    return value.split(";") if value != "" else []


def is_false(value: str) -> bool:
    up = value.upper()
    return up in _FALSE or up.endswith("-NOTFOUND")


def number(text: str) -> float | None:
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


def version_cmp(a: str, b: str) -> int:
    va, vb = _cmake_version(a), _cmake_version(b)
    n = max(len(va), len(vb))
    va, vb = va + (0,) * (n - len(va)), vb + (0,) * (n - len(vb))
    return (va > vb) - (va < vb)


def natural_key(s: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", s) if p]


def py_regex(cmake_re: str) -> str:
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


def regex_replace(pattern: str, repl: str, text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return re.sub(r"\\(\d)", lambda g: m.group(int(g.group(1))) or "", repl)

    return re.sub(py_regex(pattern), sub, text)


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
        v = not is_false(rest)
        return "1" if (v if head == "BOOL" else not v) else "0"
    return ""  # INSTALL_INTERFACE, TARGET_PROPERTY, ...: nothing a compile line needs


# ==================================================================== CMake: the model


def parse_args(
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
