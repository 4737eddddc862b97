"""Strict TOML reading shared by every data-file loader.

Errors name the file, the key, the line where it can be found, and the closest
allowed key ("did you mean"), so a typo never becomes a traceback.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix.infra.errors import ConfigError


@dataclass(frozen=True)
class TomlDoc:
    path: Path
    text: str
    data: dict[str, Any]

    def line_of(self, key: str, after: int = 0) -> int | None:
        """First line (1-based) at or after ``after`` that assigns or opens ``key``."""
        pat = re.compile(rf"^\s*(\[+\s*)?([\w.\"-]*\.)?\"?{re.escape(key)}\"?\s*(=|\])")
        for no, line in enumerate(self.text.splitlines(), 1):
            if no >= after and pat.match(line):
                return no
        return None

    def where(self, key: str, after: int = 0) -> str:
        line = self.line_of(key, after)
        return f"{self.path}:{line}" if line else str(self.path)


def load(path: Path) -> TomlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found", fix="check the path") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}", fix="fix the syntax at that line"
        ) from exc
    return TomlDoc(path, text, data)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(sorted(choices))}"


def check_keys(
    doc: TomlDoc,
    table: Mapping[str, Any],
    allowed: Iterable[str],
    context: str,
    after: int = 0,
) -> None:
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{doc.where(key, after)}: unknown key '{key}' in {context}",
                fix=did_you_mean(key, allowed),
            )


def require(
    doc: TomlDoc, table: Mapping[str, Any], key: str, kind: type, context: str, after: int = 0
) -> Any:
    if key not in table:
        raise ConfigError(
            f"{doc.path}{f':{after}' if after else ''}: {context} is missing '{key}'",
            fix=f"add {key} = ... to {context}",
        )
    return expect(doc, table[key], key, kind, context, after)


def expect(doc: TomlDoc, value: Any, key: str, kind: type, context: str, after: int = 0) -> Any:
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(
            f"{doc.where(key, after)}: '{key}' in {context} must be a {kind.__name__}, "
            f"not {type(value).__name__} ({value!r})",
            fix=f"write {key} as a {kind.__name__}"
            + (' (quote versions: "12.4")' if kind is str else ""),
        )
    return value


def str_list(doc: TomlDoc, value: Any, key: str, context: str, after: int = 0) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{doc.where(key, after)}: '{key}' in {context} must be a list of strings",
            fix=f'write {key} = ["..."]',
        )
    return tuple(value)
