"""The committed snapshot of every release's facts (knowledge/data/release_facts.json) and
mapping.release_facts's order: this machine's cache, then the snapshot when the sdist's
sha256 and the readers' digest match it, then the sdist. No test here touches the network:
the index's answer (resolve_sdist) is set, and a download fails the test."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

from vllm_matrix.infra.index import IndexFile
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline import advice, mapping
from vllm_matrix.sources.sdist import SourceTree

KNOW = toolchains.load()
SNAP = json.loads(mapping.snapshot_path().read_text(encoding="utf-8"))


def test_the_snapshot_was_derived_by_the_readers_of_this_commit() -> None:
    """A reader (stages/facts.py, preflight/apiscan.py, gates.py, cmake/) or api.toml changed
    without re-deriving: the snapshot no longer says what they read."""
    fix = f"run `{mapping.DERIVE}` and commit knowledge/data/{mapping.SNAPSHOT}"
    assert SNAP["schema"] == mapping.SNAPSHOT_SCHEMA
    assert SNAP["facts_schema"] == mapping.FACTS_SCHEMA, fix
    assert SNAP["code"] == mapping._code_digest(KNOW), (
        f"the facts readers changed since {mapping.SNAPSHOT} was derived: {fix}"
    )


def test_the_snapshot_covers_every_release_of_vllm_pins() -> None:
    listed = tomllib.loads(pins.data_path().read_text(encoding="utf-8"))["vllm"]
    rels = SNAP["releases"]
    assert set(rels) == set(listed), f"run `{mapping.DERIVE}` (after `inv derive-pins --write`)"
    for v, e in rels.items():
        assert re.fullmatch("[0-9a-f]{64}", e["sha256"]), v
        assert e["facts"]["vllm"] == v
        assert e["facts"]["torch"] == listed[v].get("torch"), v  # the same readers' pin
        assert set(e) == {"sha256", "facts", "hits", "gates"}, v


def test_the_snapshot_names_no_path_and_keeps_a_release_a_line() -> None:
    text = mapping.snapshot_path().read_text(encoding="utf-8")
    assert not re.search(r"/(work|tmp|home|root|usr|opt)/", text)
    assert '"tree"' not in text
    lines = text.splitlines()
    assert sum(1 for ln in lines if re.match(r'  "[0-9.a-z]+": \{', ln)) == len(SNAP["releases"])
    got = mapping._from_entry("0.10.1", SNAP["releases"]["0.10.1"], KNOW, Path("/nowhere"))
    assert mapping.render_snapshot([got], KNOW).splitlines()[-3] == next(
        ln.rstrip(",") for ln in lines if ln.startswith('  "0.10.1": ')
    )


class Index:
    """resolve_sdist's answer per version (the index's sha256); sdist_tree counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, shas: dict[str, str]) -> None:
        self.shas, self.trees = shas, list[str]()
        self.tree: Path | None = None
        monkeypatch.setattr(mapping.source, "resolve_sdist", self.resolve)
        monkeypatch.setattr(mapping.source, "sdist_tree", self.sdist_tree)

        def no_download(*a: object, **k: object) -> None:
            raise AssertionError("asked the index")

        monkeypatch.setattr(mapping.source, "fetch_sdist", no_download)
        monkeypatch.setattr(mapping.source.index, "download", no_download)
        monkeypatch.setattr(mapping.source.index, "project_files", no_download)

    def resolve(self, version: str, root: Path | None = None) -> IndexFile:
        sha = self.shas[version]
        return IndexFile(f"vllm-{version}.tar.gz", "u", sha, Version(version), "sdist", False)

    def sdist_tree(self, version: str, root: Path | None = None) -> SourceTree:
        self.trees.append(version)
        if self.tree is None:
            raise AssertionError(f"read the sdist of {version}")
        return SourceTree(version, self.tree, "test")


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(root))
    return root


def fixture_tree(tmp_path: Path, torch: str) -> Path:
    root = tmp_path / "vllm"
    (root / "csrc").mkdir(parents=True)
    (root / "CMakeLists.txt").write_text(f'set(TORCH_SUPPORTED_VERSION_CUDA "{torch}")\n')
    (root / "PKG-INFO").write_text("Version: 0.8.5\n")
    return root


