"""patches.py on small fixture trees: the series loader, selection, apply_all, copy_tree."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from conftest import need_program

from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.stages import patches
from vllm_matrix.stages.patches import PatchError, apply_all, copy_tree, load_series, select

REPO = Path(__file__).resolve().parents[2]

needs_patch = pytest.mark.usefixtures("have_patch")


@pytest.fixture
def have_patch() -> None:
    need_program("patch", "patch")


BASE = "".join(f"line {i}\n" for i in range(1, 41))


def udiff(rel: str, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            f"a/{rel}",
            f"b/{rel}",
        )
    )


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1
    return text.replace(old, new)


def make_tree(root: Path, version: str = "0.8.5", **files: str) -> Path:
    root.mkdir(parents=True)
    (root / "PKG-INFO").write_text(f"Name: vllm\nVersion: {version}\n")
    for name, text in (files or {"CMakeLists.txt": BASE}).items():
        (root / name).write_text(text)
    return root


def write_series(d: Path, body: str, **patch_files: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in patch_files.items():
        (d / name).write_text(text)
    (d / "series.toml").write_text(body)
    return d / "series.toml"


def entry(file: str, applies: str = ">=0.8,<0.9", extra: str = "") -> str:
    return (
        f'[[patch]]\nfile = "{file}"\napplies = "{applies}"\nwhy = "it breaks"\n'
        f'upstream = "https://example.invalid/pr/1"\n{extra}\n'
    )


ONE = udiff("CMakeLists.txt", BASE, edit(BASE, "line 5\n", "line 5\nadded\n"))


# ---------------------------------------------------------------------------
# series loading


def test_shipped_series_loads_and_is_complete() -> None:
    series = load_series(root=REPO)
    assert series, "patches/series.toml lists no patch"
    by_name = {p.name: p for p in series}
    fb = by_name["cmake-python-executable-env-fallback"]
    assert fb.paths() == ("CMakeLists.txt",) and fb.strip == 1
    assert "0.8.5" in fb.applies and "0.3.3" not in fb.applies
    assert fb.upstream.endswith("/pull/17830")


def test_default_path_is_under_root(tmp_path: Path) -> None:
    write_series(tmp_path / "patches", entry("one.patch"), **{"one.patch": ONE})
    (s,) = load_series(root=tmp_path)
    assert s.name == "one" and s.file == tmp_path / "patches" / "one.patch"
    assert s.paths() == ("CMakeLists.txt",)


def test_unknown_key_names_file_line_and_suggestion(tmp_path: Path) -> None:
    body = entry("one.patch") + entry("two.patch", extra="aplies = '>=1'")
    path = write_series(tmp_path, body, **{"one.patch": ONE, "two.patch": ONE})
    with pytest.raises(ConfigError) as err:
        load_series(path)
    assert f"{path}:12: unknown key 'aplies' in [[patch]] #2" in err.value.message
    assert err.value.fix == "did you mean 'applies'?"


def test_missing_patch_file(tmp_path: Path) -> None:
    path = write_series(tmp_path, entry("oen.patch"), **{"one.patch": ONE})
    with pytest.raises(ConfigError, match=r"series.toml:2: .*names oen.patch, which is not") as err:
        load_series(path)
    assert err.value.fix == "did you mean 'one.patch'?"


def test_unlisted_patch_file(tmp_path: Path) -> None:
    path = write_series(tmp_path, entry("one.patch"), **{"one.patch": ONE, "stray.patch": ONE})
    with pytest.raises(ConfigError, match=r"stray.patch is not listed in .*series.toml"):
        load_series(path)


@pytest.mark.parametrize(
    ("applies", "message"),
    [
        ("=>0.6.2", r"series.toml:3: applies = '=>0.6.2' .* not a version specifier set"),
        ("0.8.5", r"not a version specifier set"),
        ("", r"applies in \[\[patch\]\] #1 is empty"),
    ],
)
def test_bad_specifier(tmp_path: Path, applies: str, message: str) -> None:
    path = write_series(tmp_path, entry("one.patch", applies), **{"one.patch": ONE})
    with pytest.raises(ConfigError, match=message):
        load_series(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("strip = -1", r"strip .* must be 0 or more"),
        ('strip = "1"', r"'strip' .* must be a int"),
    ],
)
def test_bad_strip(tmp_path: Path, extra: str, message: str) -> None:
    path = write_series(tmp_path, entry("one.patch", extra=extra), **{"one.patch": ONE})
    with pytest.raises(ConfigError, match=message):
        load_series(path)


def test_missing_key_and_bad_upstream(tmp_path: Path) -> None:
    body = '[[patch]]\nfile = "one.patch"\napplies = ">=0.8"\nupstream = "https://x"\n'
    path = write_series(tmp_path, body, **{"one.patch": ONE})
    with pytest.raises(ConfigError, match=r"\[\[patch\]\] #1 is missing 'why'"):
        load_series(path)
    path.write_text(entry("one.patch").replace("https://example.invalid/pr/1", "PR 1"))
    with pytest.raises(ConfigError, match=r"upstream .* must be a URL"):
        load_series(path)


def test_listed_twice_and_not_a_diff(tmp_path: Path) -> None:
    path = write_series(tmp_path, entry("one.patch") * 2, **{"one.patch": ONE})
    with pytest.raises(ConfigError, match=r"one.patch is listed twice"):
        load_series(path)
    path.write_text(entry("one.patch"))
    (tmp_path / "one.patch").write_text("just words\n")
    with pytest.raises(ConfigError, match=r"no unified diff"):
        load_series(path)


def test_paths_escaping_the_tree_are_rejected() -> None:
    text = udiff("../outside", "a\n", "b\n")
    with pytest.raises(ConfigError, match="outside the tree"):
        patches.parse_targets(text, 1, "x.patch")
    with pytest.raises(ConfigError, match="no path left"):
        patches.parse_targets(text, 3, "x.patch")


# ---------------------------------------------------------------------------
# selection


def test_select_by_version(tmp_path: Path) -> None:
    body = entry("old.patch", ">=0.4.1,<0.8") + entry("mid.patch", ">=0.6.2,<0.9.1")
    path = write_series(tmp_path, body, **{"old.patch": ONE, "mid.patch": ONE})
    series = load_series(path)
    assert [p.name for p in select(series, "0.5.0")] == ["old"]
    assert [p.name for p in select(series, "0.7.3")] == ["old", "mid"]
    assert [p.name for p in select(series, "0.9.0.1")] == ["mid"]
    assert [p.name for p in select(series, "0.8.6.dev12+gabc")] == ["mid"]
    assert select(series, "0.9.1") == ()
    with pytest.raises(PatchError, match="not a version number"):
        select(series, "unknown")


# ---------------------------------------------------------------------------
# applying


def one_patch(d: Path, name: str, text: str, applies: str = ">=0.8,<0.9") -> patches.Patch:
    (p,) = load_series(
        write_series(d / name, entry(f"{name}.patch", applies), **{f"{name}.patch": text})
    )
    return p


@needs_patch
def test_apply_then_already_applied(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    p = one_patch(tmp_path, "one", ONE)
    log = tmp_path / "patch.log"
    (a,) = apply_all(tree, (p,), log)
    assert a.status == "applied" and a.to_json()["status"] == "applied"
    assert "line 5\nadded\nline 6\n" in (tree / "CMakeLists.txt").read_text()
    mtime = (tree / "CMakeLists.txt").stat().st_mtime_ns
    (b,) = apply_all(tree, (p,), log)
    assert b.status == "already-applied"
    assert (tree / "CMakeLists.txt").stat().st_mtime_ns == mtime
    assert "$ patch -p1 --force --fuzz=0" in log.read_text()
    assert not list(tree.glob("*.orig")) and not list(tree.glob("*.rej"))
    assert sorted(x.name for x in tree.iterdir()) == ["CMakeLists.txt", "PKG-INFO"]


@needs_patch
def test_second_patch_fails_nothing_changes(tmp_path: Path) -> None:
    other = "".join(f"row {i}\n" for i in range(1, 41))
    tree = make_tree(tmp_path / "tree", "0.8.2", **{"CMakeLists.txt": BASE, "setup.py": other})
    first = one_patch(tmp_path, "first", ONE)
    wanted = edit(other, "row 30\n", "row 30 changed\n")
    wanted = edit(wanted, "row 3\n", "row 3 changed\n")
    bad = udiff("setup.py", other, wanted)
    (tree / "setup.py").write_text(edit(other, "row 31\n", "row 31 moved away\n"))
    second = one_patch(tmp_path, "second", bad)
    before = {f.name: f.read_bytes() for f in tree.iterdir()}
    with pytest.raises(PatchError) as err:
        apply_all(tree, (first, second))
    msg = err.value.message
    assert "patch second does not apply to vLLM 0.8.2" in msg
    assert "setup.py: Hunk #2 FAILED at 27" in msg
    assert "Hunk #1" not in msg and "the tree is unchanged" in msg
    assert err.value.fix and "applies" in err.value.fix and "0.8.2" in err.value.fix
    assert {f.name: f.read_bytes() for f in tree.iterdir()} == before


@needs_patch
def test_partly_applied_patch_is_an_error_not_already_applied(tmp_path: Path) -> None:
    two = edit(edit(BASE, "line 5\n", "line 5\nadded\n"), "line 35\n", "line 35\nmore\n")
    tree = make_tree(
        tmp_path / "tree", **{"CMakeLists.txt": edit(BASE, "line 5\n", "line 5\nadded\n")}
    )
    p = one_patch(tmp_path, "two", udiff("CMakeLists.txt", BASE, two))
    with pytest.raises(PatchError, match=r"CMakeLists.txt: Hunk #1 FAILED at 3"):
        apply_all(tree, (p,), version="0.8.9")


@needs_patch
def test_stacked_patches_and_new_files(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    after_one = edit(BASE, "line 5\n", "line 5\nadded\n")
    on_top = udiff("CMakeLists.txt", after_one, edit(after_one, "added\n", "added again\n"))
    new_file = "--- /dev/null\n+++ b/cmake/extra.cmake\n@@ -0,0 +1 @@\n+set(X 1)\n"
    p1 = one_patch(tmp_path, "p1", ONE)
    p2 = one_patch(tmp_path, "p2", on_top + new_file)
    assert p2.paths() == ("CMakeLists.txt", "cmake/extra.cmake")
    assert [a.status for a in apply_all(tree, (p1, p2))] == ["applied", "applied"]
    assert "line 5\nadded again\nline 6" in (tree / "CMakeLists.txt").read_text()
    assert (tree / "cmake" / "extra.cmake").read_text() == "set(X 1)\n"
    assert [a.status for a in apply_all(tree, (p1, p2))] == [
        "already-applied",
        "already-applied",
    ]


@needs_patch
def test_creating_patch_twice(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    new_file = "--- /dev/null\n+++ b/cmake/extra.cmake\n@@ -0,0 +1 @@\n+set(X 1)\n"
    p = one_patch(tmp_path, "new", new_file)
    assert [a.status for a in apply_all(tree, (p,))] == ["applied"]
    assert [a.status for a in apply_all(tree, (p,))] == ["already-applied"]
    assert (tree / "cmake" / "extra.cmake").read_text() == "set(X 1)\n"


@needs_patch
def test_relative_series_path_still_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_series(tmp_path / "proj" / "patches", entry("one.patch"), **{"one.patch": ONE})
    tree = make_tree(tmp_path / "tree")
    monkeypatch.chdir(tmp_path / "proj")
    series = load_series(root=Path("."))
    assert series[0].file.is_absolute()
    assert [a.status for a in apply_all(tree, series)] == ["applied"]


@needs_patch
def test_missing_file_is_named(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", "0.3.3", **{"setup.py": "x\n"})
    p = one_patch(tmp_path, "one", ONE)
    with pytest.raises(
        PatchError,
        match=r"patch one does not apply to vLLM 0\.3\.3: "
        r"CMakeLists.txt is not in the tree",
    ):
        apply_all(tree, (p,))


def test_failed_hunks_parsing() -> None:
    out = (
        "checking file CMakeLists.txt\nHunk #1 succeeded at 55 (offset 14 lines).\n"
        "Hunk #2 FAILED at 57.\n1 out of 2 hunks FAILED\nchecking file 'a b.txt'\n"
        "Hunk #1 FAILED at 3 (different line endings).\n"
        "patch: **** malformed patch at line 12: @@ -1\n"
    )
    assert patches.failed_hunks(out) == [
        "CMakeLists.txt: Hunk #2 FAILED at 57",
        "a b.txt: Hunk #1 FAILED at 3 (different line endings)",
        "malformed patch at line 12: @@ -1",
    ]


def test_nothing_to_apply_touches_nothing(tmp_path: Path) -> None:
    assert apply_all(tmp_path / "absent", ()) == ()


# ---------------------------------------------------------------------------
# copy_tree


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*") if f.is_file()}


@needs_patch
@pytest.mark.parametrize("linked", [False, True])
def test_copy_tree_never_touches_the_source(tmp_path: Path, linked: bool) -> None:
    src = make_tree(tmp_path / "src", **{"CMakeLists.txt": BASE, "setup.py": "x\n"})
    (src / "csrc").mkdir()
    (src / "csrc" / "k.cu").write_text("kernel\n")
    (src / "link").symlink_to("setup.py")
    before = _snapshot(src)
    p = one_patch(tmp_path, "one", ONE)
    dst = copy_tree(src, tmp_path / "work", private=patches.touched([p]) if linked else None)
    assert _snapshot(dst) == before and (dst / "link").is_symlink()
    apply_all(dst, (p,))
    assert _snapshot(src) == before
    assert "added" in (dst / "CMakeLists.txt").read_text()
    same_inode = (dst / "csrc" / "k.cu").stat().st_ino == (src / "csrc" / "k.cu").stat().st_ino
    assert same_inode is linked
    with pytest.raises(PatchError, match="already exists"):
        copy_tree(src, dst)


@needs_patch
def test_apply_never_writes_through_a_hard_link(tmp_path: Path) -> None:
    # Even a copy whose patched file is itself hard-linked keeps the source intact:
    # apply_all replaces files, it does not rewrite them.
    src = make_tree(tmp_path / "src")
    before = _snapshot(src)
    dst = copy_tree(src, tmp_path / "work", private=())
    apply_all(dst, (one_patch(tmp_path, "one", ONE),))
    assert _snapshot(src) == before and "added" in (dst / "CMakeLists.txt").read_text()


def test_a_matrix_kept_elsewhere_gets_the_shipped_series(tmp_path: Path) -> None:
    # benchmarks/studies/accuracy/matrix.toml has no patches/ beside it: the shipped series
    # applies (before this, every cell of such a matrix failed at the patches stage).
    assert patches.default_series(tmp_path) == patches.SHIPPED
    assert patches.load_series(root=tmp_path) == patches.load_series(patches.SHIPPED)
    own = tmp_path / "patches" / "series.toml"
    own.parent.mkdir()
    own.write_text("")
    assert patches.default_series(tmp_path) == own and patches.load_series(root=tmp_path) == ()
