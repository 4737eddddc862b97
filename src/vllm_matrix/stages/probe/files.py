"""A file's text, or "" where it cannot be read (optional inputs: torch's files, logs, /proc)."""

from __future__ import annotations

from pathlib import Path


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
