"""knowledge/data/build_env.toml: what each torch env variant installs beside torch."""

from __future__ import annotations

from functools import cache

from vllm_matrix.infra import datafiles, tomlfile
from vllm_matrix.infra.errors import ConfigError


@cache
def packages(variant: str) -> tuple[str, ...]:
    """The requirement strings the ``variant`` env ("headers" | "full") installs."""
    path = datafiles.data_path("build_env.toml")
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, ("variant",), "the top level")
    table = doc.data["variant"].get(variant)
    if not isinstance(table, dict):
        raise ConfigError(
            f"{path}: no [variant.{variant}]", fix=f"add [variant.{variant}] packages = [...]"
        )
    tomlfile.check_keys(doc, table, ("packages",), f"[variant.{variant}]")
    return tomlfile.str_list(doc, table.get("packages", []), "packages", f"[variant.{variant}]")
