"""Classify a failed log: the known signature that explains it, or its first real error.

Signatures are data (knowledge/data/signatures.toml). The rule that picks the root cause rather
than a consequence:

1. "cause" signatures, in file order (= priority, most specific first): the first one
   that matches any line wins, and its FIRST matching line (by line order) is quoted.
   Priority beats position on purpose: a torch-pin warning or a generic arch error printed
   before the decisive line must not hide it.
2. Otherwise the first real error line, unrecognized: a diagnostic (``error:``,
   ``fatal :``, ``CMake Error``, a Python exception line, ``undefined reference``) or,
   when there is none, the first ninja ``FAILED:`` line. Command lines (``-Werror``
   flags), warnings and lines of weak signatures are never taken for errors.
3. Otherwise the weak signatures ("hint", "consequence"), in file order: they only say
   that something above failed ("ninja: build stopped", "Configuring incomplete") or
   point at a likely culprit (the torch-pin warning), so they never beat a real error.
4. Otherwise unknown, quoting the last non-empty line (where a log that just stops
   usually says why).

The unit is the translation unit the quoted line belongs to, when the log shows it
(see ``unit_of``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from pathlib import Path
from typing import Any

from vllm_matrix.infra import datafiles, tomlfile
from vllm_matrix.infra.errors import ConfigError, MatrixError
from vllm_matrix.infra.results import STAGE_ORDER, Finding

ROLES = ("cause", "hint", "consequence")
SIDES = ("combination", "toolkit", "machine")
_KEYS = ("id", "pattern", "flags", "cause", "fix", "source", "background", "stage", "role", "side")
BACKGROUND = "background: on topic, not a report of this error"
_FLAGS = {"i": re.IGNORECASE}
# Ids name the test excerpts (tests/unit/logs/<id>.log) and the finding rule.
_ID = re.compile(r"^[a-z0-9_]+$")
_HEADER = re.compile(r"^\s*\[\[\s*signature\s*\]\]")

QUOTE_MAX = 300

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DIAG = re.compile(
    # gcc/nvcc/ptxas/ld: "x.cu(911): error: ...", "x.cpp:3:5: fatal error: ...",
    # "ptxas ... error   : ..."; the look-behind keeps "-Werror" / "-Wno-error=" out.
    r"(?<![-\w/.=])(?:fatal\s+)?error\s*:"
    r"|(?<![-\w])fatal\s*:"  # "nvcc fatal   : ...", "ptxas fatal   : ..."
    r"|\bCMake Error\b"
    r"|^\s*(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::|$)"  # Python exception line
    r"|\bundefined reference to\b"
    r"|\bSegmentation fault\b"
    r"|^\s*ERROR:"
)
# Every _DIAG match contains one of these: a cheap filter before the regex.
_DIAG_WORDS = ("error", "Error", "ERROR", "fatal", "Exception", "undefined reference", "fault")
_FAILED = re.compile(r"\bFAILED:\s")
_WARNING = re.compile(r"warning\b", re.IGNORECASE)
# A compiler/linker command line: many option tokens. Error messages quote one at most.
_OPTION = re.compile(r"(?:^|\s)--?[A-Za-z]")
_COMMAND_OPTIONS = 4

_FAILED_OBJ = re.compile(r"\bFAILED:\s+(\S+?\.(?:o|obj))(?=\s|$)")
_CMAKE_OBJ = re.compile(r"(?:^|/)CMakeFiles/[^/\s]+\.dir/(.+)\.(?:o|obj)$")
_NINJA_STEP = re.compile(r"^\s*\[\d+/\d+\]\s")
_SOURCE_EXT = (".cu", ".cpp", ".cc", ".cxx", ".c")
_LOCATION = re.compile(r"(?P<path>[^\s:()\"'<>]+\.(?:cu|cpp|cc|cxx|c))(?:\(\d+\)|:\d+)")
_INCLUDED = re.compile(r"^\s*(?:In file included from|from)\s+(\S+?):\d+[,:]\s*$")
_DETECTED = re.compile(r'errors? detected in the compilation of "([^"]+)"')
_UNIT_LOOKBACK = 400
_UNIT_LOOKAHEAD = 60


@dataclass(frozen=True)
class Signature:
    id: str
    pattern: re.Pattern[str]
    cause: str
    fix: str
    source: str
    stages: tuple[str, ...] = ()
    role: str = "cause"
    side: str = "combination"
    # The source is on topic (the change, the option, the file) but shows no one hitting
    # this error: cited as background wherever the citation is shown.
    background: bool = False

    @property
    def weak(self) -> bool:
        return self.role != "cause"

    @property
    def citation(self) -> str:
        return f"{self.source} ({BACKGROUND})" if self.background else self.source


@dataclass(frozen=True)
class Classification:
    signature: Signature | None  # None = unknown
    line: str  # the quoted log line (unknown: the first real error line)
    line_no: int  # 1-based; 0 for an empty log
    unit: str | None  # translation unit of the quoted line, when the log shows it

    @property
    def rule(self) -> str:
        return f"signature:{self.signature.id}" if self.signature else "unknown"

    def to_finding(self, log_path: str | Path | None) -> Finding:
        quote = _quote(self.line)
        if self.signature is not None:
            message = f'{self.signature.cause} (line {self.line_no}: "{quote}")'
            fix, source = self.signature.fix, self.signature.citation
        elif self.line_no:
            message = f'unrecognized failure (line {self.line_no}: "{quote}")'
            fix = (
                "read the log around the quoted line; once the cause is understood, add a "
                "[[signature]] to vllm_matrix/knowledge/data/signatures.toml with a test excerpt"
            )
            source = ""
        else:
            message, fix, source = "unrecognized failure: the log is empty", "", ""
        evidence: list[str] = []
        if self.line_no:
            evidence.append(f"{log_path}:{self.line_no}" if log_path else f"line {self.line_no}")
        if self.unit:
            evidence.append(self.unit)
        return Finding(self.rule, "fail", message, fix, tuple(evidence), source)


def _quote(line: str) -> str:
    text = line.strip()
    return text if len(text) <= QUOTE_MAX else text[: QUOTE_MAX - 4] + " ..."


# ---- loading ---------------------------------------------------------------------------


def _default_path() -> Path:
    return datafiles.data_path("signatures.toml")


def load_signatures(path: Path | None = None) -> tuple[Signature, ...]:
    """Read and check a signatures file (default: the shipped knowledge/data/signatures.toml)."""
    doc = tomlfile.load(path or _default_path())
    tomlfile.check_keys(doc, doc.data, ("signature",), "the top level")
    tables = tomlfile.expect(doc, doc.data.get("signature", []), "signature", list, "the top level")
    starts = [n for n, line in enumerate(doc.text.splitlines(), 1) if _HEADER.match(line)]
    out: list[Signature] = []
    first_line: dict[str, int] = {}
    for n, table in enumerate(tables):
        after = starts[n] if n < len(starts) else 0
        raw_id = table.get("id") if isinstance(table, dict) else None
        ctx = f"[[signature]] {raw_id!r}" if isinstance(raw_id, str) else f"[[signature]] #{n + 1}"
        sig = _signature(doc, table, ctx, after)
        if sig.id in first_line:
            raise ConfigError(
                f"{doc.where('id', after)}: duplicate signature id {sig.id!r} "
                f"(first defined at line {first_line[sig.id]})",
                fix="give each signature its own id",
            )
        first_line[sig.id] = after
        out.append(sig)
    return tuple(out)


def _signature(doc: tomlfile.TomlDoc, table: Any, ctx: str, after: int) -> Signature:
    table = tomlfile.expect(doc, table, "signature", dict, "the top level", after)
    tomlfile.check_keys(doc, table, _KEYS, ctx, after)
    sid = tomlfile.require(doc, table, "id", str, ctx, after)
    if not _ID.match(sid):
        raise ConfigError(
            f"{doc.where('id', after)}: id {sid!r} in {ctx} must be lowercase letters, "
            "digits and _",
            fix="it names the test excerpt tests/unit/logs/<id>.log",
        )
    tomlfile.require(doc, table, "pattern", object, ctx, after)
    patterns = tomlfile.str_list(doc, table["pattern"], "pattern", ctx, after)
    flags = tomlfile.expect(doc, table.get("flags", ""), "flags", str, ctx, after)
    role = tomlfile.expect(doc, table.get("role", "cause"), "role", str, ctx, after)
    if role not in ROLES:
        raise ConfigError(
            f"{doc.where('role', after)}: role {role!r} in {ctx} is not one of {ROLES}",
            fix=tomlfile.did_you_mean(role, ROLES),
        )
    side = tomlfile.expect(doc, table.get("side", "combination"), "side", str, ctx, after)
    if side not in SIDES:
        raise ConfigError(
            f"{doc.where('side', after)}: side {side!r} in {ctx} is not one of {SIDES}",
            fix=tomlfile.did_you_mean(side, SIDES),
        )
    stages = tomlfile.str_list(doc, table.get("stage", []), "stage", ctx, after)
    for stage in stages:
        if stage not in STAGE_ORDER:
            raise ConfigError(
                f"{doc.where('stage', after)}: unknown stage {stage!r} in {ctx}",
                fix=tomlfile.did_you_mean(stage, STAGE_ORDER),
            )
    source = tomlfile.require(doc, table, "source", str, ctx, after)
    if not source.startswith("https://"):
        raise ConfigError(
            f"{doc.where('source', after)}: source of {ctx} must be an https:// URL, "
            f"not {source!r}",
            fix="link the upstream issue, PR or doc that describes this failure",
        )
    background = table.get("background", False)
    if not isinstance(background, bool):
        raise ConfigError(
            f"{doc.where('background', after)}: background in {ctx} must be true or false",
            fix="background = true when the source is on topic but shows no one hitting it",
        )
    cause = tomlfile.require(doc, table, "cause", str, ctx, after)
    fix = tomlfile.require(doc, table, "fix", str, ctx, after)
    for key, value in (("cause", cause), ("fix", fix)):
        if not value.strip():
            raise ConfigError(f"{doc.where(key, after)}: empty {key} in {ctx}", fix=f"write {key}")
    return Signature(
        sid,
        _compile(doc, patterns, flags, ctx, after),
        cause,
        fix,
        source,
        stages,
        role,
        side,
        background,
    )


def _compile(
    doc: tomlfile.TomlDoc, patterns: Sequence[str], flags: str, ctx: str, after: int
) -> re.Pattern[str]:
    bits = 0
    for letter in flags:
        if letter not in _FLAGS:
            raise ConfigError(
                f"{doc.where('flags', after)}: unknown flag {letter!r} in {ctx}",
                fix=f"allowed flags: {', '.join(_FLAGS)}",
            )
        bits |= _FLAGS[letter]
    if not patterns:
        raise ConfigError(f"{doc.where('pattern', after)}: empty pattern list in {ctx}")
    for pattern in patterns:
        try:
            compiled = re.compile(pattern, bits)
        except re.error as exc:
            raise ConfigError(
                f"{doc.where('pattern', after)}: bad regex in {ctx}: {pattern!r}: {exc}",
                fix="fix the Python regex; '...' TOML strings need no backslash escaping",
            ) from None
        # A pattern that matches an empty line would match every log.
        if compiled.search(""):
            raise ConfigError(
                f"{doc.where('pattern', after)}: regex {pattern!r} in {ctx} matches an empty line",
                fix="make the pattern require some text",
            )
    if len(patterns) == 1:
        return re.compile(patterns[0], bits)
    return re.compile("|".join(f"(?:{p})" for p in patterns), bits)


@cache
def default_signatures() -> tuple[Signature, ...]:
    return load_signatures()


# ---- classifying -----------------------------------------------------------------------


def side_of(rule: str) -> str:
    """The side of a finding's rule ("signature:<id>"): combination, toolkit or machine."""
    sid = rule.removeprefix("signature:")
    return next((s.side for s in default_signatures() if s.id == sid), "combination")


