from __future__ import annotations

import json
from pathlib import Path

import pytest

from vllm_matrix.cli import main
from vllm_matrix.infra import results
from vllm_matrix.infra.config import load_matrix
from vllm_matrix.infra.results import StageResult
from vllm_matrix.report import merge

MATRIX = """
[defaults]
provider = "debian"
python = "3.12"

[[cell]]
vllm = "0.8.5"
torch = "2.6.0"
cuda = "12.4"
arch = ["9.0"]

[[cell]]
vllm = "0.10.1"
torch = "2.7.1"
cuda = "12.4"
arch = ["9.0"]

[[cell]]
vllm = "0.4.2"
torch = "2.3.0"
cuda = "12.4"
python = "3.11"
arch = ["8.0"]

[[cell]]
vllm = "0.20.0"
torch = "2.11.0"
cuda = "13.0"
provider = "pypi"
arch = ["12.0"]
"""
A = {"arch": "x86_64", "cpus": 2, "mem_gib": 23, "gpu": None, "os": "Debian 12", "python": "3.11"}
B = {"arch": "x86_64", "cpus": 64, "mem_gib": 500, "gpu": "H200", "os": "Ubuntu", "python": "3.12"}
PRE = ("source", "facts", "preflight")


def stages(*spec: str) -> list[StageResult]:
    """'probe=fail' → the stages up to it, the last with that status; others pass."""
    out = []
    for s in spec:
        name, _, status = s.partition("=")
        out.append(StageResult(name, status or "pass", 1.0, f"{name} {status or 'pass'}"))
    return out


def put(d: Path, cell_id: str, sts: list[StageResult], mach: dict[str, object], when: str) -> Path:
    root = next(p for p in d.parents if (p / "matrix.toml").exists())
    cell = next(c for c in load_matrix(root / "matrix.toml").cells if c.id == cell_id)
    d.mkdir(parents=True, exist_ok=True)
    p = results.write(d, cell, sts, mach)
    doc = json.loads(p.read_text())
    doc["written"] = when
    p.write_text(json.dumps(doc))
    return p


@pytest.fixture
def two_machines(tmp_path: Path) -> tuple[Path, list[Path]]:
    (tmp_path / "matrix.toml").write_text(MATRIX)
    ids = [c.id for c in load_matrix(tmp_path / "matrix.toml").cells]
    a, b = tmp_path / "results-a", tmp_path / "results-b"
    # cell 0: A preflight only (newer), B probed (older): the deeper wins.
    put(a, ids[0], stages(*PRE), A, "2026-11-30T12:00:00Z")
    put(b, ids[0], stages(*PRE, "toolkit", "env", "probe"), B, "2026-11-29T12:00:00Z")
    # cell 1: both probed; B's failure is newer: the newer wins.
    put(a, ids[1], stages(*PRE, "toolkit", "env", "probe"), A, "2026-11-28T12:00:00Z")
    put(b, ids[1], stages(*PRE, "toolkit", "env", "probe=fail"), B, "2026-11-30T12:00:00Z")
    # cell 2: A's probe passed; B's build was interrupted before anything compiled
    # (UNKNOWN at build): the run with evidence wins although it is shallower.
    put(a / "nested", ids[2], stages(*PRE, "toolkit", "env", "probe"), A, "2026-11-01T00:00:00Z")
    put(b, ids[2], stages(*PRE, "build=interrupted"), B, "2026-11-30T00:00:00Z")
    # cell 3: run nowhere (UNKNOWN)
    return tmp_path, [a, b]


def test_deeper_then_newer_wins_and_every_run_is_listed(
    two_machines: tuple[Path, list[Path]],
) -> None:
    root, dirs = two_machines
    m = load_matrix(root / "matrix.toml")
    doc, refused = merge.collect(m, dirs)
    assert refused == []
    rows = {r["id"]: r for r in doc["cells"]}
    r0, r1, r2, r3 = (rows[c.id] for c in m.cells)
    assert (r0["verdict"], r0["depth"], r0["machine"]["gpu"]) == ("PASS", "probe", "H200")
    assert (r1["verdict"], r1["machine"]["gpu"]) == ("FAIL", "H200")
    assert (r2["verdict"], r2["depth"], r2["machine"]["cpus"]) == ("PASS", "probe", 2)
    assert r3["verdict"] == "UNKNOWN" and r3["machine"] is None
    for r in (r0, r1, r2):
        assert [x["chosen"] for x in r["runs"]] == [True, False]
        assert len(r["notes"]) == 3 and r["notes"][1].startswith("chosen: ")
    assert r2["runs"][0]["file"] == f"results-a/nested/{r2['id']}.json"
    assert doc["merged"] == {"dirs": ["results-a", "results-b"], "files": 6, "refused": []}


