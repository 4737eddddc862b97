from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from vllm_matrix.cli import main
from vllm_matrix.commands import cimatrix
from vllm_matrix.infra.config import load_matrix
from vllm_matrix.infra.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "matrix.yml"
KEYS = ["id", "vllm", "torch", "cuda", "provider", "python", "arch", "depth", "command"]


def _yaml(text: str) -> object:
    return YAML(typ="safe").load(StringIO(text))


def test_github_matrix_is_the_matrix_cells(capsys: pytest.CaptureFixture[str]) -> None:
    m = load_matrix(ROOT / "matrix.toml")
    assert main(["ci-matrix", "--matrix", str(ROOT / "matrix.toml"), "--depth", "build"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one line: what $GITHUB_OUTPUT takes
    include = json.loads(out)["include"]
    assert [j["id"] for j in include] == [c.id for c in m.cells]
    for j, c in zip(include, m.cells, strict=True):
        assert list(j) == KEYS
        assert (j["vllm"], j["torch"], j["cuda"], j["provider"], j["python"]) == (
            c.vllm,
            c.torch,
            c.cuda,
            c.provider,
            c.python,
        )
        assert j["arch"].split(",") == list(c.arch)
        assert j["depth"] == "build"
        assert j["command"] == f"nox -s matrix -- --cell {c.id} --depth build"


def test_gitlab_matrix_parses_and_matches_cells(capsys: pytest.CaptureFixture[str]) -> None:
    m = load_matrix(ROOT / "matrix.toml")
    argv = ["ci-matrix", "--matrix", str(ROOT / "matrix.toml"), "--format", "gitlab"]
    assert main([*argv, "--cell", "vllm0.8.5"]) == 0
    doc = _yaml(capsys.readouterr().out)
    assert isinstance(doc, dict)
    job = doc[cimatrix.GITLAB_JOB]
    entries = job["parallel"]["matrix"]
    want = [c for c in m.cells if "vllm0.8.5" in c.id]
    assert [e["CELL"] for e in entries] == [c.id for c in want]
    for e, c in zip(entries, want, strict=True):
        assert all(isinstance(v, str) for v in e.values())  # GitLab variables are strings
        assert e["ARCH"] == ",".join(c.arch) and e["DEPTH"] == "probe"
        assert e["PYTHON"] == c.python  # "3.10" must not become the float 3.1
    assert any('--cell "$CELL" --depth "$DEPTH"' in line for line in job["script"])
    assert job["artifacts"]["paths"] == ["results/*.json"]


def test_yaml_strings_survive_special_characters(tmp_path: Path) -> None:
    js = (cimatrix.Job('a"b', "1", "2", "3", "p", "3.10", "9.0", "probe", "x: y # z"),)
    entry = _yaml(cimatrix.gitlab(js))[cimatrix.GITLAB_JOB]["parallel"]["matrix"][0]  # type: ignore[index]
    assert entry["CELL"] == 'a"b' and entry["COMMAND"] == "x: y # z" and entry["PYTHON"] == "3.10"


def test_an_exact_id_runs_one_cell_even_when_it_is_part_of_another(tmp_path: Path) -> None:
    p = tmp_path / "matrix.toml"
    p.write_text(
        '[defaults]\nprovider = "debian"\npython = "3.12"\n'
        '[[cell]]\nvllm = "0.8.5"\ntorch = "2.6.0"\ncuda = "12.4"\narch = ["9.0"]\n'
        '[[cell]]\nvllm = "0.8.5"\ntorch = "2.6.0"\ncuda = "12.4"\narch = ["9.0", "12.0"]\n'
    )
    m = load_matrix(p)
    short = m.cells[0].id
    assert m.cells[1].id.startswith(short)  # ...-sm90 is part of ...-sm90+sm120
    assert [j.id for j in cimatrix.jobs(m, "probe", short)] == [short]
    assert len(cimatrix.jobs(m, "probe", "vllm0.8.5")) == 2


def test_bad_depth_format_and_cell_are_errors() -> None:
    m = load_matrix(ROOT / "matrix.toml")
    with pytest.raises(ConfigError, match="unknown depth"):
        cimatrix.render(m, "github", "deep")
    with pytest.raises(ConfigError, match="unknown CI format"):
        cimatrix.render(m, "jenkins", "probe")
    with pytest.raises(ConfigError, match="no cell"):
        cimatrix.render(m, "github", "probe", "vllm9.9.9")


def test_too_many_cells_for_one_matrix() -> None:
    js = tuple(
        cimatrix.Job(str(n), "1", "2", "3", "p", "3.12", "9.0", "probe", "c") for n in range(201)
    )
    cimatrix.github(js)  # 201 <= 256
    with pytest.raises(ConfigError, match="200 jobs"):
        cimatrix.gitlab(js)


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    # check-jsonschema (dev extra) with the GitHub workflow schema it ships (SchemaStore's).
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"NO_COLOR": "1"},
    )


