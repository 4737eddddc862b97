"""classify: real log excerpts (tests/unit/logs) map to their signatures; the priority rule,
unknown failures, unit extraction, findings, and a strict signatures file.

Each excerpt starts with "# key: value" lines: `source` (the upstream URL, or "produced
here: <command>"), optional `expect-line` (text the quoted line must contain) and
`expect-unit`. tests/unit/logs/<id>[.<variant>].log belongs to signature <id>.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.infra.errors import ConfigError, MatrixError
from vllm_matrix.knowledge import classify
from vllm_matrix.knowledge.classify import Classification, Signature

LOGS = Path(__file__).parent / "logs"
SIGNATURE_LOGS = sorted(LOGS.glob("*.log"))
UNKNOWN_LOGS = sorted((LOGS / "unknown").glob("*.log"))


def excerpt(path: Path) -> tuple[dict[str, str], str]:
    """The provenance header and the log text below it."""
    lines = path.read_text(encoding="utf-8").split("\n")
    header: dict[str, str] = {}
    while lines and lines[0].startswith("# "):
        key, _, value = lines.pop(0)[2:].partition(":")
        header[key.strip()] = value.strip()
    return header, "\n".join(lines)


def sig_id(path: Path) -> str:
    return path.name.split(".")[0]


def check_expectations(header: dict[str, str], text: str, c: Classification) -> None:
    assert c.line_no >= 1
    assert classify.log_lines(text)[c.line_no - 1] == c.line
    if "expect-line" in header:
        assert header["expect-line"] in c.line
    if "expect-unit" in header:
        assert c.unit == header["expect-unit"]


# ---- the shipped data and its excerpts ------------------------------------------------


@pytest.mark.parametrize("path", SIGNATURE_LOGS, ids=lambda p: p.name)
def test_excerpt_classifies_to_its_signature(path: Path) -> None:
    header, text = excerpt(path)
    c = classify.classify(text)
    assert c.signature is not None, f"unknown: line {c.line_no}: {c.line!r}"
    assert c.signature.id == sig_id(path), f"line {c.line_no}: {c.line!r}"
    check_expectations(header, text, c)


def test_every_signature_has_an_excerpt_and_every_excerpt_a_signature() -> None:
    ids = {s.id for s in classify.default_signatures()}
    logged = {sig_id(p) for p in SIGNATURE_LOGS}
    assert ids - logged == set(), "signatures without tests/unit/logs/<id>.log"
    assert logged - ids == set(), "excerpts for signatures that do not exist"


@pytest.mark.parametrize("path", SIGNATURE_LOGS + UNKNOWN_LOGS, ids=lambda p: p.name)
def test_every_excerpt_says_where_it_came_from(path: Path) -> None:
    header, text = excerpt(path)
    source = header.get("source", "")
    assert source.startswith(("https://", "produced here: ")), path.name
    assert 1 <= len(text.strip().split("\n")) <= 40


def test_shipped_signatures() -> None:
    sigs = classify.default_signatures()
    assert len(sigs) >= 14
    assert all(s.source.startswith("https://github.com/") for s in sigs)
    assert all(s.cause and s.fix for s in sigs)
    roles = [s.weak for s in sigs]
    # The file reads in priority order: every weak signature after every cause.
    assert roles == sorted(roles)
    assert classify.load_signatures() == sigs


# ---- priority: root cause over consequence --------------------------------------------


def log(name: str) -> str:
    return excerpt(LOGS / name)[1]


def test_cause_beats_a_hint_printed_before_it() -> None:
    text = log("torch_pin_mismatch.log") + "\n" + log("torch_lacks_float8_e8m0fnu.log")
    c = classify.classify(text)
    assert c.signature is not None and c.signature.id == "torch_lacks_float8_e8m0fnu"
    assert c.line_no > len(log("torch_pin_mismatch.log").split("\n"))


def test_specific_signature_beats_general_one_printed_first() -> None:
    text = log("nvcc_arch_unsupported.log") + "\n" + log("nvcc_too_old_for_blackwell.log")
    c = classify.classify(text)
    assert c.signature is not None and c.signature.id == "nvcc_too_old_for_blackwell"


def test_cause_beats_consequences_and_earlier_cmake_errors() -> None:
    c = classify.classify(log("fetch_offline.log"))
    assert c.signature is not None and c.signature.id == "fetch_offline"
    assert c.line.startswith("fatal: unable to access")


def test_unrecognized_error_beats_weak_signatures() -> None:
    unknown = excerpt(UNKNOWN_LOGS[0])[1]
    for text in (unknown, log("torch_pin_mismatch.log") + "\n" + unknown):
        c = classify.classify(text)
        assert c.signature is None
        assert 'identifier "scale_factor" is undefined' in c.line


def test_weak_signatures_keep_file_order() -> None:
    # This tail also holds the CalledProcessError line of wheel_build_failed.
    c = classify.classify(log("ninja_build_stopped.log"))
    assert c.signature is not None and c.signature.id == "ninja_build_stopped"


# ---- unknown failures -----------------------------------------------------------------


@pytest.mark.parametrize("path", UNKNOWN_LOGS, ids=lambda p: p.name)
def test_unknown_excerpt(path: Path) -> None:
    header, text = excerpt(path)
    c = classify.classify(text)
    assert c.signature is None
    check_expectations(header, text, c)


def test_unknown_skips_command_lines_and_warnings() -> None:
    # Without signatures, the gcc-too-new log: a command line with -D flags, a
    # "warning: __GNUC__ redefined" line, then the real error from host_config.h.
    text = log("host_compiler_too_new.log")
    c = classify.classify(text, signatures=())
    assert "host_config.h:137:2: error: #error" in c.line
    assert c.unit == "csrc/probe_kernels.cu"


def test_unknown_without_a_diagnostic_quotes_the_failed_line() -> None:
    text = "\n".join(
        [
            "[1/2] Building CUDA object CMakeFiles/_C.dir/csrc/attention/paged.cu.o",
            "FAILED: CMakeFiles/_C.dir/csrc/attention/paged.cu.o ",
            "/usr/local/cuda/bin/nvcc -DX=1 -I/a -I/b -O2 -c csrc/attention/paged.cu -o x.o",
            "something went wrong",
            "ninja: build stopped: subcommand failed.",
        ]
    )
    c = classify.classify(text)
    assert c.signature is None and c.line_no == 2
    assert c.unit == "csrc/attention/paged.cu"


@pytest.mark.parametrize(
    ("line", "noise"),
    [
        ("/usr/bin/c++ -DX -Ifoo -Werror=return-type -O2 -c a.cpp -o a.o", True),
        ("cc1plus: warning: command-line option '-Wno-error=foo' is valid", True),
        ("CMake Warning at CMakeLists.txt:125 (message):", True),
        ('a.cu(3): warning #177-D: variable "x" was declared but never referenced', True),
        ('a.cu(3): error: identifier "x" is undefined', False),
        ("error: unrecognized command-line option '-Wfoo'", False),
    ],
)
def test_noise(line: str, noise: bool) -> None:
    assert classify.is_noise(line) is noise


@pytest.mark.parametrize(
    "line",
    [
        "  -Wno-error=deprecated-declarations is not an error",
        "copying vllm/entrypoints/openai/errors.py -> build/lib",
        '1 error detected in the compilation of "a.cu".',
        "-- Found error_handling: TRUE",
    ],
)
def test_not_error_lines(line: str) -> None:
    assert classify.first_error_line([line]) is None


def test_empty_and_errorless_logs() -> None:
    empty = classify.classify("")
    assert (empty.signature, empty.line_no) == (None, 0)
    assert "empty" in empty.to_finding(None).message
    tail = classify.classify("-- Detecting CXX compile features\nsetup.py exited\n\n")
    assert (tail.signature, tail.line_no, tail.line) == (None, 2, "setup.py exited")


# ---- units ----------------------------------------------------------------------------

FLASH_OBJ = "vllm-flash-attn/CMakeFiles/_vllm_fa3_C.dir/hopper/x_sm90.cu.o"
GPTQ = "csrc/quantization/gptq_marlin/gptq_marlin.cu"
TORCH_EXT_OBJ = "/tmp/b/temp.linux-x86_64-cpython-310/csrc/ops.o"


@pytest.mark.parametrize(
    ("lines", "index", "unit"),
    [
        # nvcc front end, no ninja around it
        ([f"{GPTQ}(911): error: x"], 0, GPTQ),
        # gcc location
        (
            ["/src/csrc/a.cpp:12:10: fatal error: x.h: No such file or directory"],
            0,
            "/src/csrc/a.cpp",
        ),
        # the FAILED line itself (unknown failures may quote it)
        (["FAILED: CMakeFiles/_C.dir/csrc/fp8/common.cu.o "], 0, "csrc/fp8/common.cu"),
        # a line inside a FAILED block: the CMake object names the source
        ([f"FAILED: {FLASH_OBJ}", "nvcc -c ...", "Killed"], 2, "hopper/x_sm90.cu"),
        # a header error: the unit that starts the include chain
        (
            [
                "In file included from /cuda/include/cuda_runtime.h:82,",
                "                 from /src/csrc/cache_kernels.cu:1:",
                "/cuda/include/crt/host_config.h:137:2: error: #error -- unsupported",
            ],
            2,
            "/src/csrc/cache_kernels.cu",
        ),
        # a header error: nvcc names the unit below it
        (
            [
                "/torch/include/c10/util/Half.h(10): error: something",
                "",
                '1 error detected in the compilation of "/src/csrc/layernorm.cu".',
            ],
            0,
            "/src/csrc/layernorm.cu",
        ),
        # torch cpp_extension objects: the raw object path
        ([f"FAILED: {TORCH_EXT_OBJ} ", "Killed"], 1, TORCH_EXT_OBJ),
        # a FAILED edge that is no object (a FetchContent download step)
        (["FAILED: cutlass-populate-prefix/src/cutlass-populate-download /x", "err"], 1, None),
        # a ninja status line between FAILED and the line: outside that block
        (["FAILED: CMakeFiles/_C.dir/csrc/a.cu.o ", "[3/9] Building CUDA object b", "x"], 2, None),
        # CMake configure errors belong to no unit
        (["CMake Error at CMakeLists.txt:59 (message):", "  Please set X"], 1, None),
    ],
)
def test_unit_of(lines: list[str], index: int, unit: str | None) -> None:
    assert classify.unit_of(lines, index) == unit


# ---- findings -------------------------------------------------------------------------


def test_finding_for_a_signature() -> None:
    c = classify.classify(log("torch_lacks_float8_e8m0fnu.log"))
    f = c.to_finding(Path("results/logs/cell/probe.log"))
    assert c.signature is not None
    assert (f.rule, f.level) == ("signature:torch_lacks_float8_e8m0fnu", "fail")
    assert 'has no member "Float8_e8m0fnu"' in f.message and c.signature.cause in f.message
    assert f.fix == c.signature.fix
    assert f.source == "https://github.com/pytorch/pytorch/pull/147466"
    assert f.evidence == (f"results/logs/cell/probe.log:{c.line_no}", GPTQ)


def test_finding_for_an_unknown_failure() -> None:
    c = classify.classify(excerpt(UNKNOWN_LOGS[0])[1])
    f = c.to_finding(None)
    assert (f.rule, f.level, f.source) == ("unknown", "fail", "")
    assert 'identifier "scale_factor" is undefined' in f.message
    assert "signatures.toml" in f.fix
    assert f.evidence == (f"line {c.line_no}", "csrc/probe_kernels.cu")


def test_finding_truncates_a_long_line() -> None:
    c = Classification(None, "x" * 5000 + " error: boom", 3, None)
    assert len(c.to_finding(None).message) < classify.QUOTE_MAX + 60


def test_classify_file_counts_every_line(tmp_path: Path) -> None:
    path = tmp_path / "build.log"
    path.write_text((LOGS / "cmake_too_old.log").read_text(encoding="utf-8"), encoding="utf-8")
    c = classify.classify_file(path)
    assert c.signature is not None and c.signature.id == "cmake_too_old"
    # the header lines count: numbers match what an editor shows for this file
    assert "CMake 3.26 or higher" in path.read_text().split("\n")[c.line_no - 1]
    with pytest.raises(MatrixError, match="log not found"):
        classify.classify_file(tmp_path / "missing.log")


def test_colour_codes_and_crlf() -> None:
    text = (
        "\x1b[1m\x1b[31mnvcc fatal   : Unsupported gpu architecture 'compute_35'\x1b[0m\r\nnext\r\n"
    )
    c = classify.classify(text)
    assert c.signature is not None and c.signature.id == "nvcc_arch_unsupported"
    assert c.line == "nvcc fatal   : Unsupported gpu architecture 'compute_35'"


# ---- a strict signatures file ---------------------------------------------------------

GOOD = """\
[[signature]]
id = "first"
pattern = 'first failure'
cause = "c"
fix = "f"
source = "https://github.com/o/r/issues/1"

