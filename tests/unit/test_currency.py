"""currency: what it finds stale and says to update, on fixtures (the real index:
`nox -s currency`; every real release preflighted: tests/integration/test_preflight_releases.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import need_program

from vllm_matrix import cli
from vllm_matrix.commands import currency
from vllm_matrix.infra.errors import SourceError
from vllm_matrix.infra.results import Verdict
from vllm_matrix.knowledge import pins
from vllm_matrix.sources import sdist as source

SERIES = """
[[patch]]
file = "greet.patch"
applies = ">=0.1.0,<=0.2.0"
why = "a fixture"
upstream = "https://example.invalid/pr/1"
"""

PATCH = """--- a/a.txt
+++ b/a.txt
@@ -1 +1 @@
-hello
+hello world
"""


def test_new_and_vanished_releases_name_the_fix() -> None:
    items = currency.new_releases(("0.4.1", "0.34.0", "0.35.0"), {"0.4.1": "2.2.1", "0.5.0": "x"})
    assert [(i.subject, i.kind) for i in items] == [
        ("0.34.0", "release"),
        ("0.35.0", "release"),
        ("0.5.0", "release"),
    ]
    assert "on the index but not in vllm_pins.toml" in items[0].message
    assert "index lists no sdist" in items[2].message
    assert all("inv derive-pins --write" in i.fix for i in items)
    assert currency.new_releases(("0.4.1",), {"0.4.1": "2.2.1"}) == []


def _tree(tmp_path: Path, name: str, text: str) -> source.SourceTree:
    root = tmp_path / "trees" / name
    root.mkdir(parents=True)
    (root / "a.txt").write_text(text)
    return source.SourceTree(name, root, f"path {root}")


def test_a_release_past_a_range_is_patched_for_real(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_program("patch", "patch")
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "series.toml").write_text(SERIES)
    (tmp_path / "patches" / "greet.patch").write_text(PATCH)
    trees = {
        "0.2.0": _tree(tmp_path, "0.2.0", "hello\n"),
        "0.3.0": _tree(tmp_path, "0.3.0", "hello\n"),  # the same text: extend
        "0.4.0": _tree(tmp_path, "0.4.0", "bonjour\n"),  # changed: cap or vary
    }
    monkeypatch.setattr(source, "sdist_tree", lambda v: trees[v])
    items = currency.patch_ranges(("0.2.0", "0.3.0", "0.4.0"), tmp_path, tmp_path / "s")
    by = {i.subject: i for i in items}
    assert set(by) == {"0.3.0", "0.4.0"}  # 0.2.0 is inside the range
    assert "applied" in by["0.3.0"].message and "extend applies" in by["0.3.0"].fix
    assert "write a variant" in by["0.4.0"].fix and "cap" in by["0.4.0"].fix
    assert (trees["0.3.0"].root / "a.txt").read_text() == "hello\n"  # the cache untouched


def _report(items: list[currency.Item]) -> currency.Report:
    listed = pins.ReleaseList(("0.4.1", "0.34.0"), "index", "https://index.invalid/simple")
    return currency.Report(listed, items, [currency.Preflight("0.34.0", "c", "PREFLIGHT-OK", 1.0)])


@pytest.mark.parametrize(
    ("items", "rc"),
    [([], 0), ([currency.Item("gap", "0.34.0", "x.py:1: could not read", "teach it")], 1)],
)
def test_exit_status_current_or_stale(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    items: list[currency.Item],
    rc: int,
) -> None:
    monkeypatch.setattr(currency, "check", lambda *a, **k: _report(items))
    assert cli.main(["currency", "--no-preflight"]) == rc
    out = capsys.readouterr().out
    assert "releases: 2 on the index (0.4.1 … 0.34.0)" in out
    assert "preflight: 1 releases read (PREFLIGHT-OK 1); 0 ERROR" in out
    assert ("current: nothing to update" in out) is (rc == 0)
    if rc:
        assert "[gap] x.py:1: could not read" in out and "fix: teach it" in out


def test_no_answer_from_the_index_is_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def down(*a: object, **k: object) -> currency.Report:
        raise SourceError("cannot reach the package index", fix="check the network")

    monkeypatch.setattr(currency, "check", down)
    assert cli.main(["currency"]) == 3
    assert "fix: check the network" in capsys.readouterr().err


def test_a_release_whose_cell_ends_in_error_is_counted_as_one() -> None:
    """run_cell's verdict is ERROR (upper case); the count once compared it with the stage
    status "error" and missed every such release (found by typing verdicts as an enum)."""
    listed = pins.ReleaseList(("0.34.0",), "index", "https://index.invalid/simple")
    ended = currency.Preflight("0.34.0", "c", Verdict.ERROR, 1.0)
    rep = currency.Report(listed, [], [ended])
    assert rep.errors == [ended] and rep.to_json()["counts"]["error"] == 1
