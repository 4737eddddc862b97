from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vllm_matrix.infra import proc
from vllm_matrix.infra.errors import CommandError


def test_output_is_logged_and_failures_carry_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    seen: list[str] = []
    done = proc.run([sys.executable, "-c", "print('a'); print('b')"], log=log, on_line=seen.append)
    assert done.returncode == 0 and done.output == "a\nb\n" and seen == ["a\n", "b\n"]
    text = log.read_text()
    assert text.startswith("$ ") and "a\nb\n# exit 0 after" in text
    with pytest.raises(CommandError) as e:
        proc.run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log=log)
    assert e.value.returncode == 3 and "boom" in e.value.tail


def test_timeout_fires_on_a_silent_command_and_takes_its_children(tmp_path: Path) -> None:
    # A command that prints nothing, with a grandchild in a session of its own (as ninja
    # runs compilers): the timeout must end both.
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    t = time.monotonic()
    done = proc.run([sys.executable, "-c", code], check=False, timeout=2)
    assert time.monotonic() - t < 20
    assert done.returncode == -9
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    status = Path(f"/proc/{grandchild}/stat")
    assert not status.exists() or status.read_text().split(") ")[1].startswith("Z")


def test_working_in_finds_what_runs_in_a_directory(tmp_path: Path) -> None:
    where = tmp_path / "build" / "temp"
    where.mkdir(parents=True)
    p = subprocess.Popen(["sleep", "30"], cwd=where, start_new_session=True)
    try:
        assert p.pid in proc.working_in(tmp_path / "build")
        assert p.pid not in proc.working_in(tmp_path / "elsewhere")
        assert os.getpid() not in proc.working_in(Path.cwd())
        proc.kill_tree(p.pid)
        assert p.wait(timeout=10) == -9
    finally:
        p.kill()
