"""matrix.toml → a Matrix of frozen Cells.

A cell is one combination to answer for: (vLLM, torch, CUDA + provider, Python,
GPU arches, options). ``[defaults]`` fills what a ``[[cell]]`` leaves out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from vllm_matrix.infra import tomlfile
from vllm_matrix.infra.arch import arch_tag, normalize_arch
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.infra.tomlfile import TomlDoc

PROVIDERS = ("debian", "pypi", "system", "conda-prefix")
CELL_KEYS = ("vllm", "torch", "cuda", "provider", "python", "arch", "source", "note", "options")
DEFAULT_KEYS = tuple(k for k in CELL_KEYS if k not in ("vllm", "note"))
OPTION_KEYS = ("max_jobs", "nvcc_threads", "force")
TOP_KEYS = ("defaults", "cell", "ccache", "torch-index", "grid")
CCACHE_KEYS = ("remote",)
# ccache's remote storage backends (ccache >= 4.4 "remote_storage"; 4.14 adds crsh).
CCACHE_SCHEMES = ("redis", "redis+unix", "http", "https", "file", "crsh")
# A torch variant is the local version label PyTorch's per-CUDA indexes publish:
# "2.7.1+cu128" is the cu128 build of 2.7.1. A bare version means the configured
# index's default wheel (PyPI's 2.7.1 is +cu126).
_VARIANT = re.compile(r"^cu\d{3}$")
TORCH_INDEX_ENV = "VLLM_MATRIX_TORCH_INDEX_{}"


def read_arch_list(doc: TomlDoc, value: object, ctx: str, line: int) -> list[str]:
    """An ``arch`` list of a data file, normalised ('sm_90' -> '9.0'); clear errors."""
    archs: list[str] = []
    for a in tomlfile.str_list(doc, value, "arch", ctx, line):
        try:
            archs.append(normalize_arch(a))
        except ConfigError as exc:
            raise ConfigError(
                f"{doc.where('arch', line)}: '{a}' in {ctx} is not a GPU arch", fix=exc.fix
            ) from None
    if not archs:
        raise ConfigError(
            f"{doc.where('arch', line)}: empty arch list in {ctx}",
            fix='name at least one arch, e.g. arch = ["9.0"]',
        )
    return archs


def split_torch(spec: str) -> tuple[str, str | None]:
    """'2.7.1+cu128' -> ('2.7.1', 'cu128'); '2.7.1' -> ('2.7.1', None). ValueError if the
    local label is not a CUDA variant (cuNNN) or the version is not one."""
    public, plus, local = spec.strip().partition("+")
    Version(public)  # raises InvalidVersion (a ValueError)
    if not plus:
        return public, None
    if not _VARIANT.match(local):
        raise ValueError(f"'{local}' is not a CUDA variant (cu118, cu126, cu128, ...)")
    return public, local


def torch_tag(spec: str) -> str:
    """'2.7.1+cu128' -> '2.7.1cu128' (ids and directory names: no '+')."""
    public, variant = split_torch(spec)
    return public + (variant or "")


def torch_index_for(variant: str, table: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(URL, where it was configured) of the per-CUDA index serving ``variant``.

    VLLM_MATRIX_TORCH_INDEX_CU128 (upper-cased variant) wins over matrix.toml's
    ``[torch-index]`` table. The layout is PyTorch's: a simple index per CUDA variant.
    """
    var = TORCH_INDEX_ENV.format(variant.upper())
    env = os.environ.get(var)
    if env:
        return env.rstrip("/"), f"${var}"
    if table and table.get(variant):
        return table[variant].rstrip("/"), f"[torch-index] {variant} in matrix.toml"
    return None