def test_refused_files_are_named_and_the_rest_is_merged(
    two_machines: tuple[Path, list[Path]],
) -> None:
    root, dirs = two_machines
    bad = dirs[0]
    (bad / "truncated.json").write_text('{"schema": "vllm-matrix/cell-result", "vers')
    good = json.loads(next(dirs[1].glob("vllm0.8.5*.json")).read_text())
    (bad / "v2.json").write_text(json.dumps(good | {"version": 2}))
    (bad / "compat.json").write_text(json.dumps({"schema": "vllm-matrix/compat", "version": 1}))
    (bad / "nostages.json").write_text(json.dumps({k: v for k, v in good.items() if k != "stages"}))
    (bad / "list.json").write_text("[1, 2]")
    (bad / "binary.json").write_bytes(b"\xff\xfe\x00")
    doc, refused = merge.collect(load_matrix(root / "matrix.toml"), dirs)
    why = {x.file: x.reason for x in refused}
    assert set(why) == {
        f"results-a/{n}.json" for n in ("truncated", "v2", "compat", "nostages", "list", "binary")
    }
    assert why["results-a/truncated.json"].startswith("not valid JSON (line 1")
    assert "schema version 2" in why["results-a/v2.json"]
    assert "'vllm-matrix/compat'" in why["results-a/compat.json"]
    assert why["results-a/nostages.json"] == "malformed result: 'stages' is not a list"
    assert "not UTF-8" in why["results-a/binary.json"]
    assert doc["merged"]["files"] == 6  # nothing lost from the good files
    assert [r["verdict"] for r in doc["cells"]] == ["PASS", "FAIL", "PASS", "UNKNOWN"]


def test_cells_the_matrix_lacks_join_other_runs(two_machines: tuple[Path, list[Path]]) -> None:
    root, dirs = two_machines
    other = root / "other.toml"
    other.write_text(MATRIX.split("[[cell]]")[0] + "[[cell]]" + MATRIX.split("[[cell]]")[1])
    doc, _ = merge.collect(load_matrix(other), dirs)
    assert [r["id"] for r in doc["cells"]] == [load_matrix(other).cells[0].id]
    assert len(doc["other_runs"]) == 2  # cells 1 and 2 (cell 3 ran nowhere)
    assert all(len(r["runs"]) == 2 for r in doc["other_runs"])


def test_cli_merge_writes_the_report_and_exits_3_on_refused(
    two_machines: tuple[Path, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, dirs = two_machines
    argv = ["report", "--matrix", str(root / "matrix.toml"), "--merge", *map(str, dirs)]
    assert main(argv) == 0
    md = (root / "reports" / "compat.md").read_text()
    assert "Merged (`nox -s report -- --merge`) from 6 result files" in md
    assert "- chosen: PASS at probe on x86_64 64 cores 500 GiB, H200" in md
    assert "- not chosen: PREFLIGHT-OK at preflight on x86_64 2 cores 23 GiB, no GPU" in md
    assert str(root) not in md  # names no path of the machine
    (dirs[1] / "broken.json").write_text("{")
    assert main(argv) == 3  # a refused file: not a complete answer (README: 3 = ERROR)
    err = capsys.readouterr().err
    assert "error: refused results-b/broken.json: not valid JSON" in err
    md = (root / "reports" / "compat.md").read_text()
    assert "## Refused result files" in md and "`results-b/broken.json`" in md
    assert "**PASS**" in md and "**FAIL**" in md  # the others are still there
    saved = json.loads((root / "reports" / "compat.json").read_text())
    assert saved["merged"]["refused"][0]["file"] == "results-b/broken.json"


def test_cli_merge_of_a_missing_dir_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "matrix.toml").write_text(MATRIX)
    rc = main(["report", "--matrix", str(tmp_path / "matrix.toml"), "--merge", "nowhere"])
    assert rc == 2 and "not a directory: nowhere" in capsys.readouterr().err
