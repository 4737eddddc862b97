"""The shipped patch series against every real vLLM sdist its ranges name.

The releases are the committed ones (knowledge/data/vllm_pins.toml, through pins.releases()
in the suite's pinned mode): a release the index publishes later is `nox -s currency`'s to
find (it applies each patch to it and says whether to extend or cap the range), never a
reason for this suite to turn red.

For each of those releases inside a patch's range: a work copy of the files
the checks need, apply the selection ("applied"), apply again ("already-applied"),
the cache untouched; copy_tree itself on the largest release. Then the effect: the patched
CMake logic, cut out of each release's CMakeLists.txt, is configured for real with
cmake (a stub for vLLM's find_python_from_executable, and where this cmake can run
it, the release's own macro from cmake/utils.cmake).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from conftest import skip_or_fail
from packaging.version import Version

from vllm_matrix.infra import proc
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import pins
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages.patches import (
    Applied,
    Patch,
    PatchError,
    apply_all,
    copy_tree,
    load_series,
    select,
    touched,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]

REPO = Path(__file__).resolve().parents[2]
FALLBACK = "cmake-python-executable-env-fallback"
MESSAGE = "Please set VLLM_PYTHON_EXECUTABLE to the path of the desired python version"


@cache
def sdist_versions() -> tuple[str, ...]:
    """The committed release set, plus 0.3.3 (the newest sdist without a CMake build,
    for the below-the-range check)."""
    return ("0.3.3", *pins.releases())


def series() -> tuple[Patch, ...]:
    return load_series(root=REPO)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Besides the patched files, what the checks below read: the version and the
# release's find_python_from_executable.
KEEP = ("PKG-INFO", "cmake/utils.cmake")


def slim_copy(src: Path, dst: Path, rels: tuple[str, ...]) -> Path:
    """Only the files the checks need: 75 whole trees are 600k files to link and delete."""
    for rel in rels:
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    return dst


@dataclass(frozen=True)
class Row:
    version: str
    cached: Path
    work: Path
    first: tuple[Applied, ...]
    second: tuple[Applied, ...]
    cache_intact: bool
    seconds: float


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[Row]:
    """Every in-range release patched once and re-patched; done once for the module."""
    try:
        versions = sdist_versions()
    except MatrixError as exc:  # module fixtures run before need_index can skip
        skip_or_fail(f"package index not reachable: {exc}")
    shipped = series()
    base = tmp_path_factory.mktemp("releases")
    out: list[Row] = []
    for v in versions:
        chosen = select(shipped, v)
        if not chosen:
            continue
        start = time.monotonic()
        tree = source.sdist_tree(v)
        paths = touched(chosen)
        before = {p: sha(tree.root / p) for p in paths if (tree.root / p).is_file()}
        work = slim_copy(tree.root, base / v, (*paths, *KEEP))
        first = apply_all(work, chosen, base / f"{v}.log", version=v)
        second = apply_all(work, chosen, base / f"{v}.log", version=v)
        intact = before == {p: sha(tree.root / p) for p in before}
        out.append(Row(v, tree.root, work, first, second, intact, time.monotonic() - start))
    print("\nrelease        first     second           cache   seconds")
    for r in out:
        print(
            f"{r.version:<14} {','.join(a.status for a in r.first):<9} "
            f"{','.join(a.status for a in r.second):<16} "
            f"{'intact' if r.cache_intact else 'CHANGED':<7} {r.seconds:.2f}"
        )
    return out


def test_every_shipped_patch_covers_releases_on_the_index(rows: list[Row]) -> None:
    used = {a.patch.name for r in rows for a in r.first}
    assert used == {p.name for p in series()}, "a patch whose range holds no sdist"
    in_range = [v for v in sdist_versions() if select(series(), v)]
    assert [r.version for r in rows] == in_range
    assert len(in_range) >= 76  # 0.4.1 ... 0.34.0 has 76 sdists


def test_each_release_applies_then_is_already_applied(rows: list[Row]) -> None:
    bad = [
        r.version
        for r in rows
        if {a.status for a in r.first} != {"applied"}
        or {a.status for a in r.second} != {"already-applied"}
    ]
    assert not bad


def test_the_cache_is_never_written(rows: list[Row]) -> None:
    assert all(r.cache_intact for r in rows)


@pytest.mark.parametrize("linked", [True, False])
def test_copy_tree_of_the_largest_release(tmp_path: Path, linked: bool) -> None:
    """copy_tree on a whole real tree: timing, sharing, and the cache left as it was."""
    (patch,) = [p for p in series() if p.name == FALLBACK]
    version = max((v for v in sdist_versions() if v in patch.applies), key=Version)
    tree = source.sdist_tree(version)
    cached = {rel: sha(tree.root / rel) for rel in patch.paths()}
    start = time.monotonic()
    work = copy_tree(tree.root, tmp_path / "w", private=patch.paths() if linked else None)
    took = time.monotonic() - start
    (a,) = apply_all(work, (patch,), tmp_path / "patch.log")
    assert a.status == "applied"
    assert cached == {rel: sha(tree.root / rel) for rel in patch.paths()}
    for rel in patch.paths():
        assert (work / rel).stat().st_ino != (tree.root / rel).stat().st_ino
    shared = (work / "setup.py").stat().st_ino == (tree.root / "setup.py").stat().st_ino
    assert shared is linked
    files = sum(1 for _ in work.rglob("*"))
    print(f"\ncopy_tree vLLM {version} ({files} entries), linked={linked}: {took:.2f} s")


def test_fallback_text_is_in_every_patched_tree(rows: list[Row]) -> None:
    for r in rows:
        text = (r.work / "CMakeLists.txt").read_text()
        assert 'elseif (NOT "$ENV{VLLM_PYTHON_EXECUTABLE}" STREQUAL "")' in text, r.version
        assert MESSAGE in text, r.version  # the old message stays for the no-variable case
        assert "$ENV{VLLM_PYTHON_EXECUTABLE}" not in (r.cached / "CMakeLists.txt").read_text()


# ---------------------------------------------------------------------------
# The effect, configured for real


def cmake_exe() -> tuple[str, Version]:
    exe = os.environ.get("CMAKE") or shutil.which("cmake")
    if not exe:
        skip_or_fail("cmake not installed (PyPI cmake)")
    out = proc.run([exe, "--version"]).output
    m = re.search(r"cmake version (\d+\.\d+(\.\d+)?)", out)
    assert m, out
    return exe, Version(m.group(1))


def python_block(cmakelists: Path) -> str:
    """From ``if (VLLM_PYTHON_EXECUTABLE)`` to its ``endif()``: the logic the patch changes."""
    lines = cmakelists.read_text().splitlines(keepends=True)
    start = lines.index("if (VLLM_PYTHON_EXECUTABLE)\n")
    end = lines.index("endif()\n", start)
    return "".join(lines[start : end + 1])


def supported_versions(cmakelists: Path) -> str:
    m = re.search(r"^set\(PYTHON_SUPPORTED_VERSIONS .*\)$", cmakelists.read_text(), re.M)
    assert m
    return m.group(0)


STUB = """macro(find_python_from_executable EXECUTABLE SUPPORTED_VERSIONS)
  message(STATUS "probe: find_python_from_executable(${EXECUTABLE})")
