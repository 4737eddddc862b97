"""CMake's language: commands (the lexer) and their blocks (if, loops, function, macro)."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tok:
    text: str
    quoted: bool
    line: int = field(default=0, compare=False)  # where it is written: evidence, not value


@dataclass(frozen=True)
class Cmd:
    name: str  # lower-cased
    args: tuple[Tok, ...]
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


@dataclass(frozen=True)
class RawArg:
    """An argument as written: a quoted argument's body (between the quotes, escapes
    untouched), a bracket argument's body, a bare word, or a parenthesis."""

    raw: str
    kind: str  # "quoted" | "bracket" | "unquoted" | "paren"
    line: int


@dataclass(frozen=True)
class RawCommand:
    name: str  # lower-cased: CMake command names are case-insensitive
    args: tuple[RawArg, ...]
    line: int


def scan(text: str) -> list[RawCommand]:
    """Commands of a CMake file, arguments as written; parentheses inside arguments
    become their own arguments."""
    cmds: list[RawCommand] = []
    i, n = 0, len(text)
    newlines = [k for k, ch in enumerate(text) if ch == "\n"]

    def line_at(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

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
        args: list[RawArg] = []
        depth = 0
        while i < n:
            c = text[i]
            if c.isspace():
                i += 1
            elif c == "#":
                i = skip_comment(i)
            elif c == "(":
                depth += 1
                args.append(RawArg("(", "paren", line_at(i)))
                i += 1
            elif c == ")":
                i += 1
                if depth == 0:
                    break
                depth -= 1
                args.append(RawArg(")", "paren", line_at(i - 1)))
            elif c == '"':
                k = i + 1
                while k < n and text[k] != '"':
                    k += 2 if text[k] == "\\" else 1
                args.append(RawArg(text[i + 1 : k], "quoted", line_at(i)))
                i = k + 1
            elif c == "[" and (mb := _BRACKET.match(text, i)):
                close = "]" + mb.group(1) + "]"
                end = text.find(close, mb.end())
                end = n if end < 0 else end
                args.append(RawArg(text[mb.end() : end], "bracket", line_at(i)))
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
                args.append(RawArg(text[i:k], "unquoted", line_at(i)))
                i = k
        cmds.append(RawCommand(m.group(0).lower(), tuple(args), line_at(start)))
    return cmds


def _tok(a: RawArg) -> Tok:
    if a.kind == "paren":
        return Tok(a.raw, False, a.line)
    if a.kind == "bracket":
        return Tok(a.raw[1:] if a.raw.startswith("\n") else a.raw, True, a.line)
    return Tok(_unescape(a.raw), a.kind == "quoted", a.line)


def lex(text: str, file: str) -> list[Cmd]:
    """Commands of a CMake file, arguments unescaped, for the interpreter."""
    return [Cmd(c.name, tuple(_tok(a) for a in c.args), f"{file}:{c.line}") for c in scan(text)]


# ==================================================================== blocks


@dataclass
class If:
    arms: list[tuple[tuple[Tok, ...] | None, list[Node]]]


@dataclass
class Loop:
    kind: str  # "foreach" | "while"
    args: tuple[Tok, ...]
    body: list[Node]


@dataclass
class Def:
    kind: str  # "function" | "macro"
    name: str
    params: tuple[str, ...]
    body: list[Node]


Node = Cmd | If | Loop | Def


def blocks(cmds: Sequence[Cmd]) -> list[Node]:
    top: list[Node] = []
    stack: list[tuple[If | Loop | Def, list[Node]]] = []

    def body() -> list[Node]:
        return stack[-1][1] if stack else top

    for c in cmds:
        if c.name == "if":
            node_if = If([(c.args, [])])
            body().append(node_if)
            stack.append((node_if, node_if.arms[0][1]))
        elif c.name in ("elseif", "else") and stack and isinstance(stack[-1][0], If):
            node = stack[-1][0]
            assert isinstance(node, If)
            arm: tuple[tuple[Tok, ...] | None, list[Node]] = (
                c.args if c.name == "elseif" else None,
                [],
            )
            node.arms.append(arm)
            stack[-1] = (node, arm[1])
        elif c.name in ("foreach", "while"):
            loop = Loop(c.name, c.args, [])
            body().append(loop)
            stack.append((loop, loop.body))
        elif c.name in ("function", "macro") and c.args:
            d = Def(c.name, c.args[0].text.lower(), tuple(a.text for a in c.args[1:]), [])
            body().append(d)
            stack.append((d, d.body))
        elif c.name in ("endif", "endforeach", "endwhile", "endfunction", "endmacro"):
            if stack:
                stack.pop()
        else:
            body().append(c)
    return top


def subst_macro(nodes: list[Node], mapping: dict[str, str]) -> list[Node]:
    """A macro's body with ${param} replaced textually, as CMake does."""
    pat = re.compile(r"\$\{(" + "|".join(re.escape(k) for k in mapping) + r")\}")

    def tok(t: Tok) -> Tok:
        return Tok(pat.sub(lambda m: mapping[m.group(1)], t.text), t.quoted, t.line)

    def toks(ts: tuple[Tok, ...]) -> tuple[Tok, ...]:
        return tuple(tok(t) for t in ts)

    out: list[Node] = []
    for n in nodes:
        if isinstance(n, Cmd):
            out.append(Cmd(n.name, toks(n.args), n.where))
        elif isinstance(n, If):
            out.append(
                If([(None if c is None else toks(c), subst_macro(b, mapping)) for c, b in n.arms])
            )
        elif isinstance(n, Loop):
            out.append(Loop(n.kind, toks(n.args), subst_macro(n.body, mapping)))
        else:
            out.append(n)
    return out
