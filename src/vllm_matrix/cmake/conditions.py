"""CMake's if(): the condition grammar, evaluated against an interpreter's variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Protocol

from vllm_matrix.cmake.values import is_false, number, py_regex, split_list, version_cmp

_TRUE = {"1", "ON", "YES", "TRUE", "Y"}
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


class Scope(Protocol):
    """What a condition reads (and, for MATCHES, writes) of the interpreter."""

    @property
    def env(self) -> Mapping[str, str]: ...

    @property
    def cache(self) -> Mapping[str, str]: ...

    @property
    def defs(self) -> Mapping[str, object]: ...

    @property
    def targets(self) -> Mapping[str, object]: ...

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str | None, parent: bool = False) -> None: ...


class Cond:
    """CMake if(): parentheses, unary tests, binary tests, NOT, AND, OR (that precedence)."""

    def __init__(self, items: list[tuple[str, bool]], cm: Scope) -> None:
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
        num = number(text)
        if up in _TRUE or (num is not None and num != 0):
            return True
        if is_false(text) or num == 0:
            return False
        if quoted:
            return False
        v = self.cm.get(text)
        return v is not None and not is_false(v)

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
            m = re.search(py_regex(right[0]), a)
            if m:
                for g in range(min(10, (m.re.groups or 0) + 1)):
                    self.cm.set(f"CMAKE_MATCH_{g}", m.group(g) or "")
            return m is not None
        if op == "IN_LIST":
            return a in split_list(self.cm.get(right[0]) or "")
        if op.startswith("VERSION_"):
            c = version_cmp(a, b)
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
        na, nb = number(a), number(b)
        if na is None or nb is None:
            return False
        return {
            "EQUAL": na == nb,
            "LESS": na < nb,
            "LESS_EQUAL": na <= nb,
            "GREATER": na > nb,
            "GREATER_EQUAL": na >= nb,
        }[op]