def log_lines(text: str) -> list[str]:
    """Lines as an editor numbers them (split on \\n only), without colour codes."""
    return [_ANSI.sub("", line.rstrip("\r")).replace("\r", " ") for line in text.split("\n")]


def classify(text: str, signatures: tuple[Signature, ...] | None = None) -> Classification:
    sigs = default_signatures() if signatures is None else signatures
    log = _Log(log_lines(text))
    lines = log.lines
    for sig in sigs:
        if not sig.weak and (hit := log.first(sig.pattern)) is not None:
            return Classification(sig, lines[hit], hit + 1, unit_of(lines, hit))
    weak = [sig for sig in sigs if sig.weak]
    hit = _first_error(log, [sig.pattern for sig in weak])
    if hit is not None:
        return Classification(None, lines[hit], hit + 1, unit_of(lines, hit))
    for sig in weak:
        if (hit := log.first(sig.pattern)) is not None:
            return Classification(sig, lines[hit], hit + 1, unit_of(lines, hit))
    for n in range(len(lines) - 1, -1, -1):
        if lines[n].strip():
            return Classification(None, lines[n], n + 1, None)
    return Classification(None, "", 0, None)


def classify_file(path: Path) -> Classification:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise MatrixError(f"{path}: log not found", fix="check the log path") from None
    return classify(text)


