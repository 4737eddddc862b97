"""The background prefetcher (pipeline/prefetch.py) with stand-in providers: what it fetches
for which cell, that its failures are nobody's answer, and that it stops when told."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vllm_matrix.infra import progress
from vllm_matrix.infra.config import Cell, Options, load_matrix
from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.infra.results import Finding
from vllm_matrix.pipeline import context, plan, prefetch, runner
from vllm_matrix.sources.sdist import SourceTree
from vllm_matrix.stages.preflight import Host

HOST = Host(gcc_major=12, system_cuda={}, conda_prefix=None)
PROBE = tuple(s.name for s in plan.cut("probe"))


def cell(vllm: str, torch: str = "2.6.0", cuda: str = "12.4", **kw: Any) -> Cell:
    provider, arch = kw.pop("provider", "debian"), kw.pop("arch", ("9.0",))
    return Cell(vllm, torch, cuda, provider, "3.12", arch, **kw)


class Fakes:
    """Stand-in providers: each call is logged; ``fail`` names what raises; ``doomed`` the
    vLLM versions preflight predicts to fail."""

    def __init__(
        self, mp: pytest.MonkeyPatch, fail: tuple[str, ...] = (), doomed: tuple[str, ...] = ()
    ):
        self.calls: list[str] = []
        self.fail, self.doomed = fail, doomed
        self.gate: threading.Event | None = None  # set: fetches wait on it
        mp.setattr(prefetch.source, "get_tree", self.tree)
        mp.setattr(prefetch.toolkit, "provide", self.toolkit)
        mp.setattr(prefetch.env_mod, "provide", self.env)
        mp.setattr(prefetch.facts_mod, "read_facts", lambda root, version: version)
        mp.setattr(prefetch.preflight, "check", self.check)
        mp.setattr(prefetch.advice, "adviser_for", lambda root: self)

    def _log(self, what: str) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append(what)
        if what in self.fail:
            raise NotAvailable(f"no {what}", fix="none")

    def tree(self, spec: str) -> SourceTree:
        self._log(f"source {spec}")
        return SourceTree(spec, Path("/nonexistent"), "test")

    def toolkit(self, provider: str, cuda: str) -> object:
        self._log(f"toolkit {provider}-{cuda}")
        return object()

    def env(self, python: str, torch: str, variant: str, torch_index: str | None) -> object:
        self._log(f"env {torch} {variant}")
        return object()

    def check(self, c: Cell, *args: Any) -> list[Finding]:
        return [Finding("torch-api", "fail", "no", "fix")] if c.vllm in self.doomed else []

    def advise(self, have: Any) -> object:
        self._log(f"advice {have.vllm}")
        return object()


def walk(cells: list[Cell], **kw: Any) -> tuple[prefetch.Prefetcher, list[str]]:
    said: list[str] = []
    p = prefetch.Prefetcher(
        cells, Path("/nonexistent"), kw.pop("stages", PROBE), host=HOST, echo=said.append, **kw
    )
    return p, said


def two_cells(where: Path) -> Path:
    """A matrix.toml of two cells, each with a toolkit of its own (the running cell's own
    the prefetcher leaves to it: with one toolkit it would have nothing to fetch)."""
    m = where / "matrix.toml"
    m.write_text(
        "".join(
            f'[[cell]]\nvllm = "{v}"\ntorch = "2.6.0"\ncuda = "{cuda}"\nprovider = "debian"\n'
            f'python = "3.12"\narch = ["9.0"]\n'
            for v, cuda in (("0.8.5", "12.4"), ("0.9.0", "12.8"))
        )
    )
    return m


def test_it_fetches_for_the_cells_after_the_running_one_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = Fakes(monkeypatch)
    cells = [
        cell("0.8.5"),
        cell("0.8.5", arch=("12.0",)),
        cell("0.10.1", "2.7.1"),
        cell("0.20.0", "2.11.0", "13.0", provider="pypi"),
    ]
    p, said = walk(cells)
    p._run()  # the foreground is on cell 1: it fetches its own
    # cell 1's toolkit and env are left to it (the same for cell 2, and cell 3's toolkit):
    # the prefetcher goes on to what it would otherwise wait for
    assert f.calls == [
        "source 0.8.5",
        "source 0.10.1",
        "env 2.7.1 headers",
        "source 0.20.0",
        "toolkit pypi-13.0",
        "env 2.11.0 headers",
    ]
    assert not any("debian-12.4" in line for line in said)
    assert p.failed == []
    p2, _ = walk(cells)
    p2.at(2)  # cell 2 (the foreground now) makes debian 12.4 for cell 3 too
    f.calls.clear()
    p2._run()
    assert f.calls == [
        "source 0.10.1",
        "env 2.7.1 headers",
        "source 0.20.0",
        "toolkit pypi-13.0",
        "env 2.11.0 headers",
    ]


def test_a_failure_is_dropped_and_what_needs_it_is_not_fetched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = Fakes(monkeypatch, fail=("toolkit system-12.8", "source 0.9.0"))
    cells = [
        cell("0.8.5"),
        cell("0.10.2", "2.8.0", "12.8", provider="system"),
        cell("0.9.0"),
        cell("0.10.1", "2.7.1"),
    ]
    p, said = walk(cells)
    p._run()  # no exception: the stages do it again and report as always
    assert f.calls == [
        "source 0.10.2",
        "toolkit system-12.8",  # a local install: no env without it
        "source 0.9.0",
        "source 0.10.1",
        "env 2.7.1 headers",  # debian 12.4: cell 1's, made by the foreground
    ]
    assert p.failed == ["source 0.9.0"]
    assert any("source 0.9.0 for cell 3/4: not had (no source 0.9.0)" in s for s in said)


def test_a_predicted_failure_reads_the_advice_and_stops_there_unless_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = Fakes(monkeypatch, doomed=("0.10.1",))
    forced = cell("0.10.1", "2.7.1", options=Options(force=True))
    cells = [cell("0.8.5"), cell("0.10.1", "2.7.1"), forced]
    p, _ = walk(cells)
    p._run()
    assert f.calls == [
        "source 0.10.1",
        "advice 0.10.1",  # not forced: preflight ends the cell (the same advice for cell 3)
        "env 2.7.1 headers",  # forced: it goes on (debian 12.4 is cell 1's)
    ]


def test_only_the_stages_of_the_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    f = Fakes(monkeypatch)
    cells = [cell("0.8.5"), cell("0.10.1", "2.7.1")]
    p, _ = walk(cells, stages=tuple(s.name for s in plan.cut("preflight")))
    p._run()
    assert f.calls == ["source 0.10.1"]
    p, _ = walk(cells, stages=tuple(s.name for s in plan.cut("build")))
    p._run()
    assert f.calls[1:] == ["source 0.10.1", "env 2.7.1 full"]


def test_it_skips_a_cell_the_foreground_has_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    f = Fakes(monkeypatch)
    p, _ = walk([cell("0.8.5"), cell("0.9.0"), cell("0.10.1")])
    p.at(2)
    p._run()
    assert f.calls[0] == "source 0.10.1"


def test_stop_ends_it_at_its_next_item(monkeypatch: pytest.MonkeyPatch) -> None:
    f = Fakes(monkeypatch)
    f.gate = threading.Event()
    p, _ = walk([cell("0.8.5"), cell("0.9.0"), cell("0.10.1")])
    p.start()
    time.sleep(0.1)
    p.stop()
    f.gate.set()
    p.join(5)
    assert p._thread is not None and not p._thread.is_alive()
    assert f.calls == ["source 0.9.0"]  # the item it was in, then nothing


def test_its_progress_bars_are_muted_on_its_thread_only() -> None:
    seen: list[bool] = []

    def bar() -> None:
        with progress.muted():
            seen.append(
                isinstance(progress.Progress("x", heartbeat=False).stream, progress._Discard)
            )

    t = threading.Thread(target=bar)
    t.start()
    t.join()
    assert seen == [True]
    assert not isinstance(progress.Progress("x", heartbeat=False).stream, progress._Discard)


def test_ctrl_c_in_a_matrix_run_stops_the_prefetcher(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[prefetch.Prefetcher] = []

    def start(self: prefetch.Prefetcher) -> prefetch.Prefetcher:
        started.append(self)
        return self  # not started: only its stop is looked at

    monkeypatch.setattr(prefetch.Prefetcher, "start", start)

    def interrupted(*a: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_cell", interrupted)
    m = two_cells(tmp_path)
    ws = context.Workspace(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run_matrix(
            load_matrix(m), ws, "probe", echo=lambda s: None, host=HOST, mach={}, prefetch=True
        )
    assert time.monotonic() - t0 < 5
    assert len(started) == 1 and started[0].stopped


def test_without_prefetch_no_thread_starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(prefetch.Prefetcher, "start", lambda self: pytest.fail("started"))
    monkeypatch.setattr(runner, "run_cell", lambda *a, **kw: [])
    monkeypatch.setattr(runner.results, "verdict_of", lambda stages: _Verdict())
    m = two_cells(tmp_path)
    done = runner.run_matrix(
        load_matrix(m), context.Workspace(tmp_path), "probe", echo=lambda s: None, mach={}
    )
    assert len(done) == 2


class _Verdict:
    label, depth = "PASS", "probe"


def test_the_flag_reaches_the_runner() -> None:
    from vllm_matrix import cli

    assert cli.parser().parse_args(["run", "--no-prefetch"]).no_prefetch is True
    assert cli.parser().parse_args(["run"]).no_prefetch is False


def test_two_readers_of_a_release_read_its_tree_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The prefetched advice and the stage's: the second waits for the first's facts."""
    from packaging.version import Version

    from vllm_matrix.infra.index import IndexFile
    from vllm_matrix.knowledge import toolchains
    from vllm_matrix.pipeline import mapping

    root = tmp_path / "vllm"
    (root / "csrc").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text('set(TORCH_SUPPORTED_VERSION_CUDA "2.6.0")\n')
    (root / "PKG-INFO").write_text("Version: 0.8.5\n")
    sd = IndexFile("vllm-0.8.5.tar.gz", "u", "ab" * 32, Version("0.8.5"), "sdist", False)
    read: list[str] = []

    def sdist_tree(version: str, cache: Path) -> SourceTree:
        read.append(version)
        time.sleep(0.3)  # the other reader arrives meanwhile
        return SourceTree(version, root, "test")

    monkeypatch.setattr(mapping.source, "resolve_sdist", lambda v, r: sd)
    monkeypatch.setattr(mapping.source, "sdist_tree", sdist_tree)
    know = toolchains.load()
    got: list[mapping.ReleaseFacts] = []
    readers = [
        threading.Thread(target=lambda: got.append(mapping.release_facts("0.8.5", know, tmp_path)))
        for _ in range(2)
    ]
    for t in readers:
        t.start()
    for t in readers:
        t.join(10)
    assert read == ["0.8.5"]
    assert len(got) == 2 and got[0].facts == got[1].facts and got[0].gates == got[1].gates


