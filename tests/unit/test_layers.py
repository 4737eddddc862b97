"""What import-linter cannot say: no module reaches into another package's private names.

A stage may use another stage's public names (its result types and entry points); a name
with a leading underscore is that module's own. Checked on the AST of every module: an
``from X import _name`` or an ``alias._name`` attribute on an imported module, where X is
a vllm_matrix module outside the importer's own package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "vllm_matrix"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    """The unit that owns private names: vllm_matrix.<layer>.<pkg> for stages (a stage
    package), vllm_matrix.<layer> elsewhere."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[1:2] == ["stages"] else parts[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def reaches() -> list[str]:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        mod = _module(path)
        own = _package(mod)
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> vllm_matrix module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("vllm_matrix"):
                    continue
                for a in node.names:
                    target = f"{node.module}.{a.name}"
                    if (PKG.parent / (target.replace(".", "/") + ".py")).exists() or (
                        PKG.parent / target.replace(".", "/")
                    ).is_dir():
                        aliases[a.asname or a.name] = target
                    elif _private(a.name) and _package(node.module) != own:
                        found.append(f"{mod}: from {node.module} import {a.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
                and _package(aliases[node.value.id]) != own
            ):
                found.append(f"{mod}: {aliases[node.value.id]}.{node.attr}")
    return sorted(set(found))


def test_no_module_reaches_into_another_packages_private_names() -> None:
    assert reaches() == []
