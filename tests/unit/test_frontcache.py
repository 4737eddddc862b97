"""The front-end content cache: same preprocessed input and flags -> same key, whatever
the cell's paths; any change in content, flags or nvcc -> another key."""

from __future__ import annotations

from pathlib import Path

from vllm_matrix.stages.probe.frontcache import FrontEndCache


def unit(base: Path, body: str) -> tuple[list[str], dict[str, str]]:
    tree, work = base / "tree", base / "probe"
    (work / "tmp").mkdir(parents=True)
    ii = work / "tmp" / "a.cpp4.ii"
    ii.write_text(f'# 1 "{tree}/csrc/a.cu"\n{body}\n# 2 "{work}/tmp/x.h"\n')
    argv = ["cudafe++", "--c++17", "--orig_src_file_name", f"{tree}/csrc/a.cu", str(ii)]
    return argv, {str(tree): "<tree>", str(work): "<work>"}


def test_same_content_in_two_cells_is_one_key(tmp_path: Path) -> None:
    c = FrontEndCache("12.4.131", root=tmp_path / "cache")
    a = c.key(*unit(tmp_path / "vllm0.10.1", "int f();"))
    b = c.key(*unit(tmp_path / "vllm0.10.1.1", "int f();"))
    assert a is not None and a == b
    assert not c.passed(a)
    c.store(a, "csrc/a.cu", 12.0)
    assert c.passed(b)


def test_content_flags_or_nvcc_change_the_key(tmp_path: Path) -> None:
    c = FrontEndCache("12.4.131", root=tmp_path / "cache")
    argv, roots = unit(tmp_path / "one", "int f();")
    k = c.key(argv, roots)
    argv2, roots2 = unit(tmp_path / "two", "int f(int);")
    assert c.key(argv2, roots2) != k
    assert c.key([*argv[:1], "--c++20", *argv[2:]], roots) != k
    assert FrontEndCache("12.8.93", root=tmp_path / "cache").key(argv, roots) != k


def test_no_preprocessed_input_no_key(tmp_path: Path) -> None:
    c = FrontEndCache("12.4.131", root=tmp_path)
    assert c.key(["cudafe++", "--c++17", str(tmp_path / "missing.ii")], {}) is None