def test_workflow_passes_the_linter_and_a_broken_one_does_not(tmp_path: Path) -> None:
    done = _lint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "run-on:", 1))
    bad = _lint(broken)
    assert bad.returncode != 0 and "jobs.matrix" in bad.stdout + bad.stderr


def test_workflow_wiring() -> None:
    """What the schema cannot see: needs name jobs, matrix.* names are the generated keys,
    the cell job runs the generated command, the last job merges what the cells upload."""
    wf = _yaml(WORKFLOW.read_text())
    assert isinstance(wf, dict)
    jobs = wf["jobs"]
    for name, job in jobs.items():
        needs = job.get("needs", [])
        for n in [needs] if isinstance(needs, str) else needs:
            assert n in jobs, f"{name} needs unknown job {n}"
    gen = " ".join(s.get("run", "") for s in jobs["matrix"]["steps"])
    assert "inv ci-matrix --format github" in gen and "GITHUB_OUTPUT" in gen
    assert "fromJSON(needs.matrix.outputs.jobs)" in jobs["cell"]["strategy"]["matrix"]
    used = set(re.findall(r"\$\{\{[^}]*?(?<![.\w])matrix\.(\w+)", WORKFLOW.read_text()))
    assert used and used <= set(KEYS), used - set(KEYS)
    cell = jobs["cell"]
    run = " ".join(s.get("run", "") for s in cell["steps"])
    assert cimatrix.command('"$CELL"', '"$DEPTH"') in run
    assert cell["env"]["CELL"] == "${{ matrix.id }}"
    assert cell["env"]["DEPTH"] == "${{ matrix.depth }}"
    assert "VLLM_MATRIX_CCACHE_REMOTE" in cell["env"]
    uploads = [s for s in cell["steps"] if str(s.get("uses", "")).startswith("actions/upload")]
    assert uploads and uploads[0]["with"]["path"] == "results/*.json"
    rep = jobs["report"]
    assert rep["needs"] == "cell"
    down = next(s for s in rep["steps"] if str(s.get("uses", "")).startswith("actions/download"))
    merged = " ".join(s.get("run", "") for s in rep["steps"])
    assert f"nox -s report -- --merge {down['with']['path']}/*" in merged


def test_workflow_checks_currency_daily_apart_from_the_matrix() -> None:
    """`nox -s currency` on its own daily cron; the matrix jobs keep the weekly one."""
    wf = _yaml(WORKFLOW.read_text())
    assert isinstance(wf, dict)
    on = wf.get("on", wf.get(True))
    crons = [c["cron"] for c in on["schedule"]]
    assert len(crons) == 2
    jobs = wf["jobs"]
    cur = jobs["currency"]
    assert "needs" not in cur and "if" not in cur  # every trigger, the daily cron included
    assert any(s.get("run", "") == "nox -s currency" for s in cur["steps"])
    weekly = next(c for c in crons if c in jobs["matrix"]["if"])
    assert weekly != next(c for c in crons if c not in jobs["matrix"]["if"])
    assert "needs.cell.result != 'skipped'" in jobs["report"]["if"]