def test_ctrl_c_stops_a_run_with_a_prefetch_under_way_in_seconds(tmp_path: Path) -> None:
    """A SIGINT to the running process alone while the foreground runs a stage and the
    prefetcher waits on a command: the process ends in seconds, the command with it. It runs
    in a process of its own (as test_probe_stage's Ctrl-C test does, and for its reasons)."""
    import signal
    import subprocess
    import sys

    from vllm_matrix.infra import proc

    m = two_cells(tmp_path)
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from pathlib import Path\n"
        "from vllm_matrix.infra import proc\n"
        "from vllm_matrix.infra.config import load_matrix\n"
        "from vllm_matrix.pipeline import context, prefetch, runner\n"
        "from vllm_matrix.stages.preflight import Host\n"
        "prefetch.source.get_tree = lambda s: prefetch.source.SourceTree(s, Path('/'), 't')\n"
        "prefetch.preflight.check = lambda *a: []\n"
        "prefetch.facts_mod.read_facts = lambda *a: None\n"
        "prefetch.toolkit.provide = lambda p, c: proc.run(['sleep', '120'])\n"
        "def stage(*a, **kw):\n"
        "    while True:\n"
        "        time.sleep(0.1)\n"
        "runner.run_cell = stage\n"
        "host = Host(gcc_major=12, system_cuda={}, conda_prefix=None)\n"
        "runner.run_matrix(load_matrix(Path(sys.argv[1])), context.Workspace(Path(sys.argv[2])),\n"
        "                  'probe', echo=print, host=host, mach={}, prefetch=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(m), str(tmp_path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )

    def sleeps() -> list[int]:
        return [
            p
            for p in proc.descendants(child.pid)
            if Path(f"/proc/{p}/cmdline").exists()
            and Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\0")
        ]

    deadline = time.monotonic() + 60
    while not sleeps() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    running = sleeps()
    assert running, f"the prefetch never started: {child.stderr.read() if child.stderr else ''}"
    t = time.monotonic()
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert time.monotonic() - t < 10, "Ctrl-C took longer than 10 s to stop the run"
    assert "KeyboardInterrupt" in err
    time.sleep(0.5)
    assert not [p for p in running if alive(p)]


def alive(pid: int) -> bool:
    """Running: a process killed after its parent ended may stay a zombie a while, until
    whatever adopted it reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