[[signature]]
id = "oom"
pattern = ['^\\s*Killed\\s*$', 'KILLED BY SIGNAL']
flags = "i"
cause = "c"
fix = "f"
source = "https://github.com/o/r/issues/2"
stage = ["build"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "signatures.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_loads(tmp_path: Path) -> None:
    sigs = classify.load_signatures(write(tmp_path, GOOD))
    assert [s.id for s in sigs] == ["first", "oom"]
    assert sigs[1].stages == ("build",) and sigs[1].role == "cause"
    c = classify.classify("ok\n  killed by signal 9\n", sigs)
    assert c.signature is sigs[1] and c.line_no == 2
    assert classify.classify("ok\nKilled\n", sigs).signature is sigs[1]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('stage = ["build"]', 'stages = ["build"]'),
            r"signatures.toml:\d+: unknown key 'stages' in \[\[signature\]\] 'oom'",
        ),
        (
            ("'KILLED BY SIGNAL'", "'KILLED (BY'"),
            r"signatures.toml:\d+: bad regex in \[\[signature\]\] 'oom'",
        ),
        (("'KILLED BY SIGNAL'", "'(x)?'"), r"'oom' matches an empty line"),
        (('id = "oom"', 'id = "first"'), r"duplicate signature id 'first'"),
        (('id = "oom"', 'id = "Out-of-memory"'), r"id 'Out-of-memory'"),
        (('flags = "i"', 'flags = "x"'), r"unknown flag 'x' in \[\[signature\]\] 'oom'"),
        (('stage = ["build"]', 'stage = ["biuld"]'), r"unknown stage 'biuld'"),
        (('stage = ["build"]', 'role = "symptom"'), r"role 'symptom'"),
        (("https://github.com/o/r/issues/2", "vllm #2"), r"must be an https:// URL"),
        (("pattern = ['^", "patern = ['^"), r"unknown key 'patern'"),
    ],
)
def test_a_bad_file_names_the_signature(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError, match=expected):
        classify.load_signatures(write(tmp_path, GOOD.replace(old, new, 1)))


