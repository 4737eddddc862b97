"""Progress of the long steps: a bar on a terminal, a line every ~10 s otherwise (CI logs).

Both say the same words (one line each)::

    downloading 31 CUDA .debs: 412/1630 MiB (25%), libcublas12_12.4.deb, elapsed 1m05s, ETA 3m13s
    probing vLLM 0.10.1 (front-end, 2 at a time): 3/7 units (42%), running ops.cu, elapsed
    2m10s, ETA 2m53s
    creating env py3.12 (full): 1236 MiB, installing torch 2.6.0, elapsed 2m10s

Where the step gives no count (uv installing torch), ``watch`` polls something that
grows (the download dir, the env dir) so the line still moves. Off a terminal the first
line comes at once, then one every ``interval`` seconds, and a last one when it ends.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TypeVar

INTERVAL_S = 10.0  # off a terminal: one line this often
REFRESH_S = 0.25  # on a terminal: redraw at most this often
POLL_S = 2.0  # watch(): how often to look at what grows, on a terminal
BAR_WIDTH = 20
BYTES = "bytes"

T = TypeVar("T")
R = TypeVar("R")


def duration(seconds: float) -> str:
    """45s, 1m05s, 2h03m."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def amount(done: float, total: float | None, unit: str) -> str:
    """``412/1630 MiB`` or ``3/7 units``; without a total just the count."""
    if unit == BYTES:
        big = (total or done) >= 10 * 2**30
        scale, name = (2**30, "GiB") if big else (2**20, "MiB")
        fmt = "{:.1f}" if big else "{:.0f}"
        d = fmt.format(done / scale)
        return f"{d}/{fmt.format(total / scale)} {name}" if total else f"{d} {name}"
    d = f"{done:g}"
    text = f"{d}/{total:g}" if total else d
    return f"{text} {unit}".rstrip()


class Progress:
    """One long step's progress. Thread-safe: ``start``/``finish`` of concurrent items
    (probe units on several threads), ``update`` from a watcher thread."""

    def __init__(
        self,
        what: str,
        total: float | None = None,
        unit: str = "",
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float | None = None,
        heartbeat: bool | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        if stream is None:
            stream = _Discard() if getattr(_MUTED, "on", False) else sys.stderr
        self.stream = stream
        self.tty = _isatty(self.stream) if tty is None else tty
        self.clock = clock
        self.interval = INTERVAL_S if interval is None else interval
        self.done: float = 0
        self.item = ""
        self.running: list[str] = []
        self.t0 = clock()
        self._last: float | None = None  # when the last line/redraw was written
        self._drawn = 0  # width of the bar on screen (terminal)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.closed = False
        self._ending = False
        self._emit(force=True)
        # A unit compiling for minutes reports nothing: the line must still come (and the
        # elapsed time move). Off by default under an injected clock (tests tick by hand).
        if heartbeat if heartbeat is not None else clock is time.monotonic:
            self._background(self.tick, min(1.0, REFRESH_S if self.tty else self.interval))

    # ---- the words

    def line(self) -> str:
        with self._lock:
            now = self.clock()
            elapsed = now - self.t0
            parts: list[str] = []
            if self.total or self.done:
                text = amount(self.done, self.total, self.unit)
                if self.total:
                    text += f" ({min(100, int(100 * self.done / self.total))}%)"
                parts.append(text)
            item = self.item or (f"running {', '.join(self.running)}" if self.running else "")
            if item:
                parts.append(item)
            parts.append(f"elapsed {duration(elapsed)}")
            if self.total and 0 < self.done < self.total and elapsed > 0 and not self._ending:
                parts.append(f"ETA {duration(elapsed / self.done * (self.total - self.done))}")
            return f"{self.what}: " + ", ".join(parts)

    def bar(self) -> str:
        if not self.total:
            return ""
        full = int(BAR_WIDTH * min(1.0, self.done / self.total))
        return "[" + "#" * full + "." * (BAR_WIDTH - full) + "] "

    # ---- reporting

    def update(
        self, done: float | None = None, *, item: str | None = None, advance: float = 0
    ) -> None:
        with self._lock:
            if done is not None:
                self.done = done
            self.done += advance
            if item is not None:
                self.item = item
            self._emit()

    def start(self, name: str) -> None:
        """An item began (several may run at once)."""
        with self._lock:
            self.running.append(name)
            self._emit()

    def finish(self, name: str, advance: float = 1) -> None:
        with self._lock:
            if name in self.running:
                self.running.remove(name)
            self.done += advance
            self._emit()

    def tick(self) -> None:
        """Write a line if one is due (the heartbeat of a step that reports nothing)."""
        with self._lock:
            self._emit()

    def _emit(self, force: bool = False) -> None:
        if self.closed:
            return
        now = self.clock()
        due = REFRESH_S if self.tty else self.interval
        if not force and self._last is not None and now - self._last < due:
            return
        self._last = now
        if self.tty:
            # A line wider than the terminal wraps, and "\r" then redraws only its tail.
            text = (self.bar() + self.line())[: shutil.get_terminal_size().columns - 1]
            self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
            self._drawn = len(text)
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self, status: str | None = None) -> None:
        """The last line: ``<what>: <status>, k/N …, elapsed``. Without a status, from
        the exception being handled (in a ``finally``): interrupted, failed, else done."""
        if status is None:
            exc = sys.exc_info()[0]
            status = (
                "done"
                if exc is None
                else ("interrupted" if issubclass(exc, KeyboardInterrupt) else "failed")
            )
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            if self.closed:
                return
            self.item, self.running, self._ending = status, [], True
            text = self.line()
            if self.tty:
                self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)) + "\n")
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self.closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close("done")
        elif exc_type is KeyboardInterrupt:
            self.close("interrupted")
        else:
            self.close("failed")

    # ---- helpers

    def each(self, fn: Callable[[T], R], name: Callable[[T], str]) -> Callable[[T], R]:
        """``fn`` reporting each call as an item: running while it runs, done after."""

        def run(x: T) -> R:
            n = name(x)
            self.start(n)
            try:
                return fn(x)
            finally:
                self.finish(n)

        return run

    def watch(self, poll: Callable[[], tuple[float | None, str | None]]) -> None:
        """Poll ``poll() -> (done, item)`` in the background until closed: for a step that
        reports nothing itself (a download, an install), something that grows."""

        def look() -> None:
            with contextlib.suppress(OSError):
                done, item = poll()
                self.update(done, item=item)

        self._background(look, POLL_S if self.tty else self.interval)

    def _background(self, fn: Callable[[], None], every: float) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                fn()

        t = threading.Thread(target=loop, name=f"progress: {self.what}", daemon=True)
        self._threads.append(t)
        t.start()