endmacro()
"""


def probe(d: Path, block: str, head: str) -> Path:
    d.mkdir(parents=True)
    (d / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.21)\nproject(vllm_matrix_probe NONE)\n"
        + head
        + block
        + 'message(STATUS "probe: chose ${VLLM_PYTHON_EXECUTABLE}")\n'
    )
    return d


def configure(
    exe: str, d: Path, build: str = "build", env: str | None = None, *defs: str
) -> proc.Completed:
    argv = [exe, "-S", str(d), "-B", str(d / build), *defs]
    return proc.run(argv, env={"VLLM_PYTHON_EXECUTABLE": env} if env else None, check=False)


def test_patched_logic_takes_the_environment(
    rows: list[Row], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_PYTHON_EXECUTABLE", raising=False)
    exe, _ = cmake_exe()
    py, other = "/opt/py/bin/python3", "/opt/other/bin/python3"
    blocks: dict[str, list[str]] = {}
    for r in rows:
        blocks.setdefault(python_block(r.work / "CMakeLists.txt"), []).append(r.version)
    for n, (block, versions) in enumerate(blocks.items()):
        where = f"block used by {versions[0]}..{versions[-1]}"
        # Without the patch the environment is ignored: the failure the patch is for.
        old = probe(tmp_path / f"old{n}", python_block(rows[0].cached / "CMakeLists.txt"), STUB)
        res = configure(exe, old, env=py)
        assert res.returncode != 0 and MESSAGE in res.output, where

        d = probe(tmp_path / f"new{n}", block, STUB)
        res = configure(exe, d, env=py)
        assert res.returncode == 0, res.output
        assert f"probe: find_python_from_executable({py})" in res.output, where
        assert f"VLLM_PYTHON_EXECUTABLE:FILEPATH={py}" in (d / "build/CMakeCache.txt").read_text()
        # a re-configure of that build dir (as `cmake --build` does) needs no variable
        res = configure(exe, d)
        assert res.returncode == 0 and f"probe: chose {py}" in res.output, where
        # no variable at all: the release's own message, unchanged
        res = configure(exe, d, "fresh")
        assert res.returncode != 0 and MESSAGE in res.output, where
        # -D still wins over the environment
        res = configure(exe, d, "both", py, f"-DVLLM_PYTHON_EXECUTABLE={other}")
        assert res.returncode == 0 and f"find_python_from_executable({other})" in res.output
    print(f"\n{len(blocks)} distinct patched block(s) over {len(rows)} releases")


def find_python_macro(utils: Path) -> str:
    text = utils.read_text()
    start = text.index("macro (find_python_from_executable")
    return text[start : text.index("endmacro()", start)]


def test_release_macro_finds_the_interpreter_from_the_environment(
    rows: list[Row], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release's own find_python_from_executable (FindPython) on the patched logic.

    One configure per distinct (macro, supported Pythons, patched block): FindPython
    takes seconds, and releases that share all three behave the same.
    """
    monkeypatch.delenv("VLLM_PYTHON_EXECUTABLE", raising=False)
    exe, version = cmake_exe()
    py = os.path.realpath(sys.executable)
    mm = f'"{sys.version_info.major}.{sys.version_info.minor}"'
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        key = (
            find_python_macro(r.work / "cmake" / "utils.cmake"),
            supported_versions(r.work / "CMakeLists.txt"),
            python_block(r.work / "CMakeLists.txt"),
        )
        groups.setdefault(key, []).append(r)
    checked, skipped = [], []
    for (macro, head, block), members in groups.items():
        names = f"{members[0].version}..{members[-1].version} ({len(members)})"
        # Development.SABIModule is a CMake 3.26 component
        if ("SABIModule" in macro and version < Version("3.26")) or mm not in head:
            skipped.append(names)
            continue
        r = members[0]
        utils = r.work / "cmake" / "utils.cmake"
        d = probe(tmp_path / r.version, block, f'{head}\ninclude("{utils}")\n')
        res = configure(exe, d, env=py)
        assert res.returncode == 0, f"{r.version}: {res.output[-2000:]}"
        assert f"Found python matching: {py}" in res.output, r.version
        checked.append(names)
    print(f"\nreal macro, cmake {version}: checked {checked}; this cmake cannot run {skipped}")
    if not checked:
        skip_or_fail(
            f"cmake {version} cannot run any release's find_python_from_executable", machine=True
        )


