"""Provision while probing: while a cell probes (CPU), one background thread fetches what the
cells after it will need -- their sdists, the advice's release facts, toolkits, torch envs --
through the same cached, inter-process-locked providers the stages call, so those stages
find their results in the cache (a stage asking for an item the prefetcher is making waits
on its lock, then hits).

Nothing the prefetcher does is an answer: what it makes is only the cache's; a failure in
it is dropped (the stage does the work again and reports as it always does). It walks the
cells in matrix order, only those after the one the foreground is on, one item at a time,
and stops between items once asked (Ctrl-C, the run's end); its commands die with it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vllm_matrix.infra import progress
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import PASS, PREDICTED_FAIL, WARN
from vllm_matrix.knowledge import toolchains as knowledge
from vllm_matrix.pipeline import advice
from vllm_matrix.sources import releases
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import env as env_mod
from vllm_matrix.stages import facts as facts_mod
from vllm_matrix.stages import preflight, toolkit
from vllm_matrix.stages.preflight import Host

# The providers that download or unpack (system and conda-prefix only look at a local install).
FETCHED = ("debian", "pypi")
FOREGROUND = "made by the running cell"


@dataclass
class Prefetcher:
    """The background thread. ``at(n)``: the foreground starts cell ``n`` (the prefetcher
    then works on cells after it only). ``stop()``: ends it at its next item."""

    cells: Sequence[Cell]
    root: Path
    stages: tuple[str, ...]
    force: bool = False
    host: Host | None = None
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
    width: int = 1  # cells the foreground runs side by side (run_matrix's at_once)
    _stop: threading.Event = field(default_factory=threading.Event)
    _current: int = 1
    _got: dict[str, object | None] = field(default_factory=dict)  # by key: fetched once
    _envs: dict[str, tuple[str, str | None, str] | None] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    failed: list[str] = field(default_factory=list)  # what failed (the stage redoes it)
    fetched: list[str] = field(default_factory=list)  # what it did, in order

    def start(self) -> Prefetcher:
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()
        return self

    def at(self, n: int) -> None:
        self._current = max(self._current, n)  # cells side by side may start in any order

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        with progress.muted():
            for n, cell in enumerate(self.cells, 1):
                if self._stop.is_set():
                    return
                if n <= self._current:  # the foreground is there: it fetches for itself
                    continue
                self._cell(n, cell)

    def _foreground(self) -> set[str]:
        """The toolkits and envs of the cells the foreground is on: it makes them itself, and a
        prefetch of the same item would only wait on its lock. Skipped, the prefetcher goes
        on to the next item while the foreground unpacks (one core: xz), so the other
        core fetches what later cells need before the probe wants both."""
        keys = set()
        for c in self.cells[max(0, self._current - self.width) : self._current]:
            keys.add(_toolkit_key(c))
            env = self._env_of(c)
            if env is not None:
                keys.add(env[2])
        return keys

    def _env_of(self, cell: Cell) -> tuple[str, str | None, str] | None:
        """The cell's torch env: (what to install, its index, the item's key); None where the
        env stage will say SKIPPED (no index for the variant). Asked once per cell: a
        variant's index is read over the network."""
        if cell.id not in self._envs:
            try:
                spec, url = env_mod.torch_source(cell)
            except Exception:
                self._envs[cell.id] = None
            else:
                key = f"env torch {spec} py{cell.python} ({self._variant})"
                self._envs[cell.id] = (spec, url, key)
        return self._envs[cell.id]

    @property
    def _variant(self) -> str:
        """The torch env the walk's stages need: a build's full one, else headers."""
        return "full" if "build" in self.stages else "headers"

    def _step(self, n: int, what: str, key: str, fetch: Callable[[], object]) -> object | None:
        """Fetch one item; None when it failed or the prefetcher is stopped (the stage then
        does it itself and says why, as it always does); ``FOREGROUND`` when the running
        cell makes it (what follows it is still fetched)."""
        if self._stop.is_set() or n <= self._current:
            return None
        if key in self._foreground():
            return FOREGROUND
        if key in self._got:
            return self._got[key]
        self._got[key] = None
        self.echo(f"prefetching {what} for cell {n}/{len(self.cells)}")
        t0 = time.monotonic()
        try:
            got = fetch()
        except Exception as exc:  # the stage will do it again and report as always
            why = exc.message if isinstance(exc, MatrixError) else f"{type(exc).__name__}: {exc}"
            self.failed.append(key)
            if not self._stop.is_set():
                self.echo(f"prefetching {what} for cell {n}/{len(self.cells)}: not had ({why})")
            return None
        self.fetched.append(key)
        self._got[key] = got if got is not None else True
        took = time.monotonic() - t0
        if took >= 1.0:
            self.echo(f"prefetched {what} for cell {n}/{len(self.cells)} ({took:.1f}s)")
        return self._got[key]

    def _cell(self, n: int, cell: Cell) -> None:
        spec = cell.source_spec
        tree = self._step(n, f"source {spec}", f"source {spec}", lambda: source.get_tree(spec))
        if not isinstance(tree, source.SourceTree):
            return
        if "preflight" in self.stages and not self._preflight(n, cell, tree):
            return
        if cell.env == "current" or "toolkit" not in self.stages:
            return
        what = _toolkit_key(cell)
        if cell.provider in FETCHED:
            fetch = self._step(n, what, what, lambda: toolkit.provide(cell.provider, cell.cuda))
        else:  # a local install: its check is quick; without it the cell needs no env
            fetch = self._quiet(lambda: toolkit.provide(cell.provider, cell.cuda))
        if fetch is None or "env" not in self.stages:
            return
        env = self._env_of(cell)
        if env is None:  # SKIPPED at the env stage (no index for the variant): nothing to do
            return
        spec_, url, what = env
        self._step(
            n,
            what,
            what,
            lambda: env_mod.provide(cell.python, spec_, self._variant, torch_index=url),
        )

    def _quiet(self, fn: Callable[[], object]) -> object | None:
        try:
            return fn()
        except Exception:
            return None

    def _preflight(self, n: int, cell: Cell, tree: source.SourceTree) -> bool:
        """Whether the cell goes past preflight (as the runner decides); for a predicted
        failure, the advice's release facts are read into the cache on the way (the stage
        then computes the same advice from them: the text is its own)."""
        try:
            f = facts_mod.read_facts(tree.root, tree.version)
            if self.host is None:
                self.host = preflight.detect_host()
            found = preflight.check(
                cell, f, knowledge.load(), tree.root, self.host, releases.pinned()
            )
        except Exception:  # the stage will say what it is
            return True
        status = preflight.status_of(found)
        if status == PREDICTED_FAIL:
            have = advice.Have(cell.torch, cell.cuda, cell.arch, cell.python, cell.vllm)
            self._step(
                n,
                f"the advice's release facts ({cell.id})",
                f"advice {cell.id}",
                lambda: advice.adviser_for(self.root).advise(have),
            )
        force = self.force or bool(cell.options.force)
        return status in (PASS, WARN) or (force and status == PREDICTED_FAIL)


def _toolkit_key(cell: Cell) -> str:
    return f"toolkit {cell.provider}-{cell.cuda}"


__all__ = ["FETCHED", "Prefetcher"]