@dataclass(frozen=True)
class Options:
    max_jobs: int | None = None
    nvcc_threads: int | None = None
    # go on past a predicted failure (runner's --force) for this cell: its row then rests
    # on a compile, not on the prediction (the seed's rows)
    force: bool | None = None


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
    # the matrix's [torch-index] table (variant -> index URL); not part of the id
    torch_index: tuple[tuple[str, str], ...] = ()

    @property
    def torch_version(self) -> str:
        """The public torch version: '2.7.1' for '2.7.1+cu128'."""
        return split_torch(self.torch)[0]

    @property
    def torch_variant(self) -> str | None:
        """The CUDA variant named by the cell ('cu128'), None for the index's default."""
        return split_torch(self.torch)[1]

    def torch_index_url(self) -> tuple[str, str] | None:
        v = self.torch_variant
        return torch_index_for(v, dict(self.torch_index)) if v else None

    @property
    def id(self) -> str:
        archs = "+".join(arch_tag(a) for a in self.arch)
        tail = "-current" if self.env == "current" else ""
        torch = torch_tag(self.torch)
        return f"vllm{self.vllm}-torch{torch}-cu{self.cuda}-py{self.python}-{archs}{tail}"

    @property
    def source_spec(self) -> str:
        return self.source or self.vllm

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "vllm": self.vllm,
            "torch": self.torch,
            "torch_variant": self.torch_variant,
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
class CcacheSettings:
    """``[ccache]``: settings every machine running this matrix shares.

    ``remote``: ccache's remote storage (``redis://host:port``, ``http://host/path``),
    handed to ccache as CCACHE_REMOTE_STORAGE; VLLM_MATRIX_CCACHE_REMOTE overrides it.
    """

    remote: str | None = None


