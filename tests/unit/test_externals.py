"""externals: the sources cache, git export (whole, partial mirrors, submodules), the
network path over file://, the lookup order, the build's env and the missing error.

Every repository here is a small real git repo made in tmp_path; nothing uses the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from vllm_matrix import cli
from vllm_matrix.infra import index
from vllm_matrix.knowledge import probe_units
from vllm_matrix.sources import externals
from vllm_matrix.sources.externals import ExternalDir
from vllm_matrix.stages.facts import External, ModelOptFacts, SourceFacts

CUTLASS_URL = "https://github.com/nvidia/cutlass.git"
FA_URL = "https://github.com/vllm-project/flash-attention.git"
VERSION_H = "#define CUTLASS_MAJOR 3\n#define CUTLASS_MINOR 9\n#define CUTLASS_PATCH 0\n"


def git(cwd: Path, *args: str) -> str:
    r = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(cwd), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return r.stdout.strip()


def make_repo(path: Path, files: dict[str, str], *, tag: str | None = None) -> str:
    """A repo at ``path`` whose first commit holds ``files`` (``+x`` suffix: executable)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    for rel, text in files.items():
        exe = rel.endswith("+x")
        p = path / rel.removesuffix("+x")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        if exe:
            p.chmod(p.stat().st_mode | stat.S_IEXEC)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "one")
    if tag:
        git(path, "tag", tag)
    return git(path, "rev-parse", "HEAD")


def add_gitlink(repo: Path, path: str, sha: str, url: str) -> str:
    gm = repo / ".gitmodules"
    prior = gm.read_text() if gm.exists() else ""
    gm.write_text(prior + f'[submodule "{path}"]\n\tpath = {path}\n\turl = {url}\n')
    git(repo, "add", ".gitmodules")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{sha},{path}")
    git(repo, "commit", "-qm", f"submodule {path}")
    return git(repo, "rev-parse", "HEAD")


def facts_with(*ext: External, vllm: str = "0.8.5") -> SourceFacts:
    return SourceFacts(
        vllm=vllm,
        torch="2.6.0",
        torch_evidence=None,
        cutlass=None,
        external=ext,
        cuda_archs=(),
        python=("3.12",),
        requires_python=None,
        cmake="3.26",
        modelopt=ModelOptFacts(False, None, None),
    )