def test_the_advice_from_the_snapshot_downloads_no_sdist(
    monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    """The main job's cell 3 (vLLM 0.10.1 x torch 2.6.0, sm_90): its advice walks ~40 other
    releases; each comes from the snapshot (the index's sha256 is the snapshot's)."""
    idx = Index(monkeypatch, {v: e["sha256"] for v, e in SNAP["releases"].items()})
    adv = advice.Adviser(know=KNOW, pinned=pins.load())
    a = adv.advise(advice.Have("2.6.0", "12.4", ("9.0",), "3.12", "0.10.1"))
    first = a.options[0]
    assert (first.vllm, first.torch, first.cuda) == ("0.10.0", "2.6.0+cu124", "12.4")
    status, found = adv.findings("0.10.1", "2.6.0", "12.4", ("9.0",), "3.12")
    assert status == "predicted-fail"
    assert any(f.rule == "api-Float8_e8m0fnu" for f in found)  # the snapshot's API uses
    assert idx.trees == []  # no sdist read, none downloaded
    assert not (cache / "facts").exists()  # nor any cache file written
    # the tree, for what reads files (the Blackwell table's ModelOpt column): on first use
    rf = adv.release("0.10.1")
    idx.tree = Path("/unpacked")
    assert rf.tree == Path("/unpacked") and rf.tree == Path("/unpacked")
    assert idx.trees == ["0.10.1"]


def test_another_sdist_than_the_snapshots_is_read(
    monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path
) -> None:
    """The index serves another file for the release (a sha256 the snapshot lacks)."""
    idx = Index(monkeypatch, {"0.8.5": "ab" * 32})
    idx.tree = fixture_tree(tmp_path, "2.99.0")
    rf = mapping.release_facts("0.8.5", KNOW)
    assert idx.trees == ["0.8.5"] and rf.facts.torch == "2.99.0"  # the tree's, not 2.6.0
    assert rf.tree == idx.tree
    again = mapping.release_facts("0.8.5", KNOW)  # now from this machine's cache
    assert idx.trees == ["0.8.5"] and again == rf


def test_readers_changed_since_the_snapshot_read_the_sdist(
    monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path
) -> None:
    idx = Index(monkeypatch, {"0.8.5": SNAP["releases"]["0.8.5"]["sha256"]})
    idx.tree = fixture_tree(tmp_path, "2.99.0")
    monkeypatch.setattr(mapping, "_code_digest", lambda know: "0" * 16)
    rf = mapping.release_facts("0.8.5", KNOW)
    assert idx.trees == ["0.8.5"] and rf.facts.torch == "2.99.0"


def test_this_machines_cache_first_then_the_snapshot(
    monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path
) -> None:
    """A fixture snapshot (rendered and parsed as the committed one) for one sha256."""
    sha = "cd" * 32
    idx = Index(monkeypatch, {"0.8.5": sha})
    idx.tree = fixture_tree(tmp_path, "2.99.0")
    made = mapping.read_release("0.8.5", KNOW, tmp_path / "elsewhere")  # the fixture's facts
    digest = mapping._code_digest(KNOW)
    snap = tmp_path / "release_facts.json"
    snap.write_text(mapping.render_snapshot([made], KNOW))
    monkeypatch.setattr(mapping, "snapshot_path", lambda: snap)
    idx.trees.clear()
    got = mapping.release_facts("0.8.5", KNOW)
    assert got == made and got.unpacked is None and idx.trees == []  # from the snapshot
    # this machine's cache file wins over the snapshot
    d = json.loads(snap.read_text())["releases"]["0.8.5"]
    d["facts"]["torch"] = "2.98.0"
    mine = cache / "facts" / f"vllm-0.8.5-{sha[:16]}.json"
    mine.parent.mkdir(parents=True)
    mine.write_text(json.dumps({"schema": mapping.FACTS_SCHEMA, "code": digest} | d))
    assert mapping.release_facts("0.8.5", KNOW).facts.torch == "2.98.0"
    assert idx.trees == []


def test_preflight_without_a_tree_needs_the_release_facts() -> None:
    from vllm_matrix.infra.config import Cell
    from vllm_matrix.stages import preflight

    rf = mapping._from_entry("0.10.1", SNAP["releases"]["0.10.1"], KNOW, Path("/nowhere"))
    cell = Cell("0.10.1", "2.6.0", "12.4", "debian", "3.12", ("9.0",))
    host = preflight.Host(None, {}, None)
    with pytest.raises(ValueError, match="needs scan and kernel_gates"):
        preflight.check(cell, rf.facts, KNOW, None, host)
    found = preflight.check(cell, rf.facts, KNOW, None, host, scan=rf.scan, kernel_gates=rf.gates)
    assert "api-Float8_e8m0fnu" in {f.rule for f in found}
    assert rf.unpacked is None  # nothing asked for the tree
