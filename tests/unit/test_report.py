"""report: what a reader sees. No machine's paths, causes quoted as file:line: message,
warnings of passing cells as notes, no stale repeated text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_matrix.infra import portable, results
from vllm_matrix.infra.config import Cell, load_matrix
from vllm_matrix.infra.results import Finding, StageResult
from vllm_matrix.report import cause
from vllm_matrix.report import compat as report

REPO = Path(__file__).resolve().parents[2]
CELL = Cell("0.10.1", "2.6.0", "12.4", "debian", "3.12", ("9.0",))
MACH = {"arch": "x86_64", "cpus": 2, "mem_gib": 23, "gpu": None, "os": "Debian", "python": "3.12"}
# Strings a report must never hold: this machine's or any other machine's own places.
FORBIDDEN = ("/root/", "/home/", "/tmp/", "/work/", "/opt/", "/var/tmp/")

# Real data: the two classified probe failures of vLLM 0.10.1 x torch 2.6.0 (committed
# reports/compat.json of 2026-11-27), as the run on /work/main wrote them.
_WS = "/work/main/results/logs/vllm0.10.1-torch2.6.0-cu12.4-py3.12-sm90"
_SIG = (
    "the vLLM source uses at::Float8_e8m0fnu (vLLM >= 0.9), which torch only has from "
    "2.7.0: it is compiled against an older torch"
)
FLOAT8_FAILS = (
    f'{_SIG} (line 90: "{_WS}/tree/csrc/moe/marlin_moe_wna16/ops.cu(938): error: '
    'namespace "at" has no member "Float8_e8m0fnu"")',
    f'{_SIG} (line 92: "{_WS}/tree/csrc/quantization/gptq_marlin/gptq_marlin.cu(911): '
    'error: namespace "at" has no member "Float8_e8m0fnu"")',
)


def roots(tmp_path: Path) -> portable.Roots:
    return portable.Roots(
        (
            (str(tmp_path / "ws"), ""),
            (str(tmp_path / "home" / ".cache" / "vllm-matrix"), portable.CACHE),
            (str(tmp_path / "home"), portable.HOME),
        )
    )


# ---- portable paths


def test_this_machines_roots_become_symbols(tmp_path: Path) -> None:
    r = roots(tmp_path)
    ws, home = tmp_path / "ws", tmp_path / "home"
    cache = home / ".cache" / "vllm-matrix"
    assert portable.text(f"{ws}/results/logs/c/env.log", r) == "results/logs/c/env.log"
    assert portable.text(f"cwd {ws}", r) == "cwd ."
    assert (
        portable.text(f"nvcc 12.4.131 (debian) at {cache}/toolkits/debian-12.4", r)
        == "nvcc 12.4.131 (debian) at $VLLM_MATRIX_CACHE/toolkits/debian-12.4"
    )
    assert portable.text(f"{home}/mirrors/cutlass", r) == "~/mirrors/cutlass"
    # Only whole path segments: a sibling of the workspace is not inside it.
    assert portable.text(f"{ws}2/x", r).endswith("ws2/x")
    # What names no machine stays.
    for keep in (
        "https://github.com/vllm-project/vllm/issues/8665",
        "csrc/moe/marlin_moe_wna16/ops.cu:938",
        "existing install at /usr/local/cuda",
        "PATH=/usr/local/cuda/bin:/usr/bin",
    ):
        assert portable.text(keep, r) == keep


def test_roots_of_another_machine_are_recognised_and_replaced_everywhere() -> None:
    d = {
        "log": "/tmp/dws/results/logs/c/probe/probe.log",
        "cwd": "/tmp/dws",
        "root": "/work/main/.cache/vm/src/vllm-0.20.0-a6d50152936e",
        "toolkit": "/work/main/.cache/vm/toolkits/pypi-13.0/bin/nvcc",
        "carried": "/work/main/.cache/carry/cutlass",
        "note": "the active env at /opt/torch/.venv",
        "python": "/opt/torch/.venv/bin/python3",
        "home": "/home/alice/x",
    }
    out = portable.doc(d, portable.Roots(()))
    assert out == {
        "log": "results/logs/c/probe/probe.log",
        "cwd": ".",
        "root": "$VLLM_MATRIX_CACHE/src/vllm-0.20.0-a6d50152936e",
        "toolkit": "$VLLM_MATRIX_CACHE/toolkits/pypi-13.0/bin/nvcc",
        "carried": ".cache/carry/cutlass",
        "note": "the active env at $VIRTUAL_ENV",
        "python": "$VIRTUAL_ENV/bin/python3",
        "home": "~/x",
    }
    assert portable.doc(out, portable.Roots(())) == out  # idempotent


def test_result_files_are_written_portable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path / "cache"))
    ws = tmp_path / "ws"
    log = ws / "results" / "logs" / CELL.id / "toolkit.log"
    stages = [
        StageResult(
            "toolkit", "pass", 1.0, f"nvcc 12.4 at {tmp_path / 'cache'}/toolkits/x", log=str(log)
        )
    ]
    text = results.write(ws / "results", CELL, stages, MACH).read_text()
    assert f'"results/logs/{CELL.id}/toolkit.log"' in text
    assert "$VLLM_MATRIX_CACHE/toolkits/x" in text
    assert str(tmp_path) not in text


def _matrix(tmp_path: Path) -> Path:
    m = tmp_path / "ws" / "matrix.toml"
    m.parent.mkdir(parents=True, exist_ok=True)
    m.write_text(
        '[[cell]]\nvllm = "0.10.1"\ntorch = "2.6.0"\ncuda = "12.4"\nprovider = "debian"\n'
        'python = "3.12"\narch = ["9.0"]\n'
    )
    return m


def test_a_rendered_report_holds_no_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(cache_dir))
    ws = tmp_path / "ws"
    logs = ws / "results" / "logs" / CELL.id
    fails = tuple(
        Finding("signature:x", "fail", m.replace(_WS, str(logs)), "use torch 2.7", (str(logs),))
        for m in FLOAT8_FAILS
    )
    stages = [
        StageResult("toolkit", "pass", 0.1, f"nvcc 12.4.131 (debian) at {cache_dir}/toolkits/d"),
        StageResult("probe", "fail", 9.0, "2 failed", fails, {"tree": str(logs / "tree")}),
    ]
    # A result written by older code (absolute paths), and one copied from elsewhere.
    (ws / "results").mkdir(parents=True)
    raw = results.envelope(CELL, stages, MACH)
    (ws / "results" / f"{CELL.id}.json").write_text(json.dumps(raw))
    other = ws / "reports" / "device"
    other.mkdir(parents=True)
    elsewhere = [
        StageResult("env", "pass", 1.0, "torch at /opt/torch/.venv", log="/tmp/dws/results/logs/e"),
        StageResult("probe", "pass", 1.0, "ok", details={"src": "/root/.cache/vllm-matrix/src/v"}),
        # The gpu stage keys its libraries by path (a key is a string a reader sees too).
        StageResult(
            "gpu", "pass", 1.0, "ok", details={"libs": {"/tmp/vm/builds/vllm0/p/_C.so": "loaded"}}
        ),
    ]
    (other / "e.json").write_text(json.dumps(results.envelope(CELL, elsewhere, MACH)))
    j, md = report.write(load_matrix(_matrix(tmp_path)), ws / "results", ws / "reports")
    for path in (j, md, other / "e.json"):
        text = path.read_text()
        assert not [x for x in FORBIDDEN if x in text], path.name
        assert str(cache_dir) not in text and str(tmp_path) not in text
        assert portable.machine_paths(text) == []
    assert f"results/logs/{CELL.id}/tree/csrc/moe/marlin_moe_wna16/ops.cu" in j.read_text()


def test_committed_reports_name_no_machine_path() -> None:
    found = {}
    for path in sorted((REPO / "reports").rglob("*")):
        if path.is_file() and path.suffix in (".md", ".json"):
            hits = portable.machine_paths(path.read_text())
            if hits:
                found[str(path.relative_to(REPO))] = hits[:3]
    assert found == {}


# ---- the cause and notes columns


@pytest.mark.parametrize(
    ("line", "want"),
    [
        (
            f'{_WS}/tree/csrc/quantization/gptq_marlin/gptq_marlin.cu(911): error: namespace "at"'
            ' has no member "Float8_e8m0fnu"',
            'gptq_marlin.cu:911: namespace "at" has no member "Float8_e8m0fnu"',
        ),
        (
            "/x/torch/include/ATen/cuda/CUDAContextLight.h:10:10: fatal error: cusparse.h: "
            "No such file or directory",
            "CUDAContextLight.h:10: cusparse.h: No such file or directory",
        ),
        ("csrc/a.cpp:3:5: error: 'x' was not declared", "a.cpp:3: 'x' was not declared"),
        ("ninja: build stopped: subcommand failed.", None),
        ("nvcc fatal   : Unsupported gpu architecture 'compute_120'", None),
    ],
)
def test_compiler_error(line: str, want: str | None) -> None:
    assert cause.compiler_error(line) == want


def test_fail_cell_quotes_the_compiler_within_the_width() -> None:
    text = cause.fail_cell(FLOAT8_FAILS)
    assert len(text) <= cause.WIDTH
    assert text.startswith(
        'ops.cu:938, gptq_marlin.cu:911: namespace "at" has no member "Float8_e8m0fnu" — '
        "the vLLM source uses at::Float8_e8m0fnu"
    )
    assert 'gptq_marlin.cu:911: namespace "at" has no member "Float8_e8m0fnu"' in text
    assert "/" not in text.split(" — ")[0]  # no path, so nothing to cut inside one
    # Narrow: the quote stays whole, the explanation goes.
    assert cause.fail_cell(FLOAT8_FAILS[1:], 70) == (
        'gptq_marlin.cu:911: namespace "at" has no member "Float8_e8m0fnu"'
    )


def test_a_failure_without_a_compiler_line_keeps_its_cause() -> None:
    msg = 'a CMake error (line 3: "CMake Error at CMakeLists.txt:51 (message):")'
    assert cause.fail_cell([msg]) == msg
    assert cause.shorten("word " * 50, 20) == "word word word word…"


def _row(verdict: str, why: str, findings: list[dict[str, object]]) -> dict[str, object]:
    return {"verdict": verdict, "depth": "probe", "cause": why, "findings": findings}


def test_warnings_of_a_passing_cell_are_notes_not_its_cause() -> None:
    warn = {"level": "warn", "stage": "probe", "message": "nvcc 12.4 is older than 12.6"}
    assert cause.cells(_row("PASS", "nvcc 12.4 is older than 12.6", [warn])) == (
        "",
        "nvcc 12.4 is older than 12.6",
    )
    fails = [{"level": "fail", "stage": "probe", "message": m} for m in FLOAT8_FAILS]
    why, notes = cause.cells(_row("FAIL", "; ".join(FLOAT8_FAILS), [warn, *fails]))
    assert why.startswith("ops.cu:938, gptq_marlin.cu:911: ") and notes == ""


def test_a_twice_reused_probe_says_so_once() -> None:
    s = (
        "8 units, front-end, all passed (reused: passed on the same inputs, 2026-11-27T08:39:36Z)"
        " (reused: passed on the same inputs, 2026-11-27T11:12:04Z)"
    )
    assert cause.once(s) == (
        "8 units, front-end, all passed (reused: passed on the same inputs, 2026-11-27T08:39:36Z)"
    )
    assert cause.once("3 units, all passed") == "3 units, all passed"


def test_the_table_shows_a_pass_rows_warning_under_notes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path / "cache"))
    ws = tmp_path / "ws"
    warn = Finding("cuda-minor", "warn", "nvcc 12.4 is older than torch's CUDA 12.6", "CUDA 12.6")
    stages = [
        StageResult("preflight", "warn", 0.1, "go", (warn,)),
        StageResult("probe", "pass", 9.0, "7 units, all passed (reused: a) (reused: b)"),
    ]
    results.write(ws / "results", CELL, stages, MACH)
    _, md = report.write(load_matrix(_matrix(tmp_path)), ws / "results", ws / "reports")
    text = md.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| cell"))
    row = next(line for line in text.splitlines() if line.startswith(f"| `{CELL.id}`"))
    names, values = header.split("|"), row.split("|")
    cols = {n.strip(): v.strip() for n, v in zip(names, values, strict=True)}
    assert cols["cause"] == "—" and cols["fix"] == "—"
    assert cols["notes"] == "nvcc 12.4 is older than torch's CUDA 12.6"
    assert "(reused: a)" in text and "(reused: b)" not in text


def test_the_cause_cell_reads_what_classify_writes(tmp_path: Path) -> None:
    # Tied to classify's own finding format, so a change there cannot silently break it.
    from vllm_matrix.knowledge import classify

    log = (
        "$ nvcc ... -c gptq_marlin.cu\n"
        f'{_WS}/tree/csrc/quantization/gptq_marlin/gptq_marlin.cu(911): error: namespace "at" '
        'has no member "Float8_e8m0fnu"\n'
        '1 error detected in the compilation of "gptq_marlin.cu".\n'
    )
    finding = classify.classify(log).to_finding(tmp_path / "u.log")
    assert cause.fail_cell([finding.message]).startswith(
        'gptq_marlin.cu:911: namespace "at" has no member "Float8_e8m0fnu" — '
    )


def _answered(ws: Path, stages: list[StageResult]) -> None:
    (ws / "results").mkdir(parents=True, exist_ok=True)
    raw = results.envelope(CELL, stages, MACH)
    (ws / "results" / f"{CELL.id}.json").write_text(json.dumps(raw))


def test_a_render_from_fewer_results_never_replaces_the_report(tmp_path: Path) -> None:
    m = load_matrix(_matrix(tmp_path))
    ws = tmp_path / "ws"
    probe = StageResult("probe", "fail", 9.0, "2 failed", (Finding("s", "fail", "x", "y"),))
    _answered(ws, [StageResult("preflight", "pass", 0.1, "ok"), probe])
    md = report.write(m, ws / "results", ws / "reports")[1]
    assert md == ws / "reports" / "compat.md" and "FAIL" in md.read_text()
    assert (ws / "reports" / "blackwell.md").is_file()
    published = md.read_text()
    said: list[str] = []
    # a fresh clone: no results at all -> the committed report stays, a scratch copy is named
    (ws / "results" / f"{CELL.id}.json").unlink()
    md2 = report.write(m, ws / "results", ws / "reports", said.append)[1]
    assert md.read_text() == published
    assert md2 == ws / "results" / report.SCRATCH / "compat.md" and "UNKNOWN" in md2.read_text()
    assert len(said) == 1 and "FAIL at probe" in said[0] and str(md2.parent) in said[0]
    # shallower evidence for the same cell (preflight only) is a loss too
    _answered(ws, [StageResult("preflight", "pass", 0.1, "ok")])
    report.write(m, ws / "results", ws / "reports", said.append)
    assert md.read_text() == published and len(said) == 2
    # as deep or deeper: published
    deeper = [StageResult("preflight", "pass", 0.1, "ok"), StageResult("probe", "pass", 1, "")]
    _answered(ws, deeper)
    assert report.write(m, ws / "results", ws / "reports", said.append)[1] == md
    assert "PASS" in md.read_text() and len(said) == 2


def test_a_cell_taken_out_of_the_matrix_is_no_loss() -> None:
    old = {"cells": [{"id": "a", "verdict": "PASS", "depth": "probe"}]}
    assert report.lost_evidence(old, {"cells": []}) == []
    new = {"cells": [{"id": "a", "verdict": "UNKNOWN", "depth": "none"}]}
    assert report.lost_evidence(old, new) == ["a (PASS at probe)"]
    deeper = {"cells": [{"id": "a", "verdict": "FAIL", "depth": "build (partial: targets _C)"}]}
    assert report.lost_evidence(old, deeper) == []


def test_a_matrix_run_without_a_blackwell_table_keeps_the_one_on_disk(tmp_path: Path) -> None:
    """results/blackwell.json is `vllm-matrix blackwell`'s, not the cells': the main job in
    a fresh clone (no such file) publishes its cells and keeps the committed table, instead
    of rendering into the scratch directory for a table it never set out to make."""
    m = load_matrix(_matrix(tmp_path))
    ws = tmp_path / "ws"
    _answered(ws, [StageResult("preflight", "pass", 0.1, "ok")])
    table = {"arch": "12.0", "depth": "preflight", "releases": [], "newest": None}
    (ws / "results" / "blackwell.json").write_text(json.dumps(table))
    report.write(m, ws / "results", ws / "reports")
    (ws / "results" / "blackwell.json").unlink()
    said: list[str] = []
    md = report.write(m, ws / "results", ws / "reports", said.append)[1]
    assert md == ws / "reports" / "compat.md" and said == []
    doc = json.loads((ws / "reports" / "compat.json").read_text())
    assert doc["blackwell"] == table