C2X = "cmake-scaled-mm-c2x-not-for-hopper-only-lists"
C2X_SKIPPED = "Not building scaled_mm_c2x as all archs are already built for and covered by"
C2X_BUILT = "Building scaled_mm_c2x for archs: "


def c2x_block(cmakelists: Path) -> str:
    """From ``set(SCALED_MM_3X_ARCHS)`` through the c2x block: the c3x families that fill
    SCALED_MM_3X_ARCHS, then the c2x choice the patch changes."""
    lines = cmakelists.read_text().splitlines(keepends=True)
    start = lines.index("  set(SCALED_MM_3X_ARCHS)\n")
    built = next(i for i in range(start, len(lines)) if C2X_BUILT in lines[i])
    end = lines.index("  endif()\n", built)
    return "".join(lines[start : end + 1])


def c2x_choice(exe: str, d: Path, release: Path, block: str, archs: str) -> str:
    """What real cmake says about scaled_mm_c2x for ``archs`` (nvcc 13.0), running the
    release's own cuda_archs_loose_intersection; gencode flags are not this test's."""
    d.mkdir(parents=True, exist_ok=True)
    script = d / f"c2x-{archs.replace(';', '_').replace('+', 'p')}.cmake"
    script.write_text(
        "cmake_minimum_required(VERSION 3.25)\n"
        f'include("{release / "cmake" / "utils.cmake"}")\n'
        "macro(set_gencode_flags_for_srcs)\nendmacro()\n"
        f'set(CMAKE_CUDA_COMPILER_VERSION "13.0")\nset(CUDA_ARCHS "{archs}")\n' + block
    )
    out = proc.run([exe, "-P", script], check=False).output
    said = [line for line in out.splitlines() if "scaled_mm_c2x" in line]
    assert len(said) == 1, out
    return said[0]


