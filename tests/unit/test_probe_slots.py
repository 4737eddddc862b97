"""The probe's compile slots (stages/probe/runner.Slots): the probes of cells side by side
run no more jobs together than one probe would, and the earlier cell's jobs go first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from vllm_matrix.stages.probe import runner


def counting_job(seconds: float) -> tuple[Callable[[int], None], list[int]]:
    """A job that sleeps ``seconds``, and the most of its calls that ran at once."""
    held, peak, lock = [0], [0], threading.Lock()

    def job(_: int) -> None:
        with lock:
            held[0] += 1
            peak[0] = max(peak[0], held[0])
        time.sleep(seconds)
        with lock:
            held[0] -= 1

    return job, peak


def test_no_more_than_size_at_once_across_two_run_alls() -> None:
    job, peak = counting_job(0.05)
    cells = [threading.Thread(target=runner.run_all, args=(job, range(6), 2)) for _ in range(2)]
    for t in cells:
        t.start()
    for t in cells:
        t.join(30)
    assert peak[0] == 2  # 4 worker threads, 2 slots


def test_a_freed_slot_goes_to_the_earlier_cell() -> None:
    slots = runner.Slots()
    order: list[str] = []
    first = threading.Event()

    def take(name: str, priority: int, started: threading.Event | None = None) -> None:
        with slots.hold(1, priority):
            order.append(name)
            if started is not None:
                started.set()
                time.sleep(0.3)  # the others queue meanwhile

    holder = threading.Thread(target=take, args=("holder", 5, first))
    holder.start()
    first.wait(5)
    late = threading.Thread(target=take, args=("cell 3", 3))
    late.start()
    time.sleep(0.05)
    early = threading.Thread(target=take, args=("cell 2", 2))
    early.start()
    for t in (holder, late, early):
        t.join(10)
    assert order == ["holder", "cell 2", "cell 3"]


def test_ctrl_c_wakes_the_waiters() -> None:
    slots = runner.Slots()
    got: list[BaseException] = []
    busy = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with slots.hold(1, 0):
            busy.set()
            release.wait(10)

    def wait() -> None:
        try:
            with slots.hold(1, 1):
                pass
        except KeyboardInterrupt as exc:
            got.append(exc)

    a = threading.Thread(target=hold)
    a.start()
    busy.wait(5)
    b = threading.Thread(target=wait)
    b.start()
    runner._STOP.set()
    try:
        b.join(5)
        assert not b.is_alive() and len(got) == 1
    finally:
        runner._STOP.clear()
        release.set()
        a.join(5)


@pytest.mark.parametrize("jobs", [1, 3])
def test_one_run_all_uses_its_jobs(jobs: int) -> None:
    job, peak = counting_job(0.03)
    runner.run_all(job, range(8), jobs)
    assert peak[0] == jobs
