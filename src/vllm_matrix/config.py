"""matrix.toml → a Matrix of frozen Cells.

A cell is one combination to answer for: (vLLM, torch, CUDA + provider, Python,
GPU arches, options). ``[defaults]`` fills what a ``[[cell]]`` leaves out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from . import tomlfile
from .errors import ConfigError
from .tomlfile import TomlDoc

PROVIDERS = ("debian", "pypi", "system", "conda-prefix")
CELL_KEYS = ("vllm", "torch", "cuda", "provider", "python", "arch", "source", "note", "options")
DEFAULT_KEYS = tuple(k for k in CELL_KEYS if k not in ("vllm", "note"))
OPTION_KEYS = ("max_jobs", "nvcc_threads")
TOP_KEYS = ("defaults", "cell", "grid")

_ARCH = re.compile(r"^(?:sm_|compute_)?(\d+)(?:\.(\d+))?([af]?)$")


def normalize_arch(text: str) -> str:
    """'sm_90a' / '90a' / '9.0a' → '9.0a'; '12.0f' stays. Raises ValueError."""
    m = _ARCH.match(text.strip())
    if not m:
        raise ValueError(text)
    major, minor, suffix = m.groups()
    if minor is None:
        if len(major) < 2:
            raise ValueError(text)
        major, minor = major[:-1], major[-1]
    return f"{int(major)}.{int(minor)}{suffix}"


def parse_arch_list(text: str) -> tuple[str, ...]:
    """'9.0;12.0' / '9.0 12.0+PTX' / 'sm_90' → normalized arches; ConfigError when bad/empty."""
    raw = text.replace(";", " ").replace(",", " ").split()
    try:
        archs = tuple(normalize_arch(a.removesuffix("+PTX")) for a in raw)
    except ValueError as exc:
        raise ConfigError(
            f"'{exc}' is not a GPU arch", fix='write arches like "9.0", "sm_90", "9.0a" or "12.0f"'
        ) from None
    if not archs:
        raise ConfigError("no GPU arch given", fix="pass --arch 9.0 (or set TORCH_CUDA_ARCH_LIST)")
    return archs


def arch_tag(arch: str) -> str:
    """'9.0a' → 'sm90a' (for cell ids)."""
    base, suffix = arch.rstrip("af"), arch[len(arch.rstrip("af")) :]
    major, minor = base.split(".")
    return f"sm{major}{minor}{suffix}"


def arch_number(arch: str) -> int:
    """'12.0f' → 120 (capability as an integer, suffix dropped)."""
    major, minor = arch.rstrip("af").split(".")
    return int(major) * 10 + int(minor)


@dataclass(frozen=True)
class Options:
    max_jobs: int | None = None
    nvcc_threads: int | None = None


@dataclass(frozen=True)
class Cell:
    vllm: str
    torch: str
    cuda: str
    provider: str
    python: str
    arch: tuple[str, ...]
    source: str | None = None
    note: str = ""
    options: Options = field(default_factory=Options)
    line: int = 0  # where the [[cell]] starts in matrix.toml
    # "managed": our cached toolkit + venv; "current": the active env's (pixi/conda/venv)
    env: str = "managed"

    @property
    def id(self) -> str:
        archs = "+".join(arch_tag(a) for a in self.arch)
        tail = "-current" if self.env == "current" else ""
        return f"vllm{self.vllm}-torch{self.torch}-cu{self.cuda}-py{self.python}-{archs}{tail}"

    @property
    def source_spec(self) -> str:
        return self.source or self.vllm

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "vllm": self.vllm,
            "torch": self.torch,
            "cuda": self.cuda,
            "provider": self.provider,
            "python": self.python,
            "arch": list(self.arch),
            "source": self.source,
            "note": self.note,
            "options": {k: v for k, v in vars(self.options).items() if v is not None},
            "env": self.env,
        }


@dataclass(frozen=True)
class Matrix:
    path: Path
    cells: tuple[Cell, ...]  # the [[cell]] tables: what run/matrix/report answer for
    # [grid] expanded (grid.py): walked only by `map`, explicit cells of the same id win
    grid: tuple[Cell, ...] = ()

    def select(self, pattern: str | None) -> tuple[Cell, ...]:
        """Cells whose id contains ``pattern`` (all when None); error when none match."""
        if not pattern:
            return self.cells
        chosen = tuple(c for c in self.cells if pattern in c.id)
        if not chosen:
            ids = [c.id for c in self.cells]
            raise ConfigError(
                f"no cell of {self.path} matches '{pattern}'",
                fix=tomlfile.did_you_mean(pattern, ids) + " (see `inv cells`)",
            )
        return chosen

    def versions(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for c in self.cells:
            seen.setdefault(c.vllm, None)
        return tuple(seen)


def _version(doc: TomlDoc, value: str, key: str, ctx: str, line: int) -> str:
    try:
        Version(value)
    except InvalidVersion as exc:
        raise ConfigError(
            f"{doc.where(key, line)}: '{key}' in {ctx} is not a version: {value!r}",
            fix=f'write e.g. {key} = "{ {"vllm": "0.8.5", "torch": "2.6.0"}.get(key, "12.4") }"',
        ) from exc
    return value


def _cell(doc: TomlDoc, raw: dict[str, Any], defaults: dict[str, Any], n: int) -> Cell:
    line = _nth_cell_line(doc, n)
    ctx = f"[[cell]] #{n + 1}"
    tomlfile.check_keys(doc, raw, CELL_KEYS, ctx, line)
    merged = {**defaults, **raw}

    def get(key: str, kind: type) -> Any:
        return tomlfile.require(doc, merged, key, kind, ctx, line)

    vllm = _version(doc, get("vllm", str), "vllm", ctx, line)
    torch = _version(doc, get("torch", str), "torch", ctx, line)
    cuda = _version(doc, get("cuda", str), "cuda", ctx, line)
    python = _version(doc, get("python", str), "python", ctx, line)
    provider = get("provider", str)
    if provider not in PROVIDERS:
        raise ConfigError(
            f"{doc.where('provider', line)}: unknown provider '{provider}' in {ctx}",
            fix=tomlfile.did_you_mean(provider, PROVIDERS),
        )
    archs: list[str] = []
    for a in tomlfile.str_list(doc, get("arch", object), "arch", ctx, line):
        try:
            archs.append(normalize_arch(a))
        except ValueError:
            raise ConfigError(
                f"{doc.where('arch', line)}: '{a}' in {ctx} is not a GPU arch",
                fix='write arches like "9.0", "sm_90", "9.0a" or "12.0f"',
            ) from None
    if not archs:
        raise ConfigError(
            f"{doc.where('arch', line)}: empty arch list in {ctx}",
            fix='name at least one arch, e.g. arch = ["9.0"]',
        )
    opts_raw = merged.get("options", {})
    tomlfile.expect(doc, opts_raw, "options", dict, ctx, line)
    tomlfile.check_keys(doc, opts_raw, OPTION_KEYS, f"{ctx} options", line)
    options = Options(
        **{k: tomlfile.expect(doc, v, k, int, ctx, line) for k, v in opts_raw.items()}
    )
    source = merged.get("source")
    if source is not None:
        tomlfile.expect(doc, source, "source", str, ctx, line)
    note = tomlfile.expect(doc, raw.get("note", ""), "note", str, ctx, line)
    return Cell(vllm, torch, cuda, provider, python, tuple(archs), source, note, options, line)


def _nth_cell_line(doc: TomlDoc, n: int) -> int:
    lines = [i for i, t in enumerate(doc.text.splitlines(), 1) if t.strip() == "[[cell]]"]
    return lines[n] if n < len(lines) else 0


def load_matrix(path: Path) -> Matrix:
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, TOP_KEYS, "the top level")
    defaults = doc.data.get("defaults", {})
    tomlfile.expect(doc, defaults, "defaults", dict, "the top level")
    tomlfile.check_keys(doc, defaults, DEFAULT_KEYS, "[defaults]", doc.line_of("defaults") or 0)
    raw_cells = doc.data.get("cell", [])
    if not isinstance(raw_cells, list) or not raw_cells:
        raise ConfigError(f"{path}: no [[cell]] entries", fix="add at least one [[cell]] table")
    cells = tuple(_cell(doc, raw, defaults, n) for n, raw in enumerate(raw_cells))
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.id in seen:
            raise ConfigError(
                f"{path}:{c.line}: cell {c.id} repeats the cell at line {seen[c.id].line}",
                fix="remove one of them",
            )
        seen[c.id] = c
    grid_cells: tuple[Cell, ...] = ()
    if "grid" in doc.data:
        from . import grid, knowledge  # knowledge imports this module

        know = knowledge.load()
        g = grid.parse(doc, doc.data["grid"], defaults, know)
        grid_cells = grid.merge(cells, g.cells(know))
    return Matrix(path, cells, grid_cells)
