"""What a CMake evaluation yields: kernel families, targets, and the tree's build model."""

from __future__ import annotations

from dataclasses import dataclass, field

CUDA_SUFFIXES = (".cu",)
CXX_SUFFIXES = (".cpp", ".cc", ".cxx")


@dataclass(frozen=True)
class Family:
    """One ``set_gencode_flags_for_srcs`` call the cell's configuration reaches."""

    arch_var: str  # "CUDA_ARCHS" (every arch) or a gated list, e.g. "MARLIN_ARCHS"
    srcs_var: str
    archs: tuple[str, ...]  # as vLLM writes them: "9.0", "9.0a", "9.0+PTX"
    sources: tuple[str, ...]  # relative to the tree
    where: str

    @property
    def name(self) -> str:
        return (
            self.arch_var if self.srcs_var in ("", "SRCS") else f"{self.arch_var}/{self.srcs_var}"
        )

    @property
    def gated(self) -> bool:
        """Arch-gated: its arch list is an intersection narrower than the tree's CUDA_ARCHS
        (not a target's catch-all family of sources without per-source arches)."""
        return self.arch_var != "CUDA_ARCHS" and not self.arch_var.startswith("target ")


@dataclass(frozen=True)
class Target:
    name: str
    sources: tuple[str, ...]
    options: tuple[str, ...]  # COMPILE_OPTIONS (generator expressions unevaluated)
    definitions: tuple[str, ...]
    includes: tuple[str, ...]  # absolute
    sabi: str | None  # Python_add_library USE_SABI
    where: str
    definition_where: tuple[tuple[str, str], ...] = ()  # definition -> its command's file:line
    # CUDA_ARCHITECTURES ("90-real", "80-virtual", "90"): how 0.4-0.6.1 trees set arches,
    # per target rather than per source
    cuda_architectures: tuple[str, ...] = ()

    def gencode(self) -> list[str]:
        """CMake's code generation flags for CUDA_ARCHITECTURES, as -gencode pairs."""
        out: list[str] = []
        for a in self.cuda_architectures:
            num, _, kind = a.partition("-")
            if kind in ("", "real"):
                out += ["-gencode", f"arch=compute_{num},code=sm_{num}"]
            if kind in ("", "virtual"):
                out += ["-gencode", f"arch=compute_{num},code=compute_{num}"]
        return out


@dataclass(frozen=True)
class BuildModel:
    """What the tree's CMake does for one (nvcc, arches, torch) configuration."""

    # CUDA_ARCHS after the tree's CUDA_SUPPORTED_ARCHS filter (before 0.6.2: the targets'
    # CUDA_ARCHITECTURES, the same filter applied by override_gpu_arches)
    cuda_archs: tuple[str, ...]
    families: tuple[Family, ...]
    targets: tuple[Target, ...]
    source_options: dict[str, tuple[str, ...]]  # per-source COMPILE_OPTIONS
    source_props: dict[str, dict[str, str]]  # COMPILE_FLAGS, INCLUDE_DIRECTORIES, LANGUAGE
    cuda_flags: str  # CMAKE_CUDA_FLAGS at the end of CMakeLists.txt
    cxx_flags: str
    fatal: tuple[str, ...]  # message(FATAL_ERROR ...) the configuration reaches
    notes: tuple[str, ...]
    empty_globs: tuple[str, ...]  # file(GLOB) patterns that match nothing (generated sources)
    skipped_includes: tuple[str, ...]  # external projects (flash-attention, FlashMLA, ...)

    def target_of(self, src: str) -> Target | None:
        return next((t for t in self.targets if src in t.sources), None)

    def family_of(self, src: str) -> Family | None:
        return next((f for f in self.families if src in f.sources), None)

    def built_sources(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in self.targets:
            for s in t.sources:
                if s.endswith(CUDA_SUFFIXES + CXX_SUFFIXES):
                    seen[s] = None
        return list(seen)


@dataclass
class TargetBuild:
    name: str
    sources: list[str]
    where: str
    sabi: str | None = None
    options: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)
    definition_where: dict[str, str] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)
    cuda_architectures: list[str] = field(default_factory=list)
