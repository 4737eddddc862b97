"""progress: the same words on a terminal (a bar, redrawn) and in a CI log (a line every
~10 s), with an injected clock."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from vllm_matrix.infra import progress
from vllm_matrix.infra.progress import Progress


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(
    total: float | None = 7, unit: str = "units", tty: bool = False
) -> tuple[Progress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    p = Progress("probing vLLM 0.10.1", total, unit, stream=out, tty=tty, clock=clock)
    return p, out, clock


def test_words() -> None:
    p, _, clock = make()
    assert p.line() == "probing vLLM 0.10.1: 0/7 units (0%), elapsed 0s"
    p.start("ops.cu")
    p.start("gptq_marlin.cu")
    clock.t += 65
    p.finish("ops.cu")
    assert p.line() == (
        "probing vLLM 0.10.1: 1/7 units (14%), running gptq_marlin.cu, elapsed 1m05s, ETA 6m30s"
    )
    assert progress.amount(412 * 2**20, 1630 * 2**20, "bytes") == "412/1630 MiB"
    assert progress.amount(3 * 2**30, None, "bytes") == "3072 MiB"
    assert progress.amount(12 * 2**30, 16 * 2**30, "bytes") == "12.0/16.0 GiB"
    assert progress.duration(7384) == "2h03m"


def test_off_a_terminal_a_line_at_once_then_every_ten_seconds() -> None:
    p, out, clock = make()
    # At once: the step began, and how much there is to do.
    assert out.getvalue() == "probing vLLM 0.10.1: 0/7 units (0%), elapsed 0s\n"
    for _ in range(9):  # many updates within 10 s: no line
        clock.t += 1
        p.start("a.cu")
        p.finish("a.cu")
    assert out.getvalue().count("\n") == 1
    clock.t += 1  # 10 s after the first line
    p.tick()
    lines = out.getvalue().splitlines()
    assert lines[-1] == "probing vLLM 0.10.1: 9/7 units (100%), elapsed 10s"
    clock.t += 3
    p.tick()  # not due
    assert len(out.getvalue().splitlines()) == 2
    p.close()
    assert (
        out.getvalue().splitlines()[-1]
        == "probing vLLM 0.10.1: 9/7 units (100%), done, elapsed 13s"
    )
    assert "\r" not in out.getvalue()


def test_on_a_terminal_a_bar_redrawn_in_place() -> None:
    p, out, clock = make(tty=True)
    clock.t += 1
    p.update(advance=3, item="running ops.cu")
    clock.t += 0.05  # redraws are throttled too
    p.update(advance=1)
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") == 2
    assert text.endswith(
        "\r[########............] probing vLLM 0.10.1: 3/7 units (42%), running ops.cu, "
        "elapsed 1s, ETA 1s"
    )
    clock.t += 1
    p.close()
    last = out.getvalue().split("\r")[-1]
    assert last.rstrip(" \n") == "probing vLLM 0.10.1: 4/7 units (57%), done, elapsed 2s"
    assert out.getvalue().endswith("\n")


def test_the_same_words_in_both() -> None:
    seen = []
    for tty in (False, True):
        p, out, clock = make(tty=tty)
        clock.t += 20
        p.update(advance=2, item="running ops.cu")
        seen.append(out.getvalue().replace("\r", "\n").splitlines()[-1])
    assert seen[1] == "[#####...............] " + seen[0]


def test_interrupted_and_failed_steps_say_so() -> None:
    p, out, _ = make()
    with pytest.raises(KeyboardInterrupt), p:
        raise KeyboardInterrupt
    assert out.getvalue().splitlines()[-1].endswith("interrupted, elapsed 0s")
    p, out, _ = make()
    with pytest.raises(ValueError), p:
        raise ValueError
    assert ", failed, " in out.getvalue().splitlines()[-1]


def test_each_reports_concurrent_items() -> None:
    p, _, _ = make(total=2)
    inside = threading.Event()
    seen: list[str] = []

    def work(name: str) -> str:
        seen.append(p.line())
        inside.set()
        return name.upper()

    assert [p.each(work, str)(n) for n in ("a.cu", "b.cu")] == ["A.CU", "B.CU"]
    assert "running a.cu" in seen[0] and "1/2 units (50%), running b.cu" in seen[1]
    assert p.done == 2 and p.running == []


def test_download_bytes_counts_a_finished_temp_copy_once(tmp_path: Path) -> None:
    (tmp_path / "a.whl").write_bytes(b"x" * 100)
    (tmp_path / "pip-tmp" / "unpack").mkdir(parents=True)
    (tmp_path / "pip-tmp" / "unpack" / "a.whl").write_bytes(b"x" * 100)  # pip's copy
    (tmp_path / "pip-tmp" / "unpack" / "b.whl").write_bytes(b"x" * 30)  # still coming
    done, newest = progress.download_bytes(tmp_path)
    assert done == 130 and newest in ("a.whl", "b.whl")


def test_watching_reports_a_growing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", out)
    monkeypatch.setattr(progress, "INTERVAL_S", 0.01)
    with progress.watching("downloading x", tmp_path, total=2 * 2**20) as p:
        (tmp_path / "x.deb").write_bytes(b"x" * 2**20)
        for _ in range(200):
            if p.done:
                break
            threading.Event().wait(0.01)
        assert p.done == 2**20 and p.item == "x.deb"
    assert out.getvalue().splitlines()[-1].startswith("downloading x: 1/2 MiB (50%), done")


def test_iterate() -> None:
    out = io.StringIO()
    items = list(progress.iterate(["a.deb", "b.deb"], "unpacking", "debs", str, stream=out))
    assert items == ["a.deb", "b.deb"]
    assert out.getvalue().splitlines()[-1] == "unpacking: 2/2 debs (100%), done, elapsed 0s"


def test_a_step_that_reports_nothing_still_prints_every_interval() -> None:
    # The real clock, a short interval: the heartbeat writes lines while nothing happens.
    out = io.StringIO()
    p = Progress("compiling ops.cu", 1, "units", stream=out, tty=False, interval=0.05)
    threading.Event().wait(0.5)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4, lines
    assert all(line.startswith("compiling ops.cu: ") for line in lines)


def test_a_bar_never_wraps_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    _, out, _ = make(tty=True)
    assert (
        out.getvalue() == "\r" + "[....................] probing vLLM 0.10.1: 0/7 units (0%)"[:39]
    )


def test_iterate_says_failed_when_the_loop_body_raises() -> None:
    out = io.StringIO()
    with pytest.raises(ValueError):
        for _ in progress.iterate(["a.deb"], "unpacking", "debs", str, stream=out):
            raise ValueError("dpkg failed")
    assert out.getvalue().splitlines()[-1] == "unpacking: 0/1 debs (0%), failed, elapsed 0s"


def test_every_calls_while_the_block_runs_and_stops_after() -> None:
    calls: list[float] = []
    with progress.every(lambda: calls.append(time.monotonic()), 0.01):
        time.sleep(0.2)
    n = len(calls)
    assert n >= 3
    time.sleep(0.05)
    assert len(calls) == n  # the thread is gone
