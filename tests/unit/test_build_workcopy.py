"""The work copy: made once, reused, remade when the source changes."""

from __future__ import annotations

from pathlib import Path

from test_build_pins import PYPROJECT_INLINE, REQ_COMMON, REQ_CUDA_042, tree_of

from vllm_matrix.sources.sdist import SourceTree
from vllm_matrix.stages.compile import workcopy
from vllm_matrix.stages.compile.workcopy import prepare_work_copy

# ------------------------------------------------------------------ the work copy


def src_tree(root: Path, version: str = "0.4.2") -> SourceTree:
    tree_of(
        root,
        {
            "PKG-INFO": f"Name: vllm\nVersion: {version}\n",
            "CMakeLists.txt": "project(vllm)\n",
            "setup.py": "raise SystemExit('not run in unit tests')\n",
            "requirements-cuda.txt": REQ_CUDA_042,
            "requirements-common.txt": REQ_COMMON,
            "pyproject.toml": PYPROJECT_INLINE,
        },
    )
    return SourceTree(version, root, f"path {root}")


def test_work_copy_is_made_once_then_reused(tmp_path: Path) -> None:
    tree = src_tree(tmp_path / "cache-tree")
    dst = tmp_path / "work" / "src"
    first = prepare_work_copy(tree, dst, ())
    assert not first.reused and len(first.pins) == 4
    assert "torch" in (tree.root / "requirements-cuda.txt").read_text()  # cache untouched
    (dst / "build" / "temp.x").mkdir(parents=True)
    (dst / "build" / "temp.x" / "obj.o").write_text("compiled")
    again = prepare_work_copy(tree, dst, ())
    assert again.reused and again.pins == first.pins
    assert (dst / "build" / "temp.x" / "obj.o").exists()  # the build dir survives
    clean = prepare_work_copy(tree, dst, (), clean=True)
    assert not clean.reused and clean.remade_because == "a clean build was asked for"
    assert not (dst / "build").exists()


def test_half_made_work_copy_is_discarded(tmp_path: Path) -> None:
    tree = src_tree(tmp_path / "t")
    dst = tmp_path / "work" / "src"
    (tmp_path / "work" / "src.partial").mkdir(parents=True)  # a killed copy
    dst.mkdir()  # a copy without its marker
    wc = prepare_work_copy(tree, dst, ())
    assert not wc.reused and "no marker" in (wc.remade_because or "")
    assert not (tmp_path / "work" / "src.partial").exists()
    assert (dst / workcopy.WORK_MARKER).is_file()


def test_other_source_remakes_the_copy(tmp_path: Path) -> None:
    tree = src_tree(tmp_path / "t")
    dst = tmp_path / "w" / "src"
    prepare_work_copy(tree, dst, ())
    other = SourceTree("0.4.2", tree.root, "sdist other sha256:00")
    assert prepare_work_copy(other, dst, ()).remade_because == (
        "the source or the patch series changed"
    )
