"""matrix.toml's ``[grid]``: axes expanded into cells for the map (`nox -s map`).

    [grid]
    vllm = "0.4.1..latest"          # a range over the known releases, or a list
    torch = ["2.3.0", "2.7.1+cu128"] # a list (variants pass through), or a range
    toolchains = [{ cuda = "12.4", provider = "debian" }, { cuda = "13.0", provider = "pypi" }]
    arch = ["8.0", "9.0", "12.0"]    # one cell per arch family
    python = "3.11"                  # default: [defaults].python

The grid's cells are kept apart from the ``[[cell]]`` tables: `nox -s matrix` (and every
other command taking --matrix) runs the explicit cells only, so the README's main command
stays fast; only `map` walks the grid. A grid cell whose id equals an explicit cell's id is
replaced by the explicit one (its note, source and options win).

A torch build is paired with the toolchains of its own CUDA major (torch 2.11.0+cu130 with
nvcc 13.x; torch 2.6.0+cu124 with nvcc 12.x): a cross-major pair fails on a rule that says
nothing about the release, so it is not expanded.  The known releases are
``pins.releases()``: the index's list (cached; offline the last one seen, else the
releases of data/vllm_pins.toml), so "latest" is the newest release published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

from vllm_matrix.infra import index, tomlfile
from vllm_matrix.infra.config import (
    EXAMPLES,
    MAX_VERSION,
    PROVIDERS,
    Cell,
    Matrix,
    read_arch_list,
    shown,
)
from vllm_matrix.infra.errors import ConfigError, MatrixError
from vllm_matrix.infra.tomlfile import TomlDoc
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.knowledge.toolchains import Knowledge

GRID_KEYS = ("vllm", "torch", "toolchains", "arch", "python", "note")
TOOLCHAIN_KEYS = ("cuda", "provider")
RANGE = ".."
LATEST = "latest"


@dataclass(frozen=True)
class Toolchain:
    cuda: str
    provider: str

    @property
    def label(self) -> str:
        return f"CUDA {self.cuda} ({self.provider})"


@dataclass(frozen=True)
class Grid:
    vllm: tuple[str, ...]
    torch: tuple[str, ...]
    toolchains: tuple[Toolchain, ...]
    arch: tuple[str, ...]
    python: str
    note: str = ""
    line: int = 0

    def cells(self, know: Knowledge) -> tuple[Cell, ...]:
        """Every (release, torch, toolchain of the torch's CUDA major, arch), in that order."""
        out = []
        for v in self.vllm:
            for t in self.torch:
                major = torch_cuda_major(t, know)
                for tc in self.toolchains:
                    if major is not None and Version(tc.cuda).major != major:
                        continue
                    for a in self.arch:
                        out.append(
                            Cell(
                                v,
                                t,
                                tc.cuda,
                                tc.provider,
                                self.python,
                                (a,),
                                None,
                                self.note,
                                line=self.line,
                            )
                        )
        return tuple(out)


def torch_cuda_major(spec: str, know: Knowledge) -> int | None:
    """CUDA major of a torch build: from its variant ('+cu128' -> 12) or the wheel's facts."""
    public, _, variant = spec.partition("+")
    if variant.startswith("cu") and variant[2:].isdigit() and len(variant) >= 4:
        return int(variant[2:-1])
    tf = know.torch.get(public)
    return Version(tf.cuda).major if tf else None


def _ordered(values: list[str]) -> list[str]:
    return sorted(dict.fromkeys(values), key=Version)


def _series(end: str, known: list[str], low: bool) -> str | None:
    """'2.3' as a range end: the first (low end) or last known 2.3.x; None if not a series."""
    try:
        want = Version(end).release
    except InvalidVersion:
        return None
    if end in known or len(want) != 2:
        return None
    hits = [v for v in known if Version(v).release[:2] == want]
    return (hits[0] if low else hits[-1]) if hits else None


def _range(doc: TomlDoc, item: str, key: str, known: list[str], line: int, what: str) -> list[str]:
    """ "A..B" over ``known`` (sorted): B may be "latest", an end may be a series ("2.3")."""
    ctx = "[grid]"
    lo, _, hi = (s.strip() for s in item.partition(RANGE))
    ends = []
    for n, end in enumerate((lo, hi)):
        if end == LATEST and n == 1 and known:
            ends.append(known[-1])
            continue
        series = _series(end, known, low=n == 0)
        if series is not None:
            ends.append(series)
            continue
        if end not in known:
            raise ConfigError(
                f"{doc.where(key, line)}: '{end}' in {key} range {item!r} ({ctx}) is not a "
                f"known {what}",
                fix=tomlfile.did_you_mean(end, known)
                + (f" (known: {known[0]} … {known[-1]})" if known else ""),
            )
        ends.append(end)
    a, b = Version(ends[0]), Version(ends[1])
    if a > b:
        raise ConfigError(
            f"{doc.where(key, line)}: empty range {item!r} in {key} ({ctx})",
            fix=f'write the lower end first: "{hi}..{lo}"',
        )
    return [v for v in known if a <= Version(v) <= b]


def _axis(
    doc: TomlDoc, raw: Any, key: str, known: list[str], line: int, what: str
) -> tuple[str, ...]:
    """A list of versions and ranges ("A..B"), or one of them; sorted, duplicates dropped.
    A variant ("2.7.1+cu128") needs its public version to be known."""
    ctx = "[grid]"
    out: list[str] = []
    for item in tomlfile.str_list(doc, raw, key, ctx, line):
        if RANGE in item:
            out += _range(doc, item, key, known, line, what)
            continue
        try:
            Version(item)
        except InvalidVersion:
            raise ConfigError(
                f"{doc.where(key, line)}: '{item}' in {key} ({ctx}) is not a version",
                fix=tomlfile.did_you_mean(item, known),
            ) from None
        public = item.partition("+")[0]
        if public not in known:
            raise ConfigError(
                f"{doc.where(key, line)}: '{item}' in {key} ({ctx}) is not a known {what}",
                fix=tomlfile.did_you_mean(public, known),
            )
        out.append(item)
    if not out:
        raise ConfigError(
            f"{doc.where(key, line)}: empty {key} axis in {ctx}",
            fix=f'name at least one {what}, e.g. {key} = ["{known[-1] if known else "..."}"]',
        )
    return tuple(_ordered(out))


def parse(
    doc: TomlDoc,
    raw: Any,
    defaults: dict[str, Any],
    know: Knowledge,
    releases: list[str] | None = None,
) -> Grid:
    """Read and check ``[grid]``: every error names file:line and the nearest good value."""
    line = doc.line_of("grid") or 0
    ctx = "[grid]"
    tomlfile.expect(doc, raw, "grid", dict, "the top level")
    tomlfile.check_keys(doc, raw, GRID_KEYS, ctx, line)
    for key in ("vllm", "torch", "toolchains", "arch"):
        if key not in raw:
            raise ConfigError(
                f"{doc.path}:{line}: {ctx} is missing '{key}'", fix=f"add {key} = ... to {ctx}"
            )
    releases = releases if releases is not None else known_releases()
    vllm = _axis(doc, raw["vllm"], "vllm", releases, line, "vLLM release")
    torch_known = _ordered([t for t in know.torch if "+" not in t])
    torch = _axis(doc, raw["torch"], "torch", torch_known, line, "torch release")

    tcs_raw = raw["toolchains"]
    if not isinstance(tcs_raw, list) or not tcs_raw:
        raise ConfigError(
            f"{doc.where('toolchains', line)}: 'toolchains' in {ctx} must be a non-empty list "
            "of tables",
            fix='write toolchains = [{ cuda = "12.4", provider = "debian" }]',
        )
    tcs = []
    tc_line = doc.line_of("toolchains", line) or line
    for n, t in enumerate(tcs_raw):
        tctx = f"{ctx} toolchains #{n + 1}"
        tomlfile.expect(doc, t, "toolchains", dict, ctx, line)
        for k in t:
            if k not in TOOLCHAIN_KEYS:
                raise ConfigError(
                    f"{doc.path}:{_line_with(doc, k, tc_line)}: unknown key '{k}' in {tctx}",
                    fix=tomlfile.did_you_mean(k, TOOLCHAIN_KEYS),
                )
        cuda = tomlfile.require(doc, t, "cuda", str, tctx, tc_line)
        provider = tomlfile.require(doc, t, "provider", str, tctx, tc_line)
        try:
            Version(cuda)
        except InvalidVersion:
            raise ConfigError(
                f"{doc.path}:{_line_with(doc, cuda, tc_line)}: cuda = {cuda!r} in {tctx} is "
                "not a version",
                fix='write e.g. cuda = "12.8"',
            ) from None
        if provider not in PROVIDERS:
            raise ConfigError(
                f"{doc.path}:{_line_with(doc, provider, tc_line)}: unknown provider "
                f"'{provider}' in {tctx}",
                fix=tomlfile.did_you_mean(provider, PROVIDERS),
            )
        tcs.append(Toolchain(cuda, provider))

    archs = read_arch_list(doc, raw["arch"], ctx, line)
    python = raw.get("python", defaults.get("python"))
    if python is None:
        raise ConfigError(
            f"{doc.path}:{line}: {ctx} has no python and [defaults] none either",
            fix='add python = "3.11" to [grid]',
        )
    tomlfile.expect(doc, python, "python", str, ctx, line)
    try:
        Version(python)
    except InvalidVersion:
        raise ConfigError(
            f"{doc.where('python', line)}: 'python' in {ctx} is not a version: {python!r}",
            fix='write e.g. python = "3.11"',
        ) from None
    note = tomlfile.expect(doc, raw.get("note", ""), "note", str, ctx, line)
    return Grid(
        vllm, torch, tuple(dict.fromkeys(tcs)), tuple(dict.fromkeys(archs)), python, note, line
    )


def _line_with(doc: TomlDoc, needle: str, after: int) -> int:
    """The first line at or after ``after`` that contains ``needle`` (inline tables)."""
    for no, text in enumerate(doc.text.splitlines(), 1):
        if no >= after and needle in text:
            return no
    return after


def known_releases() -> list[str]:
    """The vLLM releases the tool knows, oldest first: [grid]'s axis and the check of
    [[cell]] and --vllm / release VERSION read this one list: pins.releases(), the index's
    (cached; offline the last list seen, else the committed pins file)."""
    return _ordered(pins.releases())


def _index_versions(project: str) -> list[str] | None:
    """The project's versions on the index; None when it cannot be asked (offline: the
    stage that downloads says so, with its own fix)."""
    try:
        return [str(v) for v in index.versions(project)]
    except (MatrixError, OSError):
        return None


def check_version(value: str, what: str, where: str = "") -> None:
    """A usage error (ConfigError, exit 2) with "did you mean" when ``value`` is not a
    release of vLLM (``what`` = "vllm") or torch ("torch"; a variant by its public part):
    first the known list (vllm_pins.toml / toolchains.toml), then the index for a release
    newer than those. An index that cannot be reached lets it pass."""
    label = {"vllm": "vLLM", "torch": "torch"}[what]
    if len(value) > MAX_VERSION:
        raise ConfigError(
            f"{where}{label} {shown(value)} is not a version",
            fix=f"write a {label} release, e.g. {EXAMPLES[what]}",
        )
    public = value.partition("+")[0]
    try:
        Version(public)
    except InvalidVersion:
        raise ConfigError(
            f"{where}{label} {shown(value)} is not a version",
            fix=f"write a {label} release, e.g. {EXAMPLES[what]}",
        ) from None
    known = (
        known_releases()
        if what == "vllm"
        else _ordered([t.partition("+")[0] for t in toolchains.load().torch])
    )
    if not known or public in known:
        return
    on_index = _index_versions(what)
    if on_index is None or public in on_index:
        return
    choices = _ordered([*known, *(v for v in on_index if not Version(v).is_prerelease)])
    raise ConfigError(
        f"{where}{label} {shown(value)} is not a {label} release (not in the "
        f"{'release list' if what == 'vllm' else 'toolchain knowledge'} nor on the index)",
        fix=tomlfile.did_you_mean(public, choices),
    )


def check_cells(m: Matrix) -> None:
    """Every [[cell]]'s vllm (unless it names its source) and torch is a real release."""
    for c in m.cells:
        where = f"{m.path.name}:{c.line}: " if c.line else ""
        if c.source is None:
            check_version(c.vllm, "vllm", where)
        check_version(c.torch, "torch", where)


def merge(explicit: tuple[Cell, ...], grid_cells: tuple[Cell, ...]) -> tuple[Cell, ...]:
    """The grid's cells, each replaced by the explicit cell of the same id where one exists."""
    by_id = {c.id: c for c in explicit}
    return tuple(by_id.get(c.id, c) for c in grid_cells)


def cells_of(m: Matrix) -> tuple[Cell, ...]:
    """The matrix's [grid] expanded into cells (explicit cells of the same id win); () when
    it has none. Walked only by `map`: `run` and the report use the [[cell]] tables."""
    if m.grid_input is None:
        return ()
    know = toolchains.load()
    g = parse(m.grid_input.doc, m.grid_input.table, m.grid_input.defaults, know)
    return merge(m.cells, g.cells(know))