class _Log:
    """The cleaned lines, and the same lines joined for whole-text scans.

    A build log can have hundreds of thousands of lines: one regex scan of the joined
    text (in C) per pattern, instead of one Python-level call per line, keeps a log
    without any match at about a second.
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.text = "\n".join(lines)
        self.starts = list(accumulate((len(line) + 1 for line in lines[:-1]), initial=0))

    def first(
        self, pattern: re.Pattern[str], accept: Callable[[str], bool] | None = None
    ) -> int | None:
        """Index of the first line that ``pattern`` matches (and ``accept`` takes)."""
        finder = _multiline(pattern)
        pos = 0
        while (m := finder.search(self.text, pos)) is not None:
            n = bisect_right(self.starts, m.start()) - 1
            # Confirm on the line alone: \s* and [^)]* can reach across a newline here.
            line = self.lines[n]
            if pattern.search(line) and (accept is None or accept(line)):
                return n
            if n + 1 >= len(self.lines):
                return None
            pos = self.starts[n + 1]
        return None

    def containing(self, words: Sequence[str]) -> list[int]:
        """Indexes of the lines that contain any of ``words`` (plain str.find: fast)."""
        found: set[int] = set()
        for word in words:
            pos = self.text.find(word)
            while pos != -1:
                n = bisect_right(self.starts, pos) - 1
                found.add(n)
                if n + 1 >= len(self.lines):
                    break
                pos = self.text.find(word, self.starts[n + 1])
        return sorted(found)


@cache
def _multiline(pattern: re.Pattern[str]) -> re.Pattern[str]:
    return re.compile(pattern.pattern, pattern.flags | re.MULTILINE)


def is_noise(line: str) -> bool:
    """A line that mentions errors without being one: a command line or a warning."""
    if len(_OPTION.findall(line)) >= _COMMAND_OPTIONS:
        return True
    warning = _WARNING.search(line)
    if warning is None:
        return False
    diag = _DIAG.search(line)
    return diag is None or warning.start() < diag.start()


def first_error_line(lines: Sequence[str], skip: Sequence[re.Pattern[str]] = ()) -> int | None:
    """Index of the first real error line: a diagnostic, else the first ninja FAILED:."""
    return _first_error(_Log(list(lines)), skip)


def _first_error(log: _Log, skip: Sequence[re.Pattern[str]]) -> int | None:
    def real(line: str) -> bool:
        return not is_noise(line) and not any(p.search(line) for p in skip)

    for words, pattern in ((_DIAG_WORDS, _DIAG), (("FAILED:",), _FAILED)):
        for n in log.containing(words):
            if pattern.search(log.lines[n]) and real(log.lines[n]):
                return n
    return None


def unit_of(lines: Sequence[str], index: int) -> str | None:
    """The translation unit that line ``index`` belongs to, if the log shows it.

    In order: the object of the ninja ``FAILED:`` block the line sits in (a CMake object
    path gives the source path relative to its project, the most stable name); a source
    location on the line itself (``x.cu(911):``, ``x.cpp:12:10:``); the unit that starts
    a gcc include chain just above it; nvcc's ``errors detected in the compilation of
    "x.cu"`` just below it; the raw object of the FAILED block.
    """
    obj = _failed_object(lines, index)
    if obj is not None and (m := _CMAKE_OBJ.search(obj)):
        return m.group(1)
    line = lines[index]
    if m := _LOCATION.search(line):
        return m.group("path")
    if index > 0 and (m := _INCLUDED.match(lines[index - 1])) and m.group(1).endswith(_SOURCE_EXT):
        return m.group(1)
    for later in lines[index : index + _UNIT_LOOKAHEAD]:
        if m := _DETECTED.search(later):
            return m.group(1)
    if obj is not None:
        return obj.removesuffix(".o") if obj.endswith(tuple(e + ".o" for e in _SOURCE_EXT)) else obj
    return None


def _failed_object(lines: Sequence[str], index: int) -> str | None:
    # Ninja prints a failed edge as "FAILED: <outputs>", its command, then its whole
    # output; a "[n/m]" status line in between means the line is outside that block.
    # A FAILED edge that is not an object (a FetchContent download step) has no unit.
    for n in range(index, max(-1, index - _UNIT_LOOKBACK), -1):
        line = lines[n]
        if _FAILED.search(line):
            m = _FAILED_OBJ.search(line)
            return m.group(1) if m else None
        if n != index and _NINJA_STEP.match(line):
            return None
    return None
