"""The map on real releases and in a real browser.

- release facts read once and cached give the same facts, API uses, kernel gates and
  preflight verdicts as reading the tree each time;
- reports/map.html drawn by Debian's headless Chromium (fetched into the cache with
  apt-get download + dpkg -x): non-blank screenshot, one grid cell per map cell, every
  cell's title set to its verdict (and cause).
With CI=true a browser that cannot be had fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import skip_or_fail

from vllm_matrix.infra.config import load_matrix
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline import grid, mapping
from vllm_matrix.report import browser
from vllm_matrix.report import map as mapreport
from vllm_matrix.stages import preflight
from vllm_matrix.stages.facts import read_facts
from vllm_matrix.stages.preflight import apiscan, gates

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).parents[2]
GRID = """
[defaults]
provider = "debian"
python = "3.11"

[[cell]]
vllm = "0.10.1"
torch = "2.7.1"
cuda = "12.4"
arch = ["9.0"]

[grid]
vllm = "0.10.0..0.10.1"
torch = ["2.6.0", "2.7.0"]
toolchains = [{ cuda = "12.4", provider = "debian" }]
arch = ["9.0", "12.0"]
"""


def _browser() -> Path:
    try:
        return browser.headless_shell()
    except MatrixError as exc:
        skip_or_fail(f"no headless Chromium: {exc.message}")


@pytest.mark.usefixtures("need_index")
@pytest.mark.parametrize("version", ["0.10.0", "0.10.1"])
def test_cached_release_facts_are_the_trees_facts(version: str) -> None:
    know = toolchains.load()
    rf = mapping.release_facts(version, know)  # read (or loaded) once
    again = mapping.release_facts(version, know)  # from the cache file
    assert again == rf
    tree = rf.tree
    assert again.facts == read_facts(tree, version)
    direct = apiscan.scan(tree, know.api)
    assert [(h.symbol.name, h.file, h.line) for h in rf.hits] == [
        (h.symbol.name, h.file, h.line) for h in direct
    ]
    assert rf.gates == gates.gates(tree)
    # the committed snapshot (what a fresh machine's advice reads) is this sdist's read
    fresh = mapping.read_release(version, know)
    snap = mapping.snapshot_entry(version, fresh.sha256, mapping._code_digest(know))
    assert snap == json.loads(json.dumps(mapping._entry(fresh))), "run " + mapping.DERIVE
    # the map's preflight on cached facts == preflight reading the tree
    m = load_matrix(_write(Path(os.environ.get("TMPDIR", "/tmp")) / f"m-{version}.toml"))
    host = preflight.Host(None, {}, None)
    for c in (c for c in grid.cells_of(m) if c.vllm == version):
        mc = mapping.preflight_cell(c, rf, know, host, pins.load())
        found = [
            f
            for f in preflight.check(c, read_facts(tree, version), know, tree, host, pins.load())
            if f.rule != "toolkit-obtainable"
        ]
        assert mc.verdict == {"predicted-fail": "PREDICTED-FAIL"}.get(
            preflight.status_of(found), "PREFLIGHT-OK"
        ), c.id
        assert set(mc.rules) == {f.rule for f in found if f.level == "fail"}, c.id


def _write(p: Path) -> Path:
    p.write_text(GRID)
    return p


@pytest.mark.usefixtures("need_index")
def test_map_html_draws_in_headless_chromium(tmp_path: Path) -> None:
    m = load_matrix(_write(tmp_path / "matrix.toml"))
    run = mapping.run_map(mapping.grid_cells(m), tmp_path / "results")
    d = run.to_json()
    assert d["counts"]["cells"] == 2 * 2 * 2
    _, page = mapreport.write(d, tmp_path / "reports")
    exe = _browser()
    dom = browser.dump_dom(exe, page)
    tds = re.findall(r'<td class="v (\w+)"([^>]*)>', dom)
    assert len(tds) == 8  # one grid cell per map cell, each titled by the page's script
    attrs = [dict(re.findall(r'([\w-]+)="([^"]*)"', a)) for _, a in tds]
    titled = {a["data-id"]: a["title"] for a in attrs if "data-id" in a and "title" in a}
    assert len(titled) == 8 and all(i.startswith("vllm0.10") for i in titled)
    # 0.10.1 x torch 2.6.0 x sm_90: the API scan's predicted failure, cause in the title
    bad = titled["vllm0.10.1-torch2.6.0-cu12.4-py3.11-sm90"]
    assert "PREDICTED-FAIL" in bad and "Float8_e8m0fnu" in bad
    assert bad.startswith("vLLM 0.10.1 x torch 2.6.0 x CUDA 12.4 (debian) x sm_90")
    png = browser.screenshot(exe, page, tmp_path / "map.png", (900, 500), "only-sm120")
    assert browser.png_colors(png) > 8  # a blank page has one colour


def test_committed_map_html_draws_every_cell() -> None:
    page = ROOT / "reports" / "map.html"
    if not page.is_file():
        skip_or_fail("no reports/map.html yet (nox -s map)")
    text = page.read_text()
    n = int(re.search(r"(\d+) cells in \d+ tables", text).group(1))  # type: ignore[union-attr]
    assert page.stat().st_size <= 1_000_000  # small enough to open
    dom = browser.dump_dom(_browser(), page, timeout=300)
    assert len(re.findall(r'<td class="v \w+"[^>]*title="', dom)) == n
