"""One error base class. Every user-facing error says what to do next."""

from __future__ import annotations

import os
from pathlib import Path


class MatrixError(Exception):
    """Base for every error the tool reports to a user.

    ``fix`` is the sentence that tells the user what to do; the CLI prints
    ``error: <message>`` and ``fix: <fix>`` and no traceback (unless --debug).
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class ConfigError(MatrixError):
    """A data file (matrix.toml or a knowledge file) is malformed."""


class SourceError(MatrixError):
    """A vLLM source could not be fetched, verified or read."""


class CommandError(MatrixError):
    """An external command failed; carries the tail of its output."""

    def __init__(self, message: str, returncode: int, tail: str, fix: str | None = None) -> None:
        super().__init__(message, fix)
        self.returncode = returncode
        self.tail = tail


class NotAvailable(MatrixError):
    """Something the cell needs cannot be had on this machine (-> SKIPPED, not FAIL)."""


class ToolError(MatrixError):
    """The tool or the machine failed, not vLLM (-> ERROR, never shown as a fact about
    vLLM): a missing program, the index unreachable, disk full, a corrupt cache entry."""


class ProgramMissing(ToolError):
    """A program the stage runs is not installed (named with the package that provides it)."""


# Exit codes of the command line (cibuildwheel-style: each says which side failed).
EXIT_OK = 0
EXIT_USAGE = 2  # a bad argument or data file: the message says what to change
EXIT_CELL_ERROR = 3  # a cell ended in ERROR: the tool or the machine failed, see the report
EXIT_INTERRUPTED = 130


NO_SPACE = "No space left on device"
NO_SPACE_FIX = "free disk space, or point VLLM_MATRIX_CACHE at a larger disk, then rerun"


def describe_os_error(exc: OSError) -> tuple[str, str]:
    """One line saying what broke on the machine, and the fix, for an OSError out of a stage."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (f"no space left on the device{where}", NO_SPACE_FIX)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write{where}: {exc.strerror}", _unwritable_fix(exc.filename))
    if exc.errno == errno.EDQUOT:
        return (f"disk quota exceeded{where}", "free space within the quota, then rerun")
    return (
        f"{exc.strerror or type(exc).__name__}{where}",
        "check the path and the disk; rerun with --debug for the traceback",
    )


def _unwritable_fix(filename: object) -> str:
    """The fix for a path that cannot be written: the cache's, or the workspace's own
    results/ or reports/ (which VLLM_MATRIX_CACHE does not move)."""
    from vllm_matrix.infra.cache import cache_root  # cache imports this module

    cache_fix = "make the cache directory writable, or set VLLM_MATRIX_CACHE to one that is"
    if not isinstance(filename, str | os.PathLike):
        return cache_fix
    path = Path(os.path.abspath(filename))
    cache = cache_root()
    if path == cache or cache in path.parents:
        return cache_fix
    for part in ("results", "reports"):
        for d in (path, *path.parents):
            if d.name == part:
                return (
                    f"make {d} writable (`chmod u+w {d}`), or run from a copy of the matrix "
                    f"in a writable directory (--matrix DIR/matrix.toml: {part}/ is written "
                    "beside it)"
                )
    return f"make {path.parent} writable, or work in a directory that is"
