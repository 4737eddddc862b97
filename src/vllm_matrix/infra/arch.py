"""GPU arches: one frozen value type for every spelling the tool meets.

A cell names its arches as "9.0" / "9.0a" / "12.0f"; nvcc and cuobjdump say "sm_90a" and
"compute_90"; torch's TORCH_CUDA_ARCH_LIST says "9.0a;12.0+PTX"; cell ids say "sm90a".
``Arch.parse`` reads them all, the properties write each back. Cells keep their arches as
the canonical strings (``Arch.name``), which the result JSON and the cell ids are made of.

Compatibility (CUDA's binary rules, as the audit and the torch facts apply them): SASS runs
on its own major with an equal or higher minor, except arch-specific ("a") SASS, which runs
only on its exact arch; PTX JIT-compiles for any equal or newer arch.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from vllm_matrix.infra.errors import ConfigError

# "sm_90a" / "compute_90" / "sm90a" (a cell id's tag) / "90" / "9.0" / "12.0f", "+PTX" last
_ARCH = re.compile(r"^(?:sm_?|compute_)?(\d+)(?:\.(\d+))?([af]?)(\+PTX)?$")
_SUFFIXES = ("", "a", "f")
_SPELLINGS = 'write arches like "9.0", "sm_90", "9.0a" or "12.0f"'


@dataclass(frozen=True, order=True)
class Arch:
    """A GPU arch: capability ``major.minor``, ``suffix`` '' (plain), 'a' (arch-specific:
    9.0a's wgmma) or 'f' (family: 12.0f, portable within the major), and ``ptx`` (torch's
    "+PTX": embed PTX too). Orders by (major, minor, suffix): 9.0 < 9.0a < 10.0."""

    major: int
    minor: int
    suffix: str = ""
    ptx: bool = False

    def __post_init__(self) -> None:
        if self.suffix not in _SUFFIXES:
            raise ValueError(f"arch suffix {self.suffix!r} is not one of {_SUFFIXES}")

    @classmethod
    def parse(cls, text: str) -> Arch:
        """'9.0' / '90' / 'sm_90a' / 'compute_90' / 'sm90a' / '12.0f' / '9.0+PTX'.
        A bare number is capability x 10 ('120' is 12.0). ConfigError for anything else."""
        if cls is Arch:  # immutable: one parse per spelling (the map parses millions)
            return _parse(text)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Arch:
        m = _ARCH.match(text.strip())
        if m:
            major, minor, suffix, ptx = m.groups()
            if minor is None and len(major) >= 2:
                major, minor = major[:-1], major[-1]
            if minor is not None:
                return cls(int(major), int(minor), suffix, bool(ptx))
        raise ConfigError(f"'{text}' is not a GPU arch", fix=_did_you_mean(text))

    @property
    def name(self) -> str:
        """'9.0a': the canonical spelling (a cell's arch); no '+PTX'."""
        return f"{self.major}.{self.minor}{self.suffix}"

    def __str__(self) -> str:
        return self.name + ("+PTX" if self.ptx else "")

    @property
    def base(self) -> Arch:
        """The plain capability: 9.0 for 9.0a, 12.0 for 12.0f+PTX."""
        return Arch(self.major, self.minor)

    @property
    def number(self) -> int:
        """90 for 9.0a: the capability as an integer, suffix dropped."""
        return self.major * 10 + self.minor

    @property
    def sm(self) -> str:
        """'sm_90a': the real (SASS) arch as nvcc names it."""
        return f"sm_{self.number}{self.suffix}"

    @property
    def compute(self) -> str:
        """'compute_90a': the virtual (PTX) arch as nvcc names it."""
        return f"compute_{self.number}{self.suffix}"

    @property
    def tag(self) -> str:
        """'sm90a': the arch in a cell id."""
        return f"sm{self.number}{self.suffix}"

    @property
    def torch_name(self) -> str:
        """The entry of TORCH_CUDA_ARCH_LIST: torch's CMake parses "9.0a" and "9.0+PTX"
        but not family targets ("12.0f": "Unknown CUDA Architecture Name"); vLLM derives
        its own family targets from the plain number."""
        return f"{self.major}.{self.minor}{self.suffix.replace('f', '')}" + (
            "+PTX" if self.ptx else ""
        )

    def gencode(self) -> list[str]:
        """nvcc's flags for this arch: SASS, and PTX too when ``ptx``."""
        out = ["-gencode", f"arch={self.compute},code={self.sm}"]
        if self.ptx:
            out += ["-gencode", f"arch={self.compute},code={self.compute}"]
        return out

    def runs_sass_of(self, sass: Arch) -> bool:
        """Whether SASS built for ``sass`` serves ``self``: its own arch, or (binary
        compatible) the same major and not newer, where neither is arch-specific (an 'a'
        cubin runs only on its own arch; an 'a' target wants exactly its own SASS). A family
        ('f') target takes any such SASS of its major."""
        if sass.name == self.name:
            return True
        return (
            sass.suffix != "a"
            and self.suffix != "a"
            and sass.major == self.major
            and sass.minor <= self.minor
        )

    def jits_ptx_of(self, ptx: Arch) -> bool:
        """Whether PTX of the virtual arch ``ptx`` JIT-compiles for ``self``: the same or an
        older arch, not arch-specific, or exactly ``self`` when ``self`` is arch-specific."""
        if ptx.suffix == "a":
            return self.suffix == "a" and ptx.name == self.name
        return (ptx.major, ptx.minor) <= (self.major, self.minor)


def _did_you_mean(text: str) -> str:
    """The fix for a bad arch: the near spelling when a tidy-up parses ('SM_90A',
    '9,0', 'sm-90'), else the spellings accepted."""
    tidy = text.strip().lower().replace(",", ".").replace("-", "_").replace("+ptx", "+PTX")
    m = _ARCH.match(tidy)
    if tidy != text.strip() and m and (m.group(2) is not None or len(m.group(1)) >= 2):
        return f"did you mean '{Arch.parse(tidy)}'? ({_SPELLINGS})"
    return _SPELLINGS


def normalize_arch(text: str) -> str:
    """'sm_90a' / '90a' / '9.0a' -> '9.0a'; '12.0f' stays. ConfigError when not an arch
    (a data file's arch is a build target: torch's '+PTX' is not one)."""
    arch = Arch.parse(text)
    if arch.ptx:
        raise ConfigError(f"'{text}' is not a GPU arch", fix=_SPELLINGS)
    return arch.name


def arch_tag(arch: str) -> str:
    """'9.0a' -> 'sm90a' (for cell ids)."""
    return Arch.parse(arch).tag


def parse_arch_list(text: str) -> tuple[str, ...]:
    """'9.0;12.0' / '9.0 12.0+PTX' / 'sm_90' (TORCH_CUDA_ARCH_LIST or --arch) -> canonical
    arches ('+PTX' dropped); ConfigError when one is bad or none is given."""
    archs = tuple(Arch.parse(a).name for a in text.replace(";", " ").replace(",", " ").split())
    if not archs:
        raise ConfigError("no GPU arch given", fix="pass --arch 9.0 (or set TORCH_CUDA_ARCH_LIST)")
    return archs


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Arch:
    return Arch._parse(text)
