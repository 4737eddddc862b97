"""GPU product names → compute capability (knowledge/data/gpus.toml), for ``--gpu``.

A target is often not this machine: "RTX 5090" names its arch (12.0) as well as
``--arch 12.0`` does. Names match without case, spaces, punctuation or the vendor's
NVIDIA/GeForce/Tesla prefixes, so ``"NVIDIA GeForce RTX 5090"`` (what nvidia-smi prints)
and ``"rtx5090"`` find the same row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from vllm_matrix.infra import datafiles, tomlfile
from vllm_matrix.infra.errors import ConfigError

_PREFIX = re.compile(r"^(nvidia|geforce|tesla|quadro)+")


@dataclass(frozen=True)
class GpuModel:
    name: str
    cc: str  # "12.0"
    aliases: tuple[str, ...]
    source: str
    note: str = ""


def _key(name: str) -> str:
    k = re.sub(r"[^a-z0-9]", "", name.lower())
    while True:
        k2 = _PREFIX.sub("", k)
        if k2 == k:
            return k
        k = k2


@cache
def load() -> tuple[GpuModel, ...]:
    doc = tomlfile.load(datafiles.data_path("gpus.toml"))
    tomlfile.check_keys(doc, doc.data, ("source", "gpu"), "the top level")
    default = str(doc.data.get("source", {}).get("default", ""))
    out = []
    for name, row in doc.data.get("gpu", {}).items():
        ctx = f"[gpu.{name!r}]"
        tomlfile.check_keys(doc, row, ("cc", "aliases", "source", "note"), ctx)
        cc = tomlfile.require(doc, row, "cc", str, ctx)
        if not re.fullmatch(r"\d+\.\d+", cc):
            raise ConfigError(f"{doc.where(name)}: cc {cc!r} is not MAJOR.MINOR", fix='e.g. "12.0"')
        aliases = tomlfile.str_list(doc, row.get("aliases", []), "aliases", ctx)
        src = str(row.get("source", default))
        out.append(GpuModel(name, cc, aliases, src, str(row.get("note", ""))))
    return tuple(out)


def lookup(name: str, models: tuple[GpuModel, ...] | None = None) -> GpuModel:
    """The row for ``name``; an error listing the known names when none matches."""
    models = models if models is not None else load()
    want = _key(name)
    for m in models:
        if want in {_key(n) for n in (m.name, *m.aliases)}:
            return m
    names = [m.name for m in models]
    raise ConfigError(
        f"--gpu {name!r}: not a GPU name the knowledge has (knowledge/data/gpus.toml)",
        fix=f"{tomlfile.did_you_mean(name, names)}; or name the arch itself with --arch "
        "(e.g. --arch 12.0 for an RTX 5090)",
    )


__all__ = ["GpuModel", "load", "lookup"]
