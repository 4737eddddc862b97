"""CMake lexer: arguments as written (scan, for facts) and unescaped (lex, for the interpreter)."""

from __future__ import annotations

from vllm_matrix.cmake.lexer import RawArg, Tok, lex, scan

TEXT = """\
# a comment
set(A "x\\;y\\n" [=[
bracket]=] b\\$c)  #[[ a bracket
comment ]]
if((A) AND B)
set_property(SOURCE s APPEND PROPERTY COMPILE_OPTIONS $<$<COMPILE_LANGUAGE:CUDA>:-a -b>)
"""


def test_scan_keeps_arguments_as_written_with_their_lines() -> None:
    cmds = scan(TEXT)
    assert [(c.name, c.line) for c in cmds] == [("set", 2), ("if", 5), ("set_property", 6)]
    assert cmds[0].args == (
        RawArg("A", "unquoted", 2),
        RawArg("x\\;y\\n", "quoted", 2),
        RawArg("\nbracket", "bracket", 2),
        RawArg("b\\$c", "unquoted", 3),
    )
    assert [a.raw for a in cmds[1].args] == ["(", "A", ")", "AND", "B"]
    # a generator expression is one bare word, spaces and all
    assert cmds[2].args[-1].raw == "$<$<COMPILE_LANGUAGE:CUDA>:-a -b>"


def test_lex_unescapes_for_the_interpreter() -> None:
    (cmd, _, _) = lex(TEXT, "CMakeLists.txt")
    assert cmd.where == "CMakeLists.txt:2"
    assert cmd.args == (
        Tok("A", False),
        Tok("x;y\n", True),
        Tok("bracket", True),
        Tok("b$c", False),
    )
