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


BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_cpu_seconds_are_the_commands_own_and_its_waited_childrens() -> None:
    # a command that burns CPU, one that sleeps, and one whose CPU is a grandchild's it waits
    # for (as nvcc waits for cicc and ptxas)
    busy = proc.run([sys.executable, "-c", BUSY.format(s=0.6)])
    assert 0.5 <= busy.cpu_seconds <= busy.seconds + 0.2
    idle = proc.run([sys.executable, "-c", "import time; time.sleep(0.6)"])
    assert idle.cpu_seconds < 0.3 <= idle.seconds
    nested = proc.run(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; "
            f"subprocess.run([sys.executable, '-c', {BUSY.format(s=0.6)!r}], check=True)",
        ]
    )
    assert nested.cpu_seconds >= 0.5
    # return codes as Popen gives them: an exit status, and -N for a signal
    assert proc.run([sys.executable, "-c", "raise SystemExit(3)"], check=False).returncode == 3
    killed = proc.run(["sh", "-c", "kill -TERM $$"], check=False)
    assert killed.returncode == -15


def test_cpu_seconds_beside_another_busy_thread_are_only_the_commands() -> None:
    # another command running at the same time in this process (a second cell's probe):
    # its CPU is not this one's
    import threading

    other = threading.Thread(target=proc.run, args=([sys.executable, "-c", BUSY.format(s=1.5)],))
    other.start()
    try:
        mine = proc.run([sys.executable, "-c", "import time; time.sleep(0.8)"])
    finally:
        other.join()
    assert mine.cpu_seconds < 0.3
