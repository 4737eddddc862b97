"""reports/map.md and map.html from a map JSON: pivot tables, marks, links, titles."""

from __future__ import annotations

import json
import re
from typing import Any

from vllm_matrix.report import map as mapreport


def cell(
    v: str, t: str, arch: str, verdict: str, depth: str = "preflight", **kw: Any
) -> dict[str, Any]:
    cuda = kw.pop("cuda", "12.4")
    d = {
        "id": f"vllm{v}-torch{t}-cu{cuda}-py3.11-{arch}",
        "vllm": v,
        "torch": t,
        "cuda": cuda,
        "provider": kw.pop("provider", "debian"),
        "python": "3.11",
        "arch": arch,
        "verdict": verdict,
        "depth": depth,
        "warn": kw.pop("warn", False),
        "here": kw.pop("here", ""),
        "rules": kw.pop("rules", []),
    }
    d.update(kw)
    return d


def fixture() -> dict[str, Any]:
    cells = [
        cell("0.10.1", "2.6.0", "sm90", "PREDICTED-FAIL", rules=["api-Float8_e8m0fnu"], why=1),
        cell("0.10.1", "2.7.0", "sm90", "PASS", "probe"),
        cell("0.10.0", "2.6.0", "sm90", "PREFLIGHT-OK", warn=True, why=2),
        cell("0.10.0", "2.7.0", "sm90", "FAIL", "probe", rules=["x"], why=3),
        cell("0.9.2", "2.6.0", "sm120", "PREDICTED-FAIL", rules=["nvcc-arch"], why=1),
        cell("0.10.1", "2.11.0", "sm90", "PREFLIGHT-OK", cuda="13.0", provider="pypi"),
    ]
    return {
        "schema": "vllm-matrix/map",
        "version": 1,
        "counts": {"releases": 3, "torch_builds": 3, "tables": 3, "cells": len(cells)},
        "preflight_s": 1.25,
        "probes": {
            "budget_s": 400,
            "spent_s": 390,
            "probed": ["a", "b"],
            "boundaries": 2,
            "compile_checkable": 1,
            "confirmed": ["a|b"],
            "contradicted": [],
            "notes": [],
        },
        "causes": [
            {
                "n": 1,
                "cause": "ops.cu:938 uses Float8_e8m0fnu",
                "fix": "torch ≥ 2.7.0",
                "evidence": ["csrc/x.cu:938"],
            },
            {"n": 2, "cause": "off the pin", "fix": "", "evidence": []},
            {"n": 3, "cause": 'error: <boom> & "quoted"', "fix": "f", "evidence": ["log"]},
        ],
        "cells": cells,
    }


def test_md_has_a_section_per_arch_sm120_first_and_a_pivot_per_toolchain_in_it() -> None:
    md = mapreport.render_md(fixture())
    assert re.findall(r"^## (sm_\d+)", md, re.M) == ["sm_120", "sm_90"]
    heads = re.findall(r"^### (CUDA .*)$", md, re.M)
    assert heads == [
        "CUDA 12.4 (debian) · sm_120",
        "CUDA 12.4 (debian) · sm_90",
        "CUDA 13.0 (pypi) · sm_90",
    ]
    sm90 = md.split("### CUDA 12.4 (debian) · sm_90")[1].split("### ")[0]
    assert "| vLLM \\ torch | 2.6.0 | 2.7.0 |" in sm90
    rows = [r for r in sm90.splitlines() if r.startswith("| 0.")]
    # rows in version order (0.10.0 < 0.10.1); compiled ✅/❌ apart from predicted 🟢🟡🟥
    assert rows == ["| 0.10.0 | 🟡 | ❌ |", "| 0.10.1 | 🟥 | ✅ |"]
    assert "pf" not in sm90
    for a in set(re.findall(r"\]\(#([\w-]+)\)", md)):  # every link has its anchor
        assert f'<a id="{a}"></a>' in md or a == "releases-why-their-cells-fail", a


def test_md_summary_legend_and_release_details() -> None:
    md = mapreport.render_md(fixture())
    assert "**Resting only on preflight: 4 of 6 cells**" in md
    assert "budget 400 s, spent 390 s, 2 cell(s) probed" in md and "1 are confirmed" in md
    legend = md.split("## Legend")[1].split("## ")[0]
    for m in ("✅", "❌", "🟢", "🟡", "🟥", "⬜"):
        assert m in legend
    assert "compiled" in legend and "predicted" in legend
    detail = md.split('<a id="v0-10-1"></a>')[1].split("<a id=")[0]
    assert "**api-Float8_e8m0fnu** (1 cells; torch 2.6.0" in detail
    assert "fix: torch ≥ 2.7.0" in detail and "`csrc/x.cu:938`" in detail
    assert "`vllm0.10.1-torch2.7.0-cu12.4-py3.11-sm90` PASS" in detail


