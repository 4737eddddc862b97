"""Every script under benchmarks/ and tests/acceptance/ still starts where it lies: its
--help parses (imports resolve, the repo root is found from its own path). The scripts
run for minutes to hours (nox -s bench-*); this is what CI can afford of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    str(path.relative_to(ROOT))
    for path in [*ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("tests/acceptance/*.py")]
)
SHELL = sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("benchmarks/**/*.sh"))


def test_the_layout_is_the_documented_one() -> None:
    assert "benchmarks/device/model24.sh" in SHELL
    assert "tests/acceptance/broken.py" in SCRIPTS
    assert {Path(script).parent.name for script in SCRIPTS} == {
        "benchmarks",
        "studies",
        "device",
        "acceptance",
    }


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_answers_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, script, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")


@pytest.mark.parametrize("script", SHELL)
def test_the_shell_script_parses_and_finds_the_repo_root(script: str) -> None:
    assert subprocess.run(["bash", "-n", script], cwd=ROOT, check=False).returncode == 0
    text = (ROOT / script).read_text()
    # the line that takes the script to the repo root, run from elsewhere
    line = next(ln for ln in text.splitlines() if ln.startswith('cd "$(dirname "$0")'))
    where = subprocess.run(
        ["bash", "-c", line.split("#")[0] + " && pwd", str(ROOT / script)],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where) == ROOT