def test_unknown_key_error_points_at_its_line_and_suggests(tmp_path: Path) -> None:
    text = GOOD.replace("stage = ", "stages = ")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        classify.load_signatures(path)
    line = text.split("\n").index('stages = ["build"]') + 1
    assert info.value.message.startswith(f"{path}:{line}: unknown key 'stages'")
    assert info.value.fix == "did you mean 'stage'?"


def test_bad_regex_error_points_at_the_pattern_line(tmp_path: Path) -> None:
    text = GOOD.replace("'first failure'", "'first [failure'")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        classify.load_signatures(path)
    line = text.split("\n").index("pattern = 'first [failure'") + 1
    assert info.value.message.startswith(f"{path}:{line}: bad regex in [[signature]] 'first'")


def test_missing_pattern(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[\[signature\]\] 'first' is missing 'pattern'"):
        classify.load_signatures(write(tmp_path, GOOD.replace("pattern = 'first failure'\n", "")))


def test_signature_is_a_frozen_value() -> None:
    sig = classify.default_signatures()[0]
    assert isinstance(sig, Signature)
    with pytest.raises(AttributeError):
        sig.id = "x"  # type: ignore[misc]


def test_a_background_source_is_cited_as_such(tmp_path: Path) -> None:
    text = GOOD.replace(
        'source = "https://github.com/o/r/issues/2"\n',
        ('source = "https://github.com/o/r/issues/2"\nbackground = true\n'),
    )
    sigs = classify.load_signatures(write(tmp_path, text))
    assert [s.background for s in sigs] == [False, True]
    f = classify.classify("Killed\n", sigs).to_finding(None)
    assert f.source == f"https://github.com/o/r/issues/2 ({classify.BACKGROUND})"
    bad = text.replace("background = true", 'background = "yes"')
    with pytest.raises(ConfigError, match=r"background in .* must be true or false"):
        classify.load_signatures(write(tmp_path, bad))


def test_shipped_citations_that_show_no_failure_are_background() -> None:
    """Issue 22: six sources are on topic but no report of the error; PR 7695 gave way to
    the Machete PR's thread that shows 'Machete generation failed'."""
    by = {s.source.rsplit("/", 2)[-1]: s for s in classify.default_signatures()}
    for n in ("2283", "13164", "17830", "6200", "23910", "9180"):
        assert by[n].background, n
    assert "7695" not in by and not by["7174"].background
    e8m0 = next(s for s in classify.default_signatures() if s.id == "torch_lacks_float8_e8m0fnu")
    assert "vLLM >= 0.10.1" in e8m0.cause and not e8m0.background