def test_html_cells_carry_only_class_and_cause_and_compiled_ones_a_mark() -> None:
    page = mapreport.render_html(fixture())
    tds = re.findall(r'<td class="v (\w+)"([^>]*)>([^<]*)</td>', page)
    assert len(tds) == 6
    assert sorted(c for c, _, _ in tds) == ["fail", "ok", "pass", "pfail", "pfail", "warn"]
    # compiled cells (probe) show ✓/✗, predicted ones nothing
    assert {c: t for c, _, t in tds if t} == {"pass": "✓", "fail": "✗"}
    assert sum(1 for _, a, _ in tds if 'data-w="1"' in a) == 2
    # the sm_120 table has one column and one row: no empty slots; sm_90 is full 2x2
    assert page.count('<td class="none">') == 0
    assert "<boom>" not in page.split("<script")[0]
    data = json.loads(page.split('id="data">')[1].split("</script>")[0])
    cause3 = data["causes"]["3"]
    cause_parts = data["lists"][cause3[0]]
    assert [[data["texts"][i] for i in data["parts"][p]] for p in cause_parts] == [
        ['error: <boom> & "quoted"']
    ]
    assert page.count("<table") == 3
    # sm_120 first; a legend with the compiled/predicted swatches
    assert page.index('id="arch-sm120"') < page.index('id="arch-sm90"')
    assert "compiled: PASS" in page and "predicted: cannot build" in page


def test_missing_slot_is_drawn_empty() -> None:
    d = fixture()
    d["cells"] = [c for c in d["cells"] if not (c["vllm"] == "0.10.0" and c["torch"] == "2.7.0")]
    page = mapreport.render_html(d)
    assert page.count('<td class="none">') == 1
    md = mapreport.render_md(d)
    assert "| 0.10.0 | 🟡 |  |" in md


def test_slice_md_is_one_arch_with_equal_neighbouring_rows_merged_and_a_legend() -> None:
    d = fixture()
    s = mapreport.slice_md(d, "sm120", skip_all_failing=False)
    assert "CUDA 12.4 (debian) · sm_120" in s and "sm_90" not in s
    assert "| 0.9.2 | 🟥 |" in s and "Legend: ✅ ❌ compiled" in s
    assert "Every cell fails in: CUDA 12.4 (debian) · sm_120." in mapreport.slice_md(d, "sm120")
    d["cells"] += [cell(v, "2.6.0", "sm120", "PREDICTED-FAIL") for v in ("0.9.0", "0.9.1")]
    d["cells"].append(cell("0.10.0", "2.6.0", "sm120", "PREFLIGHT-OK"))
    s = mapreport.slice_md(d, "sm120")
    assert "| 0.9.0 … 0.9.2 | 🟥 |" in s and "| 0.10.0 | 🟢 |" in s
    assert mapreport.slice_md(d, "sm80") == ""


def test_packed_data_is_the_map_again() -> None:
    d = fixture()
    d["cells"].append(cell("0.10.1", "2.7.1+cu128", "sm120", "PREFLIGHT-OK", id="odd-id"))
    p = mapreport.pack(d)
    assert p["packed"] == 1 and mapreport.unpack(p) == d
    assert mapreport.unpack(mapreport.unpack(p)) == d  # plain data passes through


def test_the_committed_maps_compiles_become_earlier_verdicts() -> None:
    got = mapreport.compiled_cells(fixture())
    assert set(got) == {
        "vllm0.10.1-torch2.7.0-cu12.4-py3.11-sm90",
        "vllm0.10.0-torch2.7.0-cu12.4-py3.11-sm90",
    }
    failed = got["vllm0.10.0-torch2.7.0-cu12.4-py3.11-sm90"]["verdict"]
    assert failed == {
        "verdict": "FAIL",
        "depth": "probe",
        "cause": 'error: <boom> & "quoted"',
        "fix": "f",
        "evidence": ["log"],
    }
    assert mapreport.compiled_cells({}) == {}


def test_html_texts_split_at_semicolons_and_commas_and_join_back_whole() -> None:
    """The one advice names each cell's own change: unique as a whole, common in its
    pieces, so the page interns the pieces (map.html stays under 1 MB with ~7,000 cells)."""
    d = fixture()
    fix = "vLLM 0.9.2 × torch 2.7.0+cu128 × CUDA 12.8 (torch 2.6.0 → 2.7.0+cu128, CUDA 12.4 → 12.8)"
    d["causes"][0]["fix"] = fix + "; or another, with a comma"
    page = mapreport.render_html(d)
    data = json.loads(page.split('id="data">')[1].split("</script>")[0])
    fix_list = data["lists"][data["causes"][str(d["causes"][0]["n"])][1]]
    texts_of = [[data["texts"][i] for i in data["parts"][p]] for p in fix_list]
    assert "; ".join(", ".join(t) for t in texts_of) == fix + "; or another, with a comma"
    assert "CUDA 12.4 → 12.8)" in data["texts"]
    assert "D.parts[p].map(i => D.texts[i]).join(', ')).join('; ')" in page


def test_every_compiling_stage_of_plan_shows_its_depth() -> None:
    """A verdict a compile reached carries its depth; which stages compile is PLAN's
    (results.COMPILED), so a gpu or model depth counts as a build does."""
    assert mapreport.cell_text(cell("0.20.0", "2.11.0", "sm90", "PASS", "model")) == "✅mo"
    assert mapreport.cell_text(cell("0.20.0", "2.11.0", "sm90", "FAIL", "gpu")) == "❌gp"
    assert mapreport.cell_text(cell("0.20.0", "2.11.0", "sm90", "PASS", "build")) == "✅bd"
    assert mapreport.cell_text(cell("0.20.0", "2.11.0", "sm90", "PREFLIGHT-OK")) == "🟢"
