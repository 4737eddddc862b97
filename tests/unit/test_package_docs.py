"""Every package of vllm_matrix says, in its docstring, what it is for and what it may import
(issue 25): the layout is readable from the packages themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "vllm_matrix"
PACKAGES = sorted(p for p in PKG.rglob("__init__.py") if p.parent != PKG)


@pytest.mark.parametrize("init", PACKAGES, ids=lambda p: str(p.parent.relative_to(PKG)))
def test_a_package_says_what_it_is_for_and_what_it_may_import(init: Path) -> None:
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert len(doc.split()) > 8, f"{init.parent.name}: a docstring that says what it is for"
    assert "May import:" in doc or "may import" in doc, f"{init.parent.name}: what it may import"
