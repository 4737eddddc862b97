"""What a CMake evaluation yields: kernel families, targets, and the tree's build model;
what the tree declares across nvcc versions (assignments, FetchContent sources, gates)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vllm_matrix.infra.arch import Arch

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

    def built_for(self, number: int) -> tuple[str, ...]:
        """The family's arches that give sm_<number> code: its own SASS, or PTX of an older
        one."""
        return built_for(self.archs, number)

    @property
    def gated(self) -> bool:
        """Arch-gated: its arch list is an intersection narrower than the tree's CUDA_ARCHS
        (not a target's catch-all family of sources without per-source arches)."""
        return self.arch_var != "CUDA_ARCHS" and not self.arch_var.startswith("target ")


def built_for(archs: Iterable[str], number: int) -> tuple[str, ...]:
    """Of ``archs`` as vLLM's CMake writes them, those that give sm_<number> code. Read as
    CMake does, its CUDA_ARCHITECTURES spelling too, which vLLM's own CMake writes into some
    lists (0.6.1 … 0.6.2's utils.cmake): "90-real" is SASS only, "80-virtual" PTX only."""
    out = []
    for a in archs:
        base, _, kind = a.partition("-")
        x = Arch.parse(base + ("+PTX" if kind == "virtual" else ""))
        if (x.number == number and kind != "virtual") or (x.ptx and x.number <= number):
            out.append(a)
    return tuple(out)


@dataclass(frozen=True)
class Gate:
    """An arch-gated kernel family: built only for ``archs`` and only with an nvcc newer
    than ``nvcc`` (``op`` ">" or ">="): a ``cuda_archs_loose_intersection(var "archs" ...)``
    whose result an if() tests together with ``CMAKE_CUDA_COMPILER_VERSION``, e.g.
        cuda_archs_loose_intersection(SCALED_MM_ARCHS "12.0;12.0a" "${CUDA_ARCHS}")
        if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 12.8 AND SCALED_MM_ARCHS)
          set(SRCS "csrc/quantization/cutlass_w8a8/scaled_mm_c3x_sm120.cu" ...)
    ``line``: the intersection's line in CMakeLists.txt."""

    var: str
    archs: tuple[str, ...]
    op: str  # ">=" | ">"
    nvcc: str
    sources: tuple[str, ...]
    line: int

    def needs(self) -> str:
        """The gate as a reader takes it: CMake's ``VERSION_GREATER 12.8`` compares the
        full compiler version (12.8.61 for CUDA 12.8), so every 12.8.x nvcc passes it --
        "nvcc ≥ 12.8", as vLLM's own comment above the gate says ("CUDA 12.8 or later")."""
        if self.op == ">":
            return (
                f"nvcc ≥ {self.nvcc} (CMake `VERSION_GREATER {self.nvcc}` holds for nvcc "
                f"{self.nvcc}.x, which reports {self.nvcc}.<build>)"
            )
        return f"nvcc ≥ {self.nvcc}"

    def built_with(self, nvcc: str) -> bool:
        # Compared on major.minor: "VERSION_GREATER 12.8" holds for every real 12.8.x nvcc
        # (CMake compares 12.8.61 > 12.8), so ">" and ">=" agree for released toolkits.
        have = tuple(int(x) for x in nvcc.split(".")[:2])
        return have >= tuple(int(x) for x in self.nvcc.split(".")[:2])

    @property
    def where(self) -> str:
        return f"CMakeLists.txt:{self.line}"


@dataclass(frozen=True)
class Assignment:
    """One set() the evaluation executed: the values before CACHE/PARENT_SCOPE."""

    var: str
    values: tuple[str, ...]
    where: str  # the set() command's file:line

    @property
    def file(self) -> str:
        return self.where.rsplit(":", 1)[0]

    @property
    def line(self) -> int:
        return int(self.where.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Fetch:
    """One FetchContent_Declare/Populate the evaluation executed."""

    name: str
    values: dict[str, str]  # GIT_REPOSITORY, GIT_TAG, URL, SOURCE_DIR as evaluated
    where: dict[str, str]  # the same keys: file:line where each value is written
    file: str  # the file of the command


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