def check_ccache_remote(url: str, where: str) -> str:
    """``url`` if ccache can use it as remote storage; ConfigError naming ``where`` if not."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in CCACHE_SCHEMES:
        raise ConfigError(
            f"{where}: {url!r} is not a ccache remote storage URL",
            fix="write e.g. redis://cache-host:6379 or http://cache-host:8080/ccache"
            + (f" ({tomlfile.did_you_mean(scheme, CCACHE_SCHEMES)})" if scheme else ""),
        )
    return url


@dataclass(frozen=True)
class GridInput:
    """matrix.toml's [grid] as read: expanded into cells above this layer (it needs the
    toolchain knowledge and the release pins)."""

    doc: TomlDoc
    table: Any
    defaults: dict[str, Any]


@dataclass(frozen=True)
class Matrix:
    path: Path
    cells: tuple[Cell, ...]
    ccache: CcacheSettings = field(default_factory=CcacheSettings)
    # [grid] as read; pipeline/grid.py cells_of expands it (it needs the knowledge)
    grid_input: GridInput | None = field(default=None, compare=False, repr=False)

    def select(self, pattern: str | None) -> tuple[Cell, ...]:
        """The cell whose id is ``pattern``, else the cells whose id contains it (all when
        None); error when none match. (An exact id never also picks the cells whose id
        merely contains it, e.g. ...-sm90 and ...-sm90+sm120.)"""
        if not pattern:
            return self.cells
        exact = tuple(c for c in self.cells if c.id == pattern)
        if exact:
            return exact
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


# Longer than any release number: a longer value is refused before it names a file.
MAX_VERSION = 64
EXAMPLES = {"vllm": "0.8.5", "torch": "2.6.0", "cuda": "12.4", "python": "3.12"}


def shown(value: str, n: int = 40) -> str:
    """``value`` quoted for a message, cut to ``n`` characters."""
    return repr(value) if len(value) <= n else f"{value[:n]!r}... ({len(value)} characters)"


def _version(doc: TomlDoc, value: str, key: str, ctx: str, line: int) -> str:
    fix = f'write e.g. {key} = "{EXAMPLES.get(key, "1.0")}"'
    if len(value) > MAX_VERSION:
        raise ConfigError(
            f"{doc.where(key, line)}: '{key}' in {ctx} is not a version: {shown(value)}",
            fix=fix,
        )
    try:
        Version(value)
    except InvalidVersion as exc:
        raise ConfigError(
            f"{doc.where(key, line)}: '{key}' in {ctx} is not a version: {shown(value)}",
            fix=fix,
        ) from exc
    return value


def _cell(
    doc: TomlDoc,
    raw: dict[str, Any],
    defaults: dict[str, Any],
    n: int,
    indexes: tuple[tuple[str, str], ...] = (),
) -> Cell:
    line = _nth_cell_line(doc, n)
    ctx = f"[[cell]] #{n + 1}"
    tomlfile.check_keys(doc, raw, CELL_KEYS, ctx, line)
    merged = {**defaults, **raw}

    def get(key: str, kind: type) -> Any:
        return tomlfile.require(doc, merged, key, kind, ctx, line)

    vllm = _version(doc, get("vllm", str), "vllm", ctx, line)
    torch = get("torch", str)
    try:
        if len(torch) > MAX_VERSION:
            raise ValueError(f"{len(torch)} characters")
        split_torch(torch)
    except ValueError as exc:
        raise ConfigError(
            f"{doc.where('torch', line)}: 'torch' in {ctx} is not a torch version: "
            f"{shown(torch)} ({shown(str(exc), 80)})",
            fix='write e.g. torch = "2.6.0" (the index\'s default wheel) or "2.7.1+cu128" '
            "(a CUDA variant from PyTorch's per-CUDA index)",
        ) from None
    cuda = _version(doc, get("cuda", str), "cuda", ctx, line)
    python = _version(doc, get("python", str), "python", ctx, line)
    provider = get("provider", str)
    if provider not in PROVIDERS:
        raise ConfigError(
            f"{doc.where('provider', line)}: unknown provider '{provider}' in {ctx}",
            fix=tomlfile.did_you_mean(provider, PROVIDERS),
        )
    archs = read_arch_list(doc, get("arch", object), ctx, line)
    opts_raw = merged.get("options", {})
    tomlfile.expect(doc, opts_raw, "options", dict, ctx, line)
    tomlfile.check_keys(doc, opts_raw, OPTION_KEYS, f"{ctx} options", line)
    options = Options(
        **{
            k: tomlfile.expect(doc, v, k, bool if k == "force" else int, ctx, line)
            for k, v in opts_raw.items()
        }
    )
    source = merged.get("source")
    if source is not None:
        tomlfile.expect(doc, source, "source", str, ctx, line)
    note = tomlfile.expect(doc, raw.get("note", ""), "note", str, ctx, line)
    return Cell(
        vllm,
        torch,
        cuda,
        provider,
        python,
        tuple(archs),
        source,
        note,
        options,
        line,
        torch_index=indexes,
    )


def _nth_cell_line(doc: TomlDoc, n: int) -> int:
    lines = [i for i, t in enumerate(doc.text.splitlines(), 1) if t.strip() == "[[cell]]"]
    return lines[n] if n < len(lines) else 0


def load_matrix(path: Path) -> Matrix:
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, TOP_KEYS, "the top level")
    defaults = doc.data.get("defaults", {})
    tomlfile.expect(doc, defaults, "defaults", dict, "the top level")
    tomlfile.check_keys(doc, defaults, DEFAULT_KEYS, "[defaults]", doc.line_of("defaults") or 0)
    idx = doc.data.get("torch-index", {})
    tomlfile.expect(doc, idx, "torch-index", dict, "the top level")
    for k, v in idx.items():
        if not _VARIANT.match(k) or not isinstance(v, str):
            raise ConfigError(
                f"{doc.where('torch-index')}: [torch-index] {k} = {v!r}: "
                "keys are CUDA variants, values index URLs",
                fix='write e.g. cu128 = "<your PyTorch cu128 index URL>"',
            )
    indexes = tuple(sorted(idx.items()))
    raw_cells = doc.data.get("cell", [])
    if not isinstance(raw_cells, list) or not raw_cells:
        raise ConfigError(f"{path}: no [[cell]] entries", fix="add at least one [[cell]] table")
    cells = tuple(_cell(doc, raw, defaults, n, indexes) for n, raw in enumerate(raw_cells))
    ccache = _ccache(doc)
    seen: dict[str, Cell] = {}
    for c in cells:
        if c.id in seen:
            raise ConfigError(
                f"{path}:{c.line}: cell {c.id} repeats the cell at line {seen[c.id].line}",
                fix="remove one of them",
            )
        seen[c.id] = c
    grid_input = GridInput(doc, doc.data["grid"], defaults) if "grid" in doc.data else None
    return Matrix(path, cells, ccache, grid_input=grid_input)


def _ccache(doc: TomlDoc) -> CcacheSettings:
    raw = doc.data.get("ccache", {})
    tomlfile.expect(doc, raw, "ccache", dict, "the top level")
    line = doc.line_of("ccache") or 0
    tomlfile.check_keys(doc, raw, CCACHE_KEYS, "[ccache]", line)
    remote = raw.get("remote")
    if remote is None:
        return CcacheSettings()
    tomlfile.expect(doc, remote, "remote", str, "[ccache]", line)
    return CcacheSettings(check_ccache_remote(remote, doc.where("remote", line)) or None)