# arch list -> does the patched release still build c2x?
C2X_CASES = {
    "9.0a": False,
    "9.0": False,
    "9.0;9.0a": False,
    "8.0;9.0a": True,  # 8.0 SASS runs on sm_89, where c2x's 8.9 PTX is the FP8 GEMM
    "8.9;9.0a": True,
    "9.0a;12.0a": True,  # a non-Hopper arch in the list: as before
    "12.0a": True,  # a 12.0a-only build reaches cutlass_scaled_mm_azp through c2x's PTX
    "10.0a": True,
}


def test_c2x_is_left_out_only_for_hopper_only_lists(rows: list[Row], tmp_path: Path) -> None:
    exe, version = cmake_exe()
    checked = 0
    for r in rows:
        if C2X not in {a.patch.name for a in r.first}:
            continue
        d = tmp_path / r.version
        # Without the patch a 9.0a build compiles c2x for 8.9+PTX: what the patch is for.
        old = c2x_choice(exe, d / "old", r.cached, c2x_block(r.cached / "CMakeLists.txt"), "9.0a")
        assert old.endswith(C2X_BUILT + "8.9+PTX"), (r.version, old)
        block = c2x_block(r.work / "CMakeLists.txt")
        for archs, builds in C2X_CASES.items():
            said = c2x_choice(exe, d / "new", r.work, block, archs)
            assert (C2X_BUILT in said) is builds and (C2X_SKIPPED in said) is not builds, (
                r.version,
                archs,
                said,
            )
        checked += 1
    assert checked >= 20, checked  # 0.20.0 ... 0.34.0
    print(f"\nc2x choice, cmake {version}: {checked} releases x {len(C2X_CASES)} arch lists")


# ---------------------------------------------------------------------------
# Outside the range


def test_newest_release_below_the_range_fails_cleanly(tmp_path: Path) -> None:
    (patch,) = [p for p in series() if p.name == FALLBACK]
    below = [v for v in sdist_versions() if v not in patch.applies]
    first_in = min(Version(v) for v in sdist_versions() if v in patch.applies)
    version = str(max(Version(v) for v in below if Version(v) < first_in))
    tree = source.sdist_tree(version)
    work = copy_tree(tree.root, tmp_path / version, private=patch.paths())
    before = sorted((str(p.relative_to(work)), p.stat().st_mtime_ns) for p in work.rglob("*"))
    with pytest.raises(PatchError) as err:
        apply_all(work, (patch,), version=version)
    msg = err.value.message
    # 0.3.3 predates vLLM's CMake build: the file the patch edits is not there
    assert f"patch {FALLBACK} does not apply to vLLM {version}" in msg
    assert "CMakeLists.txt is not in the tree" in msg and "unchanged" in msg
    assert err.value.fix and "applies" in err.value.fix
    after = sorted((str(p.relative_to(work)), p.stat().st_mtime_ns) for p in work.rglob("*"))
    assert after == before
