"""externals on the real thing: vLLM 0.8.5's pins exported from local git mirrors.

The mirrors (/work/.mirror/<owner>+<repo>/repo, bare, partial: no blobs >= 4 MiB) exist on
the project's dev machine only; elsewhere these tests skip. About 15 s together: FlashMLA
with its CUTLASS submodule, then CUTLASS v3.9.0 (140 MB each, exported, hashed twice).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import skip_or_fail

from vllm_matrix.knowledge import probe_units
from vllm_matrix.sources import externals
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages import facts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]

MIRRORS = Path("/work/.mirror")
CUTLASS = MIRRORS / "NVIDIA+cutlass" / "repo"
FLASHMLA = MIRRORS / "vllm-project+FlashMLA" / "repo"
FLASHMLA_PIN = "575f7724b9762f265bbee5889df9c7d630801845"
ITS_CUTLASS = "afa1772203677c5118fcd82537a9c8fefbcc7008"


@pytest.fixture
def facts_085(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> facts.SourceFacts:
    for m in (CUTLASS, FLASHMLA):
        if not m.is_dir():
            skip_or_fail(f"local git mirror of {m.name} is absent here", machine=True)
    tree = source.get_tree("0.8.5")  # the usual cache: an sdist download at most once
    f = facts.read_facts(tree.root, tree.version)
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path / "cache"))
    for var in ("VLLM_CUTLASS_SRC_DIR", "FLASH_MLA_SRC_DIR", "VLLM_FLASH_ATTN_SRC_DIR"):
        monkeypatch.delenv(var, raising=False)
    return f


def only(f: facts.SourceFacts, name: str) -> facts.SourceFacts:
    return replace(f, external=tuple(e for e in f.external if e.name == name))


def test_flashmla_with_its_cutlass_submodule(facts_085: facts.SourceFacts) -> None:
    f = only(facts_085, "flashmla")
    assert f.external[0].ref == FLASHMLA_PIN
    know = probe_units.load_knowledge()
    t0 = time.monotonic()
    d = externals.prefetch(f, know, git_dirs=[CUTLASS, FLASHMLA], network=False)["flashmla"]
    first = time.monotonic() - t0
    assert d.status == "found" and d.path is not None, d.origin
    assert (d.path / "csrc" / "cutlass" / "include" / "cutlass" / "version.h").is_file()
    m = json.loads((d.path / externals.MARKER).read_text())
    (sub,) = m["submodules"]
    assert sub["path"] == "csrc/cutlass" and sub["commit"] == ITS_CUTLASS
    assert sub["status"] == "filled" and f"local git dir {CUTLASS.name}@" in sub["origin"]
    assert str(CUTLASS.parent) not in sub["origin"]  # results name no local path
    # the mirror lacks blobs >= 4 MiB: exactly those are left out, and said so
    assert sub["left_out"] == [
        "csrc/cutlass/media/images/cutlass-2.9-implicit-gemm-performance.png"
    ]
    assert "left out 1 path(s)" in d.origin
    t0 = time.monotonic()
    assert externals.verify(d.path) is None
    print(f"prefetch {first:.1f}s, verify {time.monotonic() - t0:.2f}s, {m['files']} files")
    # from the cache now, without the mirrors
    again = externals.resolve_all(f, know, fetch=False)["flashmla"]
    assert again.path == d.path and externals.build_env({"flashmla": again}) == {
        "FLASH_MLA_SRC_DIR": str(d.path)
    }


def test_cutlass_tag_is_checked_against_its_version_header(
    facts_085: facts.SourceFacts,
) -> None:
    f = only(facts_085, "cutlass")
    d = externals.prefetch(f, probe_units.load_knowledge(), git_dirs=[CUTLASS], network=False)
    cut = d["cutlass"]
    assert cut.status == "found" and cut.path is not None, cut.origin
    text = (cut.path / "include" / "cutlass" / "version.h").read_text()
    assert "#define CUTLASS_MAJOR 3" in text and "#define CUTLASS_MINOR 9" in text
    assert "#define CUTLASS_PATCH 0" in text
    assert (cut.path / "CMakeLists.txt").is_file()  # what PyPI's copy lacks and a build needs