def cutlass_ext(ref: str = "v3.9.0", repo: str = CUTLASS_URL) -> External:
    return External("cutlass", repo, ref, "VLLM_CUTLASS_SRC_DIR", "CMakeLists.txt:1")


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(root))
    for var in ("VLLM_CUTLASS_SRC_DIR", "VLLM_FLASH_ATTN_SRC_DIR", "FLASH_MLA_SRC_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(index, "project_files", lambda project: ())
    externals._VERIFIED.clear()
    return root


@pytest.fixture
def mirrors(tmp_path: Path) -> dict[str, object]:
    """NVIDIA/cutlass (tag v3.9.0 and a later commit), vllm-project/flash-attention (a
    gitlink to that later cutlass commit, and one to an AMD-only repo nobody holds)."""
    cut = tmp_path / "mirrors" / "NVIDIA+cutlass"
    tagged = make_repo(
        cut,
        {
            "include/cutlass/version.h": VERSION_H,
            "include/cute/tensor.hpp": "// cute\n",
            "CMakeLists.txt": "project(cutlass)\n",
            "tools/gen.sh+x": "#!/bin/sh\n",
        },
        tag="v3.9.0",
    )
    (cut / "include" / "cutlass" / "later.h").write_text("// later\n")
    git(cut, "add", "-A")
    git(cut, "commit", "-qm", "later")
    later = git(cut, "rev-parse", "HEAD")
    fa = tmp_path / "mirrors" / "vllm-project+flash-attention"
    make_repo(fa, {"CMakeLists.txt": "project(vllm_flash_attn)\n", "csrc/flash_attn/a.cu": "x"})
    add_gitlink(fa, "csrc/cutlass", later, "https://github.com/NVIDIA/cutlass.git")
    fa_sha = add_gitlink(
        fa, "csrc/composable_kernel", "1" * 40, "https://github.com/ROCm/composable_kernel.git"
    )
    return {"cutlass": cut, "fa": fa, "tagged": tagged, "later": later, "fa_sha": fa_sha}


def test_prefetch_from_git_dirs_fills_submodules_and_verifies(
    mirrors: dict[str, object], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fa_ext = External(
        "vllm-flash-attn", FA_URL, str(mirrors["fa_sha"]), "VLLM_FLASH_ATTN_SRC_DIR", "x:1"
    )
    f = facts_with(cutlass_ext(), fa_ext)
    know = probe_units.load_knowledge()
    gits = [Path(str(mirrors["fa"])), Path(str(mirrors["cutlass"]))]
    dirs = externals.prefetch(f, know, git_dirs=gits, network=False)
    cut, fa = dirs["cutlass"], dirs["vllm-flash-attn"]
    assert cut.status == "found" and fa.status == "found", (cut, fa)
    assert cut.path == cache / "sources" / "cutlass-v3.9.0"
    assert (cut.path / "include" / "cutlass" / "version.h").read_text() == VERSION_H
    assert not (cut.path / "include" / "cutlass" / "later.h").exists()  # the tag, not HEAD
    assert os.access(cut.path / "tools" / "gen.sh", os.X_OK)
    assert not (cut.path / ".git").exists()
    marker = json.loads((cut.path / externals.MARKER).read_text())
    assert marker["commit"] == mirrors["tagged"] and marker["repo"] == CUTLASS_URL
    assert marker["left_out"] == [] and marker["files"] == 4
    # the mirror by its name only: origins land in result files, which name no local path
    name = Path(str(mirrors["cutlass"])).name
    assert marker["origin"] == f"local git dir {name}@v3.9.0", marker["origin"]
    assert str(Path(str(mirrors["cutlass"])).parent) not in marker["origin"]
    # the submodule comes from the cutlass mirror at the gitlink's commit
    assert fa.path is not None and (fa.path / "csrc/cutlass/include/cutlass/later.h").is_file()
    fa_marker = json.loads((fa.path / externals.MARKER).read_text())
    subs = {s["path"]: s for s in fa_marker["submodules"]}
    assert subs["csrc/cutlass"]["status"] == "filled"
    assert subs["csrc/cutlass"]["commit"] == mirrors["later"]
    assert subs["csrc/composable_kernel"]["status"] == "missing"
    assert "ROCm only" in fa.origin and "csrc/composable_kernel" in fa.origin
    assert externals.build_env(dirs) == {
        "VLLM_CUTLASS_SRC_DIR": str(cut.path),
        "VLLM_FLASH_ATTN_SRC_DIR": str(fa.path),
    }
    assert externals.missing_error("0.8.5", dirs) is None
    assert externals.verify(cut.path) is None
    (cut.path / "tools" / "__pycache__").mkdir()  # what an import during the build leaves
    (cut.path / "tools" / "__pycache__" / "gen.cpython-312.pyc").write_bytes(b"pyc")
    assert externals.verify(cut.path) is None
    # a second prefetch exports nothing: the cached, verified copy is used
    monkeypatch.setattr(externals, "export", lambda *a, **k: pytest.fail("exported again"))
    again = externals.prefetch(f, know, git_dirs=gits, network=False)
    assert again["cutlass"].path == cut.path and "digest verified" in again["cutlass"].origin
    # a changed file is caught, and the copy is no longer offered
    (cut.path / "include" / "cute" / "tensor.hpp").write_text("// edited\n")
    problem = externals.verify(cut.path)
    assert problem is not None and "changed since the prefetch" in problem
    externals._VERIFIED.clear()
    bad = externals.external_dir(f, "cutlass", know, fetch=False, need_tree=True)
    assert bad.path is None and "fails verification" in bad.origin


def test_a_needed_submodule_nobody_holds_makes_it_incomplete(mirrors: dict[str, object]) -> None:
    fa_ext = External(
        "vllm-flash-attn", FA_URL, str(mirrors["fa_sha"]), "VLLM_FLASH_ATTN_SRC_DIR", "x:1"
    )
    f = facts_with(fa_ext)
    dirs = externals.prefetch(
        f, probe_units.load_knowledge(), git_dirs=[Path(str(mirrors["fa"]))], network=False
    )
    d = dirs["vllm-flash-attn"]
    assert d.status == "incomplete" and d.incomplete == ("csrc/cutlass",)
    err = externals.missing_error("0.8.5", dirs)
    assert err is not None and "incomplete (submodule csrc/cutlass)" in err.message


def test_a_tag_is_taken_only_from_a_dir_named_like_the_repo(
    mirrors: dict[str, object], tmp_path: Path
) -> None:
    other = tmp_path / "mirrors" / "somebody-else"
    git(tmp_path, "clone", "-q", "--bare", str(mirrors["cutlass"]), str(other))
    know = probe_units.load_knowledge()
    by_tag = externals.prefetch(facts_with(cutlass_ext()), know, git_dirs=[other], network=False)
    assert by_tag["cutlass"].path is None
    assert "no --git dir named like 'cutlass'" in by_tag["cutlass"].origin
    assert "offline" in by_tag["cutlass"].origin and "inv prefetch --vllm 0.8.5" in (
        by_tag["cutlass"].origin
    )
    # a commit hash means the same thing anywhere: any dir that holds it will do
    by_sha = externals.prefetch(
        facts_with(cutlass_ext(str(mirrors["tagged"]))), know, git_dirs=[other], network=False
    )
    assert by_sha["cutlass"].status == "found"


def test_a_partial_mirror_leaves_out_only_the_blobs_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "FlashMLA"
    sha = make_repo(repo, {"a/keep.h": "k\n", "media/big.png": "BIG\n", "media/small.txt": "s\n"})
    blob = git(repo, "rev-parse", f"{sha}:media/big.png")
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    out = tmp_path / "out"
    assert externals.export(repo, sha, out) == ["media/big.png"]
    assert (out / "a/keep.h").is_file() and (out / "media/small.txt").is_file()
    assert not (out / "media/big.png").exists()
    # where excluding the missing blobs is not enough, whole top-level entries are left out
    monkeypatch.setattr(externals, "_missing_blobs", lambda *a: [])
    out2 = tmp_path / "out2"
    assert externals.export(repo, sha, out2) == ["media"]
    assert (out2 / "a/keep.h").is_file() and not (out2 / "media").exists()


def test_prefetch_over_the_network_path_with_a_file_url(tmp_path: Path) -> None:
    """``git fetch --depth 1 URL SHA`` of a commit that is no branch tip: works over file://
    with git's default protocol v2, no uploadpack.allowAnySHA1InWant needed."""
    up = tmp_path / "upstream" / "FlashMLA"
    first = make_repo(up, {"csrc/flash_mla.h": "// mla\n", "setup.py": "# s\n"})
    (up / "later.txt").write_text("later\n")
    git(up, "add", "-A")
    git(up, "commit", "-qm", "later")
    ext = External("flashmla", f"file://{up}", first, "FLASH_MLA_SRC_DIR", "x:1")
    know = probe_units.load_knowledge()
    offline = externals.prefetch(facts_with(ext), know, network=False)
    assert offline["flashmla"].path is None
    got = externals.prefetch(facts_with(ext), know, network=True)["flashmla"]
    assert got.status == "found" and got.path is not None
    assert (got.path / "csrc" / "flash_mla.h").is_file() and not (got.path / "later.txt").exists()
    assert got.origin.startswith(f"prefetched: git fetch --depth 1 file://{up} {first}")
    assert not [p for p in got.path.parent.iterdir() if p.name.startswith(".fetch.")]
    # resolve_all(fetch=True) goes the same way; fetch=False only looks
    assert externals.resolve_all(facts_with(ext), know, fetch=False)["flashmla"].path == got.path


def test_missing_error_lists_every_dependency_and_how_to_bring_it() -> None:
    dirs = {
        "cutlass": ExternalDir(
            "cutlass", "v3.9.0", None, "not prefetched", "VLLM_CUTLASS_SRC_DIR", repo=CUTLASS_URL
        ),
        "flashmla": ExternalDir("flashmla", "5" * 40, None, "offline", "FLASH_MLA_SRC_DIR"),
        "vllm-flash-attn": ExternalDir(
            "vllm-flash-attn", "8" * 40, Path("/x"), "here", "VLLM_FLASH_ATTN_SRC_DIR"
        ),
    }
    err = externals.missing_error("0.8.5", dirs)
    assert err is not None and err.fix is not None
    assert "cutlass v3.9.0 (VLLM_CUTLASS_SRC_DIR): missing" in err.message
    assert f"flashmla {'5' * 40} (FLASH_MLA_SRC_DIR): missing" in err.message
    assert "vllm-flash-attn" not in err.message
    assert "`inv prefetch --vllm 0.8.5`" in err.fix and "--git DIR" in err.fix
    assert CUTLASS_URL in err.fix and "FLASH_MLA_SRC_DIR=<flashmla checkout at 555555555555>" in (
        err.fix
    )
    assert externals.build_env(dirs) == {"VLLM_FLASH_ATTN_SRC_DIR": "/x"}


def test_the_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CUTLASS_SRC_DIR", str(tmp_path))
    d = externals.external_dir(
        facts_with(cutlass_ext()), "cutlass", probe_units.load_knowledge(), fetch=False
    )
    assert d.path == tmp_path and d.origin == "$VLLM_CUTLASS_SRC_DIR" and d.repo == CUTLASS_URL


def test_cli_prefetch_offline_lists_the_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from vllm_matrix.sources.sdist import SourceTree

    f = facts_with(
        cutlass_ext(),
        External("flashmla", "https://github.com/vllm-project/FlashMLA.git", "5" * 40, "F", "x"),
    )
    monkeypatch.setattr(
        "vllm_matrix.sources.sdist.get_tree", lambda v: SourceTree("0.8.5", tmp_path, "test")
    )
    monkeypatch.setattr("vllm_matrix.stages.facts.read_facts", lambda root, v: f)
    assert cli.main(["prefetch", "--vllm", "0.8.5", "--offline"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split()[:3] == ["cutlass", "v3.9.0", "missing"]
    assert out.splitlines()[1].split()[:3] == ["flashmla", "555555555555", "missing"]
    assert "error: vLLM 0.8.5 needs FetchContent sources" in err and "fix: " in err
    assert cli.main(["prefetch", "--vllm", "0.8.5", "--git", str(tmp_path / "nope")]) == 2


def test_external_dir_from_pypi_checks_sha_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "cutlass_library/source/include/cutlass/version.h",
            "#define CUTLASS_MAJOR 3\n#define CUTLASS_MINOR 8\n#define CUTLASS_PATCH 0\n",
        )
    data = buf.getvalue()
    wheel = index.IndexFile(
        "nvidia_cutlass-3.8.0.0-py3-none-any.whl",
        "https://x/w.whl",
        hashlib.sha256(data).hexdigest(),
        Version("3.8.0.0"),
        "wheel",
        False,
    )
    monkeypatch.setattr(index, "project_files", lambda project: (wheel,))
    monkeypatch.setattr(index, "download", lambda url: data)
    know = probe_units.load_knowledge()
    f = facts_with(cutlass_ext("v3.8.0"), vllm="0.8.4")
    d = externals.external_dir(f, "cutlass", know, fetch=True)
    assert d.path is not None and (d.path / "include" / "cutlass" / "version.h").is_file()
    assert "sha256:" in d.origin and "3.8.0" in d.origin
    # cached: no network the second time, even without fetch
    monkeypatch.setattr(index, "download", lambda url: pytest.fail("downloaded twice"))
    assert externals.external_dir(f, "cutlass", know, fetch=False).path == d.path
    # headers only (no CMakeLists.txt): never offered to a build
    tree = externals.external_dir(f, "cutlass", know, fetch=True, need_tree=True)
    assert tree.path is None and "inv prefetch --vllm 0.8.4" in tree.origin
    # a pin PyPI does not have
    miss = externals.external_dir(facts_with(cutlass_ext("v4.0.0")), "cutlass", know, fetch=True)
    assert miss.path is None and "has no 4.0.0 (has 3.8.0.0)" in miss.origin
    assert "VLLM_CUTLASS_SRC_DIR" in miss.origin
