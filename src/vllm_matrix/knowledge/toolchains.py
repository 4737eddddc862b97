"""Toolchain knowledge: data files under vllm_matrix/knowledge/data/, each fact with its source.

- toolchains.toml: what each nvcc can target and which host gcc it accepts; what
  each torch wheel was built with (CUDA, SASS/PTX arches, Pythons); which toolkit
  versions each provider can supply on this kind of machine.
- api.toml: C++ symbols vLLM uses and the torch release that introduced them.

Tests re-derive the facts from real tools and wheels (tests/integration/test_knowledge_sync.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from packaging.version import Version

from vllm_matrix.infra import datafiles, tomlfile
from vllm_matrix.infra.arch import Arch, normalize_arch
from vllm_matrix.infra.errors import ConfigError


@dataclass(frozen=True)
class NvccFacts:
    version: str
    archs: tuple[str, ...]
    max_gcc: int | None
    source: str
    # arch-specific ("9.0a") and family ("12.0f") targets, as plain numbers; None: not recorded
    arch_specific: tuple[str, ...] | None = None
    family: tuple[str, ...] | None = None

    def can_target(self, arch: str) -> bool:
        a = Arch.parse(arch)
        base = a.base.name
        if base not in self.archs:
            return False
        if a.suffix == "f" and self.family is not None:
            return base in self.family
        if a.suffix == "a" and self.arch_specific is not None:
            return base in self.arch_specific
        return True

    def excludes_side(self, arch: str) -> str:
        """Why ``arch`` is out: 'its archs start at compute_75' / 'end at compute_90' /
        'has no family (f) targets' ... (names the side of the list that excludes it)."""
        target = Arch.parse(arch)
        a = target.base
        have_archs = [Arch.parse(x).base for x in self.archs]
        if have_archs and a < have_archs[0]:
            return f"its archs start at {have_archs[0].compute}"
        if have_archs and a > have_archs[-1]:
            return f"its archs end at {have_archs[-1].compute}"
        if a.name not in self.archs:
            return f"{a.compute} is not among its archs"
        # listed, yet refused: an "a" or "f" target this nvcc does not take
        kind, have = (
            ("family (f)", self.family)
            if target.suffix == "f"
            else ("arch-specific (a)", self.arch_specific)
        )
        listed = ", ".join(f"{h}{target.suffix}" for h in have or ()) or "none"
        return f"its {kind} targets are {listed}"


MEASURED = "measured"
DOCUMENTED = "documented"
BASES = (MEASURED, DOCUMENTED)


@dataclass(frozen=True)
class TorchFacts:
    version: str  # the public version, "2.7.1"
    local: str  # the CUDA variant, "cu128"
    cuda: str
    sass: tuple[str, ...]
    ptx: tuple[str, ...]
    pythons: tuple[str, ...]
    source: str
    # "measured": read from the real wheel (inv derive-torch); "documented": from the
    # public source named in `source`, not measured here
    basis: str = MEASURED
    cxx11_abi: bool | None = None  # _GLIBCXX_USE_CXX11_ABI of the wheel; None: not recorded
    default: bool = True  # the configured index's default wheel for this version

    @property
    def label(self) -> str:
        return f"{self.version}+{self.local}" if self.local else self.version

    @property
    def basis_text(self) -> str:
        return (
            "measured from the wheel" if self.basis == MEASURED else "documented, not measured here"
        )

    def runs_on(self, arch: str) -> bool:
        """Whether this wheel has code a GPU of ``arch`` can run.

        SASS runs on the same major with an equal or higher minor; PTX JIT-compiles
        for any equal or newer arch (CUDA binary compatibility rules).
        """
        return _runs_on(self.sass, self.ptx, arch)


@functools.lru_cache(maxsize=8192)
def _runs_on(sass: tuple[str, ...], ptx: tuple[str, ...], arch: str) -> bool:
    gpu = Arch.parse(arch).base
    return any(gpu.runs_sass_of(Arch.parse(s).base) for s in sass) or any(
        gpu.jits_ptx_of(Arch.parse(p).base) for p in ptx
    )


@dataclass(frozen=True)
class ProviderFacts:
    name: str
    versions: dict[str, str]  # version -> what supplies it here
    note: str
    suites: dict[str, str] = field(default_factory=dict)  # debian: version -> archive release
    min_major: int = 0  # pypi: the first CUDA major whose nvcc the index has


@dataclass(frozen=True)
class ApiSymbol:
    name: str
    pattern: str
    torch: str  # first torch release that has it
    header: str  # the header that declares it, relative to torch/include
    source: str


@dataclass(frozen=True)
class Knowledge:
    nvcc: dict[str, NvccFacts]
    torch: dict[str, TorchFacts]
    providers: dict[str, ProviderFacts]
    api: tuple[ApiSymbol, ...]

    def nvcc_for(self, version: str) -> NvccFacts | None:
        return self.nvcc.get(_major_minor(version))

    def provider_for(self, cuda: str) -> str:
        """The provider that supplies CUDA ``cuda`` here: the first ``[provider.*]`` of
        toolchains.toml that lists the version, else "system" (a toolkit already
        installed). The one choice of a provider for every command that picks one."""
        for name, pf in self.providers.items():
            if cuda in pf.versions:
                return name
        return "system"

    def min_nvcc_for(self, arch: str) -> str | None:
        ok = [v for v, f in self.nvcc.items() if f.can_target(arch)]
        return min(ok, key=Version) if ok else None

    def torch_facts(self, spec: str) -> TorchFacts | None:
        """Facts for '2.7.1' (the index's default wheel) or '2.7.1+cu128' (that variant).

        A variant with no entry of its own is the default wheel when that wheel's local
        label is the variant (PyPI's 2.6.0 is the +cu124 build).
        """
        if spec in self.torch:
            return self.torch[spec]
        public, _, variant = spec.partition("+")
        base = self.torch.get(public)
        if variant and base is not None and base.local == variant:
            return base
        return None

    def variants_of(self, version: str) -> tuple[TorchFacts, ...]:
        """Every known build of ``version`` (default wheel first, then by CUDA)."""
        out = {f.label: f for f in self.torch.values() if f.version == version}
        return tuple(sorted(out.values(), key=lambda f: (not f.default, Version(f.cuda))))

    def min_torch_for(self, arch: str) -> TorchFacts | None:
        """The oldest torch build with code for ``arch`` (on ties: measured, then the
        lowest CUDA)."""
        ok = [f for f in self.torch.values() if f.runs_on(arch)]
        return (
            min(ok, key=lambda f: (Version(f.version), f.basis != MEASURED, Version(f.cuda)))
            if ok
            else None
        )


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _data(name: str) -> Path:
    return datafiles.data_path(name)


def _arches(doc: tomlfile.TomlDoc, value: object, key: str, ctx: str) -> tuple[str, ...]:
    out = []
    for a in tomlfile.str_list(doc, value, key, ctx):
        try:
            out.append(normalize_arch(a))
        except ConfigError:
            raise ConfigError(
                f"{doc.where(key)}: bad arch {a!r} in {ctx}", fix='write arches like "9.0"'
            ) from None
    return tuple(out)


def load_toolchains(
    path: Path,
) -> tuple[dict[str, NvccFacts], dict[str, TorchFacts], dict[str, ProviderFacts]]:
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, ("nvcc", "torch", "provider"), "the top level")
    nvcc: dict[str, NvccFacts] = {}
    for ver, t in doc.data.get("nvcc", {}).items():
        ctx = f'[nvcc."{ver}"]'
        tomlfile.check_keys(doc, t, ("archs", "max_gcc", "source", "arch_specific", "family"), ctx)
        nvcc[ver] = NvccFacts(
            ver,
            _arches(doc, t.get("archs", []), "archs", ctx),
            tomlfile.expect(doc, t["max_gcc"], "max_gcc", int, ctx) if "max_gcc" in t else None,
            tomlfile.require(doc, t, "source", str, ctx),
            _arches(doc, t["arch_specific"], "arch_specific", ctx)
            if "arch_specific" in t
            else None,
            _arches(doc, t["family"], "family", ctx) if "family" in t else None,
        )
    torch: dict[str, TorchFacts] = {}
    for ver, t in doc.data.get("torch", {}).items():
        ctx = f'[torch."{ver}"]'
        tomlfile.check_keys(
            doc,
            t,
            ("local", "cuda", "sass", "ptx", "pythons", "source", "basis", "cxx11_abi"),
            ctx,
        )
        public, plus, variant = ver.partition("+")
        local = tomlfile.require(doc, t, "local", str, ctx)
        if plus and variant != local:
            raise ConfigError(
                f"{doc.where('local')}: {ctx} has local = {local!r}, its key says {variant!r}",
                fix="make the key's +label and `local` agree",
            )
        basis = str(t.get("basis", MEASURED))
        if basis not in BASES:
            raise ConfigError(
                f"{doc.where('basis')}: basis {basis!r} in {ctx}",
                fix=tomlfile.did_you_mean(basis, BASES),
            )
        abi = t.get("cxx11_abi")
        torch[ver] = TorchFacts(
            public,
            local,
            tomlfile.require(doc, t, "cuda", str, ctx),
            _arches(doc, t.get("sass", []), "sass", ctx),
            _arches(doc, t.get("ptx", []), "ptx", ctx),
            tomlfile.str_list(doc, t.get("pythons", []), "pythons", ctx),
            tomlfile.require(doc, t, "source", str, ctx),
            basis,
            tomlfile.expect(doc, abi, "cxx11_abi", bool, ctx) if abi is not None else None,
            default=not plus,
        )
    providers: dict[str, ProviderFacts] = {}
    for name, t in doc.data.get("provider", {}).items():
        ctx = f"[provider.{name}]"
        tomlfile.check_keys(doc, t, ("versions", "note", "suites", "min_major"), ctx)
        versions = tomlfile.expect(doc, t.get("versions", {}), "versions", dict, ctx)
        suites = tomlfile.expect(doc, t.get("suites", {}), "suites", dict, ctx)
        providers[name] = ProviderFacts(
            name,
            dict(versions),
            str(t.get("note", "")),
            {str(v): tomlfile.expect(doc, s, "suites", str, ctx) for v, s in suites.items()},
            tomlfile.expect(doc, t.get("min_major", 0), "min_major", int, ctx),
        )
    return nvcc, torch, providers


def load_api(path: Path) -> tuple[ApiSymbol, ...]:
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, ("symbol",), "the top level")
    out = []
    for n, t in enumerate(doc.data.get("symbol", [])):
        ctx = f"[[symbol]] #{n + 1}"
        tomlfile.check_keys(doc, t, ("name", "pattern", "torch", "header", "source"), ctx)
        out.append(
            ApiSymbol(
                tomlfile.require(doc, t, "name", str, ctx),
                str(t.get("pattern", t.get("name"))),
                tomlfile.require(doc, t, "torch", str, ctx),
                tomlfile.require(doc, t, "header", str, ctx),
                tomlfile.require(doc, t, "source", str, ctx),
            )
        )
    return tuple(out)


@cache
def load() -> Knowledge:
    nvcc, torch, providers = load_toolchains(_data("toolchains.toml"))
    return Knowledge(nvcc, torch, providers, load_api(_data("api.toml")))
