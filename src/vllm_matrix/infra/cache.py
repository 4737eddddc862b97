"""The project cache: where it lives, locks, atomic writes, content-addressed blobs.

Everything written here is either complete or absent: files are written to a
temporary name in the same directory and renamed; directories are built under a
temporary name and renamed as the last step. Writers of the same entry take an
exclusive lock so two runs never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vllm_matrix.infra.errors import NO_SPACE_FIX, ToolError


def cache_root() -> Path:
    """VLLM_MATRIX_CACHE, else $XDG_CACHE_HOME/vllm-matrix, else ~/.cache/vllm-matrix."""
    explicit = os.environ.get("VLLM_MATRIX_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "vllm-matrix").resolve()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on ``<path>.lock`` (blocks until free)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600; a written file gets the mode open() would give it (0644 under the
# usual umask 022), or keeps the mode of the file it replaces (an executable stays one).
_NEW_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = _NEW_FILE_MODE
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def blob_path(root: Path, sha256: str) -> Path:
    return root / "blobs" / "sha256" / sha256[:2] / sha256


def pid_alive(pid: int) -> bool:
    """Whether a process of that id runs (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(parent: Path, name: str, suffix: str, *, all_of_them: bool = False) -> list[Path]:
    """Scratch dirs of ``name`` that a killed run left in ``parent``: ``.<name>.<pid>.*<suffix>``
    whose pid is gone (``all_of_them``: whatever the pid, and the names made before the pid
    was in them -- for a caller that holds ``name``'s lock, so nothing else can be using
    them)."""
    if not parent.is_dir():
        return []
    pat = re.compile(rf"\.{re.escape(name)}\.(?:(\d+)\.)?[A-Za-z0-9_]{{8}}{re.escape(suffix)}")
    out = []
    for p in parent.iterdir():
        m = pat.fullmatch(p.name)
        if m is None or p.is_symlink() or not p.is_dir():
            continue
        if all_of_them or (m.group(1) is not None and not pid_alive(int(m.group(1)))):
            out.append(p)
    return out


def sweep(parent: Path, name: str, suffix: str, *, all_of_them: bool = False) -> list[Path]:
    """Remove ``leftovers`` (a killed run's staging, download or trash dirs); the removed."""
    found = leftovers(parent, name, suffix, all_of_them=all_of_them)
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return found


def scratch_dir(parent: Path, name: str, suffix: str = "") -> Path:
    """A fresh ``.<name>.<pid>.XXXXXXXX<suffix>`` dir in ``parent`` (the pid lets a later
    run tell a killed run's leftover from one in use); dead runs' leftovers are removed
    first."""
    parent.mkdir(parents=True, exist_ok=True)
    sweep(parent, name, suffix)
    return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=suffix, dir=parent))


def remove_tree(path: Path) -> None:
    """Remove a directory a killed run may have left, even while an orphan of that run
    still writes into it (rmtree would then end in "Directory not empty"): it is renamed
    aside first (atomic), then removed as far as it can be; what is left is swept later."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    sweep(path.parent, path.name, ".trash")
    aside = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".trash", dir=path.parent)
    )
    os.replace(path, aside)  # an empty dir is replaced by rename(2)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp dir next to ``final``; rename it to ``final`` on success.

    On any error (Ctrl-C included) the temp dir is removed, so ``final`` is never
    half-built. The caller must hold the lock for ``final``: staging dirs of ``final``
    that a killed run left (kill -9 skips the cleanup) are removed first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep(final.parent, final.name, ".partial", all_of_them=True)
    tmp = scratch_dir(final.parent, final.name, ".partial")
    try:
        yield tmp
        remove_tree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def require_free(path: Path, gib: float, what: str) -> None:
    """Refuse up front, with the fix, when the disk under ``path`` has less than ``gib``
    free: a download that fills the disk halfway fails later, with a worse message."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    if free < gib:
        raise ToolError(
            f"not enough disk space for {what}: {free:.1f} GiB free under "
            f"{path.parent}, it needs about {gib:g} GiB",
            fix=NO_SPACE_FIX,
        )


def extract_tar(tf: tarfile.TarFile, dest: Path) -> None:
    """Unpack ``tf`` into ``dest`` with nothing written outside it: tarfile's "data"
    filter where this Python has it (3.11.4+, 3.12), else the same checks by hand
    (Debian 12's Python is 3.11.2)."""
    if hasattr(tarfile, "data_filter"):
        tf.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)
    for m in tf.getmembers():
        target = os.path.realpath(os.path.join(root, m.name))
        if not (target == root or target.startswith(root + os.sep)) or m.isdev():
            raise ToolError(
                f"{tf.name!r}: member {m.name!r} would be written outside {dest}",
                fix="the archive is corrupt or hostile: delete it from the cache and rerun",
            )
        if m.issym() or m.islnk():
            link = os.path.realpath(os.path.join(os.path.dirname(target), m.linkname))
            if m.islnk():
                link = os.path.realpath(os.path.join(root, m.linkname))
            if not (link == root or link.startswith(root + os.sep)):
                raise ToolError(
                    f"{tf.name!r}: link {m.name!r} points outside {dest}",
                    fix="the archive is corrupt or hostile: delete it from the cache and rerun",
                )
    tf.extractall(dest)
