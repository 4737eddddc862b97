"""The matrix table's cause and notes cells, from a report row.

A failure's cell leads with the compiler's own words, ``file:line: message``
(``gptq_marlin.cu:911: namespace "at" has no member "Float8_e8m0fnu"``), then the known
cause, shortened to the column's width at a word: the location and the message are never
cut inside a path. Warnings of a cell that passed are notes, never its cause.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from vllm_matrix.infra.results import Verdict

WIDTH = 160

# classify's findings quote their line: '<cause> (line 90: "<the log line>")'.
_QUOTED = re.compile(r'\s*\(line \d+: "(?P<line>.*)"\)\s*$')
# nvcc/EDG: "path(938): error: msg"; gcc/clang: "path:12:5: fatal error: msg".
_DIAG = re.compile(
    r"(?P<path>[^\s:()\"']+?)(?:\((?P<l1>\d+)\)|:(?P<l2>\d+)(?::\d+)?)\s*:\s*"
    r"(?:fatal error|catastrophic error|error)\s*:\s*(?P<msg>.+)$"
)
_REUSED = re.compile(r" \(reused: [^()]*\)")
PASSING = (Verdict.PASS, Verdict.PREFLIGHT_OK)


def compiler_error(line: str) -> str | None:
    """``file:line: message`` of a compiler diagnostic line (the file without its
    directories), or None when the line is not one."""
    m = _DIAG.search(line.strip())
    if m is None:
        return None
    name = m.group("path").rsplit("/", 1)[-1]
    return f"{name}:{m.group('l1') or m.group('l2')}: {m.group('msg').strip()}"


def split_quote(message: str) -> tuple[str, str | None]:
    """A classified finding's message as (the cause, the quoted log line or None)."""
    m = _QUOTED.search(message)
    if m is None:
        return message, None
    return message[: m.start()], m.group("line").replace('\\"', '"')


def shorten(text: str, width: int = WIDTH) -> str:
    """One line of at most ``width`` characters, cut at a word (never inside one)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    if text[width - 1] != " " and space > width // 2:  # the cut falls inside a word
        cut = cut[:space]
    return cut.rstrip(" ,;:—-") + "…"


def _join_errors(errors: Sequence[str]) -> str:
    """Errors with the same message share it: ``a.cu:1, b.cu:2: msg``."""
    by_msg: dict[str, list[str]] = {}
    for e in errors:
        where, msg = e.split(": ", 1)
        by_msg.setdefault(msg, [])
        if where not in by_msg[msg]:
            by_msg[msg].append(where)
    return "; ".join(f"{', '.join(w)}: {m}" for m, w in by_msg.items())


def fail_cell(messages: Sequence[str], width: int = WIDTH) -> str:
    """The cause cell of a failure from its deciding findings' messages."""
    errors: list[str] = []
    causes: list[str] = []
    for msg in messages:
        cause, quote = split_quote(msg)
        err = compiler_error(quote) if quote else None
        if err is not None:
            errors.append(err)
            if cause not in causes:
                causes.append(cause)
        elif msg not in causes:
            causes.append(msg)
    if not errors:
        return shorten("; ".join(causes), width)
    head = _join_errors(errors)
    if len(head) > width:  # many distinct errors: the first one, and how many more
        first = _join_errors(errors[:1])
        head = shorten(first, width - 12) + f" (+{len(errors) - 1} more)"
    if not causes or len(head) + 8 > width:
        return head
    return shorten(f"{head} — {'; '.join(causes)}", width)


def cells(row: dict[str, Any], width: int = WIDTH) -> tuple[str, str]:
    """(cause, notes) for a report row: a passing cell's warnings go to notes."""
    if row["verdict"] in PASSING:
        return "", shorten(str(row.get("cause") or ""), width)
    stage = row.get("depth")
    decisive = [
        f["message"]
        for f in row.get("findings", ())
        if f.get("level") in ("fail", "skip") and f.get("stage") == stage
    ]
    if row["verdict"] == Verdict.FAIL and decisive:
        return fail_cell(decisive, width), ""
    return shorten(str(row.get("cause") or ""), width), ""


def once(summary: str) -> str:
    """A summary that says "(reused: …)" once, however often it was carried over."""
    found: list[str] = _REUSED.findall(summary)
    if len(found) < 2:
        return summary
    return _REUSED.sub("", summary) + found[0]


__all__ = ["WIDTH", "cells", "compiler_error", "fail_cell", "once", "shorten", "split_quote"]
