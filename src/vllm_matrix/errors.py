"""One error base class. Every user-facing error says what to do next."""

from __future__ import annotations


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
