"""Where the package's data lives: knowledge/data/*.toml and knowledge/patches/ (a link to
the repository's patches/, so a wheel carries the series as package data too)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_HOME = "vllm_matrix.knowledge"  # a resource anchor, not an import: infra stays the bottom layer


def data_path(name: str) -> Path:
    """``knowledge/data/<name>``."""
    return Path(str(resources.files(_HOME) / "data" / name))


def patches_dir() -> Path:
    """``knowledge/patches`` (the shipped patch series)."""
    return Path(str(resources.files(_HOME) / "patches"))
