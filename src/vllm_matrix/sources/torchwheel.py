"""Facts about a torch wheel, read from the real wheel on the index without
downloading it whole: HTTP range requests give zipfile the central directory and
just the members we ask for (~10 MB of an ~800 MB wheel).

What we read: ``torch/version.py`` (the CUDA version it was built with) and the
``CUDA_ARCH_FLAGS`` string compiled into ``torch/lib/libtorch_python.so`` (what
``torch._C._cuda_getArchFlags()`` returns: the SASS / PTX arches of the wheel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.version import Version

from vllm_matrix.infra import config, index
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.errors import NotAvailable, SourceError

_FLAGS = re.compile(rb"(?:sm|compute)_\d+[af]?(?: (?:sm|compute)_\d+[af]?)+")


@dataclass(frozen=True)
class TorchWheelFacts:
    torch: str  # "2.6.0"
    local: str  # "cu124" (the default wheel's local version label)
    cuda: str  # "12.4"
    sass: tuple[str, ...]  # ("5.0", ..., "9.0")
    ptx: tuple[str, ...]
    pythons: tuple[str, ...]  # CPython versions with a linux x86_64 wheel
    wheel: str  # the file the facts were read from
    # the C++ ABI of libtorch_python.so: std::__cxx11 symbols present or not
    cxx11_abi: bool | None = None
    variant: str | None = None  # "cu128" when read from that variant's index


def parse_arch_flags(flags: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    sass = tuple(Arch.parse(t).name for t in flags.split() if t.startswith("sm_"))
    ptx = tuple(Arch.parse(t).name for t in flags.split() if t.startswith("compute_"))
    return sass, ptx


def variant_index(variant: str, table: dict[str, str] | None = None) -> str:
    """The configured index URL for a torch variant; NotAvailable naming the setting."""
    found = config.torch_index_for(variant, table)
    if found is None:
        raise no_index(variant)
    return found[0]


def no_index(variant: str) -> NotAvailable:
    """No index configured for a torch variant: what to set."""
    var = config.TORCH_INDEX_ENV.format(variant.upper())
    return NotAvailable(
        f"torch +{variant} wheels come from PyTorch's {variant} index, and none is configured here",
        fix=f"set {var} (or [torch-index] {variant} in matrix.toml) to that index's URL",
    )


@cache
def linux_wheels(spec: str, base: str | None = None) -> tuple[index.IndexFile, ...]:
    """Linux x86_64 wheels of '2.7.1' (configured index) or '2.7.1+cu128' (from ``base``,
    the variant's own index, where the wheel versions carry the +cu128 label)."""
    want = Version(spec)
    return tuple(
        f
        for f in index.project_files("torch", base)
        if f.kind == "wheel"
        and f.version == want
        and "linux" in f.filename
        and "x86_64" in f.filename
    )


def _pick(wheels: tuple[index.IndexFile, ...]) -> index.IndexFile:
    """Any wheel carries the same facts; prefer cp312 so sources read alike."""
    return sorted(wheels, key=lambda f: ("-cp312-cp312-" not in f.filename, f.filename))[0]


def toml_entry(f: TorchWheelFacts) -> str:
    def q(xs: tuple[str, ...]) -> str:
        return "[" + ", ".join(f'"{x}"' for x in xs) + "]"

    src = f"{f.wheel}: torch/version.py + CUDA_ARCH_FLAGS in torch/lib/libtorch_python.so"
    key = f"{f.torch}+{f.variant}" if f.variant else f.torch
    abi = "" if f.cxx11_abi is None else f"cxx11_abi = {str(f.cxx11_abi).lower()}\n"
    return (
        f'[torch."{key}"]\n'
        f'local = "{f.local}"\n'
        f'cuda = "{f.cuda}"\n'
        f"sass = {q(f.sass)}\n"
        f"ptx = {q(f.ptx)}\n"
        f"pythons = {q(f.pythons)}\n"
        f"{abi}"
        'basis = "measured"\n'
        f'source = "{src}"\n'
    )


def read_facts(spec: str, base: str | None = None) -> TorchWheelFacts:
    """Facts of '2.6.0' (the configured index's default wheel) or of a variant such as
    '2.7.1+cu128', read from the variant's index (``base``, else its configured URL)."""
    version, variant = config.split_torch(spec)
    if variant is not None:
        base = base or variant_index(variant)
    wheels = linux_wheels(spec, base)
    if not wheels:
        raise SourceError(
            f"torch {spec} has no linux x86_64 wheel on the index" + (f" {base}" if base else ""),
            fix="pick a torch release that the index serves (`pip index versions torch`)",
        )
    pythons = sorted(
        {m.group(1) for f in wheels if (m := re.search(r"-cp3(\d+)-", f.filename))}, key=int
    )
    wheel = _pick(wheels)
    got = index.zip_members(wheel.url, ("torch/version.py", "torch/lib/libtorch_python.so"))
    ver_py, libpy = got["torch/version.py"], got["torch/lib/libtorch_python.so"]
    if ver_py is None or libpy is None:
        raise SourceError(
            f"{wheel.filename}: not a torch wheel layout I know",
            fix="report this wheel; the reader needs updating",
        )
    full, cuda = read_version_py(ver_py.decode())
    local = full.partition("+")[2] if full else ""
    flags = max((m.decode() for m in _FLAGS.findall(libpy)), key=len, default="")
    sass, ptx = parse_arch_flags(flags)
    return TorchWheelFacts(
        torch=version,
        local=local,
        cuda=cuda or "",
        sass=sass,
        ptx=ptx,
        pythons=tuple(f"3.{p}" for p in pythons),
        wheel=wheel.filename,
        cxx11_abi=cxx11_abi_of(libpy),
        variant=variant,
    )


def cxx11_abi_of(lib: bytes) -> bool:
    """Whether a libstdc++-linked library uses the C++11 ABI: its mangled names then
    mention std::__cxx11 (thousands of times in libtorch_python.so; never with ABI 0).
    Measured: torch 2.6.0 (PyPI) 0 occurrences, 2.7.1 and 2.11.0 several thousand."""
    return b"__cxx11" in lib


def arch_flags_of(libtorch_python: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(SASS, PTX) arches compiled into an installed torch (same string as the wheel's)."""
    data = libtorch_python.read_bytes()
    flags = max((m.decode() for m in _FLAGS.findall(data)), key=len, default="")
    return parse_arch_flags(flags)


def has_member(version: str, member: str) -> bool:
    """Whether the torch wheel contains ``member`` (e.g. a header introduced later)."""
    wheels = linux_wheels(version)
    if not wheels:
        raise SourceError(
            f"torch {version} has no linux x86_64 wheel on the index",
            fix="pick a torch release that the index serves",
        )
    wheel = _pick(wheels)
    return index.zip_members(wheel.url, (member,))[member] is not None


def read_version_py(text: str) -> tuple[str | None, str | None]:
    """(``__version__``, ``cuda``) of a torch/version.py; None where it has none (a CPU
    build's cuda is None). The one reader for wheels, envs and the current env."""
    mv = re.search(r"__version__ = '([^']+)'", text)
    mc = re.search(r"cuda(?:: Optional\[str\])? = '([^']+)'", text)
    return (mv.group(1) if mv else None, mc.group(1) if mc else None)