@contextlib.contextmanager
def every(fn: Callable[[], object], seconds: float) -> Iterator[None]:
    """Call ``fn`` every ``seconds`` on a daemon thread while the block runs (a heartbeat
    beside a subprocess whose own output goes quiet for minutes)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            fn()

    t = threading.Thread(target=loop, name="progress: heartbeat", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


class _Discard(io.StringIO):
    """Where a muted thread's progress goes."""

    def write(self, s: str) -> int:
        return len(s)


_MUTED = threading.local()


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """No progress from this thread (a background prefetch: its bars would garble the
    foreground's; it says in one line of its own what it does)."""
    _MUTED.on = True
    try:
        yield
    finally:
        _MUTED.on = False


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def iterate(
    items: Iterable[T],
    what: str,
    unit: str,
    name: Callable[[T], str],
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """``items`` one by one, reporting ``k/N <unit>`` and the one being done."""
    seq = list(items)
    with Progress(what, len(seq), unit, stream=stream) as p:
        for x in seq:
            p.update(item=name(x))
            yield x
            p.update(advance=1)


def download_bytes(directory: Path, suffix: str = "") -> tuple[int, str | None]:
    """Bytes under ``directory`` (of the files ending in ``suffix``) and the name of the
    file written last: a download in progress. A file also present at the top (a temp copy
    pip or apt moved there when it finished) counts once."""
    top: dict[str, int] = {}
    below: dict[str, int] = {}
    newest, newest_t = None, 0.0
    for root, _dirs, files in os.walk(directory):
        for f in files:
            if not f.endswith(suffix):
                continue
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:  # moved or removed meanwhile
                continue
            (top if root == str(directory) else below)[f] = st.st_size
            if st.st_mtime >= newest_t:
                newest, newest_t = f, st.st_mtime
    total = sum(top.values()) + sum(v for k, v in below.items() if k not in top)
    return total, newest


def watch_dir(
    what: str,
    directory: Path,
    total: float | None = None,
    item: str | None = None,
    suffix: str = "",
) -> Progress:
    """Progress of whatever writes into ``directory`` (a download, an install): bytes so
    far of the files ending in ``suffix``, and ``item`` or else the file written last. The
    caller closes it (``finally``)."""

    def poll() -> tuple[float | None, str | None]:
        done, newest = download_bytes(directory, suffix)
        return done, item or newest

    p = Progress(what, total, BYTES)
    if item:
        p.update(item=item)
    p.watch(poll)
    return p


@contextlib.contextmanager
def watching(
    what: str, directory: Path, total: float | None = None, item: str | None = None
) -> Iterator[Progress]:
    """``watch_dir`` as a context."""
    with watch_dir(what, directory, total, item) as p:
        yield p
        p.update(download_bytes(directory)[0])


__all__ = [
    "BYTES",
    "INTERVAL_S",
    "Progress",
    "amount",
    "download_bytes",
    "duration",
    "every",
    "iterate",
    "muted",
    "watch_dir",
    "watching",
]
