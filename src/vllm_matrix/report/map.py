"""The map as pivot tables: reports/map.md (vLLM rows × torch columns, one table per
(toolchain, arch)) and reports/map.html (the same as a coloured grid, one static file, each
cell's title giving its cause, fix and evidence). Rendered from the map's JSON only."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from packaging.version import Version

from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.cache import atomic_write_text

# verdict (and whether it carries warnings) -> markdown mark, css class, words
MARKS: dict[tuple[str, bool], tuple[str, str, str]] = {
    ("PASS", False): ("✅", "pass", "PASS: compiled (probe or build) without error"),
    ("PASS", True): ("✅", "pass", "PASS: compiled without error"),
    ("FAIL", False): ("❌", "fail", "FAIL: a compile failed"),
    ("FAIL", True): ("❌", "fail", "FAIL: a compile failed"),
    ("PREFLIGHT-OK", False): ("🟢", "ok", "PREFLIGHT-OK: every rule passes, nothing compiled"),
    (
        "PREFLIGHT-OK",
        True,
    ): (
        "🟡",
        "warn",
        "PREFLIGHT-OK with warnings (off the release's torch pin, or nvcc older "
        "than torch's CUDA): should build, nothing compiled",
    ),
    ("PREDICTED-FAIL", False): ("🟥", "pfail", "PREDICTED-FAIL: a rule says it cannot build"),
    ("PREDICTED-FAIL", True): ("🟥", "pfail", "PREDICTED-FAIL: a rule says it cannot build"),
    ("SKIPPED", False): ("⬜", "skip", "SKIPPED: cannot be checked on the machine that ran it"),
    ("SKIPPED", True): ("⬜", "skip", "SKIPPED"),
}
UNKNOWN = ("❔", "unknown", "UNKNOWN: not run, or interrupted")
DEPTH = {
    "preflight": "pf",
    "probe": "pr",
    "build": "bd",
    "audit": "bd",
    "smoke": "bd",
}


def mark(cell: dict[str, Any]) -> tuple[str, str, str]:
    return MARKS.get((cell["verdict"], bool(cell.get("warn"))), UNKNOWN)


def depth_code(cell: dict[str, Any]) -> str:
    depth = str(cell["depth"])
    return DEPTH.get(depth, depth[:2])


def _vkey(v: str) -> Version:
    return Version(v)


def tables(d: dict[str, Any]) -> list[tuple[tuple[str, str, str], list[dict[str, Any]]]]:
    """Cells grouped per (cuda, provider, arch), in toolchain then arch order."""
    by: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for c in d["cells"]:
        by.setdefault((c["cuda"], c["provider"], c["arch"]), []).append(c)
    return sorted(
        by.items(), key=lambda kv: (Version(kv[0][0]), kv[0][1], Arch.parse(kv[0][2]).number)
    )


def table_title(key: tuple[str, str, str]) -> str:
    cuda, provider, arch = key
    return f"CUDA {cuda} ({provider}) · {Arch.parse(arch).sm}"


def table_anchor(key: tuple[str, str, str]) -> str:
    cuda, provider, arch = key
    return f"t-cu{cuda.replace('.', '')}-{provider}-{arch}"


def release_anchor(v: str) -> str:
    return "v" + v.replace(".", "-")


def _axes(cells: Iterable[dict[str, Any]]) -> tuple[list[str], list[str]]:
    cells = list(cells)
    rows = sorted({c["vllm"] for c in cells}, key=_vkey)
    cols = sorted({c["torch"] for c in cells}, key=_vkey)
    return rows, cols


def _causes(d: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {c["n"]: c for c in d.get("causes", [])}


def summary_lines(d: dict[str, Any]) -> list[str]:
    n = d["counts"]
    p = d["probes"]
    cells = d["cells"]
    only_pf = sum(1 for c in cells if c["depth"] == "preflight")
    deeper = len(cells) - only_pf
    lines = [
        f"**{n['releases']} releases × {n['torch_builds']} torch builds**, each torch with the "
        f"toolchains of its CUDA major, × {len({c['arch'] for c in cells})} arch families: "
        f"**{n['cells']} cells** in {n['tables']} tables. Preflight of the whole grid: "
        f"{d['preflight_s']:.1f} s.",
        f"Probes this run: budget {p['budget_s']:.0f} s, spent {p['spent_s']:.0f} s, "
        f"{len(p['probed'])} cell(s) probed. Of {p['boundaries']} boundaries (neighbouring "
        f"cells, one ok and one failing), {p['compile_checkable']} rest on a rule a compile "
        f"can check (the torch-API scan) and {len(p['confirmed'])} are confirmed by compiling "
        f"both sides (this run's probes and earlier ones)"
        + (f"; contradicted: {', '.join(p['contradicted'])}" if p["contradicted"] else "")
        + ".",
        f"**Resting only on preflight: {only_pf} of {len(cells)} cells** (depth `pf`); "
        f"{deeper} were compiled (`pr` probe, `bd` build). A preflight verdict is a "
        "prediction from the release's sources and the toolchain facts; the arch, CUDA-major "
        "and Python rules are facts of nvcc's, torch's and CMake's own lists, the API rule "
        "is a scan a compile can contradict.",
    ]
    lines += [f"Note: {x}" for x in p.get("notes", [])]
    return lines


def closing_lines(d: dict[str, Any]) -> list[str]:
    """Which verdicts rest on preflight alone, by kind: what a reader may lean on."""
    cells = d["cells"]
    pf = [c for c in cells if c["depth"] == "preflight"]
    fails = [c for c in pf if c["verdict"] == "PREDICTED-FAIL"]
    facts_only = [c for c in fails if not any(r.startswith("api-") for r in c.get("rules", []))]
    api = [c for c in fails if c not in facts_only]
    oks = [c for c in pf if c["verdict"] == "PREFLIGHT-OK"]
    compiled = [c for c in cells if c["depth"] != "preflight"]
    return [
        "## What rests on preflight only",
        "",
        f"- {len(facts_only)} PREDICTED-FAIL cells rest on facts of the toolchain's own lists "
        "(nvcc's targets, torch's SASS/PTX, vLLM's CUDA_SUPPORTED_ARCHS and Python list, the "
        "CUDA major): a compile would only repeat them.",
        f"- {len(api)} PREDICTED-FAIL cells rest (also) on the torch-API scan: a use in the "
        "release's sources of a symbol newer than the torch; a compile can contradict it, and "
        "the probes at the boundaries check it.",
        f"- {len(oks)} PREFLIGHT-OK cells are predictions: no rule fails, nothing compiled. The "
        "API scan knows the symbols of knowledge/data/api.toml only, so an off-pin cell (🟡) "
        "may still "
        "fail on an API change it does not know; the probes above are the evidence that it "
        "does not at the boundaries checked.",
        f"- {len(compiled)} cell(s) were compiled: "
        + (", ".join(f"`{c['id']}` {c['verdict']} at {c['depth']}" for c in compiled) or "none")
        + ".",
        "",
    ]


def legend_lines() -> list[str]:
    seen: dict[str, str] = {}
    for m, _, words in [*MARKS.values(), UNKNOWN]:
        seen.setdefault(m, words)
    out = [f"- {m} {w}" for m, w in seen.items()]
    out.append(
        "- depth: `pf` preflight (rules only), `pr` probe (the deciding units compiled to "
        "the front end or codegen), `bd` build (wheel built, audited, smoke-tested)"
    )
    out.append("- each mark links to its release's details below; a blank cell: not in the grid")
    return out


def render_md(d: dict[str, Any]) -> str:
    ts = tables(d)
    causes = _causes(d)
    out = [
        "# The map: which vLLM releases build with which torch, CUDA toolkit and GPU arch",
        "",
        "Generated by `nox -s map` (`python -m vllm_matrix map`) from matrix.toml's `[grid]`; "
        "do not edit. The same as a coloured grid: [map.html](map.html) (each cell's "
        "tooltip: cause, fix, evidence).",
        "",
        *summary_lines(d),
        "",
        "## Legend",
        "",
        *legend_lines(),
        "",
        "Tables: " + " · ".join(f"[{table_title(k)}](#{table_anchor(k)})" for k, _ in ts),
        "",
    ]
    for key, cells in ts:
        rows, cols = _axes(cells)
        at = {(c["vllm"], c["torch"]): c for c in cells}
        out += [
            f'<a id="{table_anchor(key)}"></a>',
            "",
            f"## {table_title(key)}",
            "",
            "| vLLM \\ torch | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for v in rows:
            tds = []
            for t in cols:
                c = at.get((v, t))
                if c is None:
                    tds.append("")
                    continue
                tds.append(f"[{mark(c)[0]}{depth_code(c)}](#{release_anchor(v)})")
            out.append(f"| [{v}](#{release_anchor(v)}) | " + " | ".join(tds) + " |")
        out.append("")
    out += closing_lines(d)
    out += ["## Releases: why their cells fail", ""]
    by_release: dict[str, list[dict[str, Any]]] = {}
    for c in d["cells"]:
        by_release.setdefault(c["vllm"], []).append(c)
    for v in sorted(by_release, key=_vkey):
        cells = by_release[v]
        out += [f'<a id="{release_anchor(v)}"></a>', "", f"### vLLM {v}", ""]
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for c in cells:
            if c["verdict"] in ("PREDICTED-FAIL", "FAIL"):
                groups.setdefault(tuple(c.get("rules") or [c["verdict"]]), []).append(c)
        oks = [c for c in cells if c["verdict"] in ("PASS", "PREFLIGHT-OK")]
        compiled = [c for c in cells if c["depth"] != "preflight"]
        out.append(
            f"{len(oks)} of {len(cells)} cells ok, {len(cells) - len(oks)} failing"
            + (
                "; compiled: " + ", ".join(f"`{c['id']}` {c['verdict']}" for c in compiled)
                if compiled
                else ""
            )
            + "."
        )
        out.append("")
        for rules, cs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            ex = causes.get(cs[0].get("why", 0), {})
            where = sorted({table_title((c["cuda"], c["provider"], c["arch"])) for c in cs})
            torches = sorted({c["torch"] for c in cs}, key=_vkey)
            span = torches[0] if len(torches) == 1 else f"{torches[0]} … {torches[-1]}"
            ev = ", ".join(f"`{e}`" for e in ex.get("evidence", [])[:4])
            out.append(
                f"- **{', '.join(rules)}** ({len(cs)} cells; torch {span}; "
                f"{'; '.join(where)}): {ex.get('cause', '')}"
                + (f" — fix: {ex['fix']}" if ex.get("fix") else "")
                + (f" — evidence: {ev}" if ev else "")
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font:13px/1.35 system-ui,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 8px}h2{font-size:15px;margin:18px 0 6px}
p{max-width:1100px;margin:4px 0}
.legend span{display:inline-block;padding:1px 6px;margin:2px 4px 2px 0;border-radius:3px}
table.map{border-collapse:collapse;font:11px monospace}
table.map th{padding:1px 4px;background:#f2f2f2;font-weight:normal;white-space:nowrap}
table.map td{width:34px;height:13px;padding:0 2px;text-align:center;border:1px solid #fff}
.pass{background:#1a7f37;color:#fff}.ok{background:#8fd19e}.warn{background:#e3d26f}
.pfail{background:#f1a7a7}.fail{background:#b42318;color:#fff}.skip{background:#ccc}
.unknown{background:#eee}td.none{background:#fafafa}
.tables{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
"""

SCRIPT = """
const W = JSON.parse(document.getElementById('causes').textContent);
for (const td of document.querySelectorAll('td.v')) {
  const c = W[td.dataset.w];
  let t = td.dataset.id + '\\n' + td.dataset.verdict + ' at ' + td.dataset.depth;
  if (c) {
    t += '\\ncause: ' + c.cause;
    if (c.fix) t += '\\nfix: ' + c.fix;
    if (c.evidence.length) t += '\\nevidence: ' + c.evidence.join(', ');
  }
  if (td.dataset.here) t += '\\nhere: ' + td.dataset.here;
  td.title = t;
}
"""


def render_html(d: dict[str, Any]) -> str:
    esc = html.escape
    ts = tables(d)
    causes = {
        str(c["n"]): {k: c[k] for k in ("cause", "fix", "evidence")} for c in d.get("causes", [])
    }
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>vLLM build map: release × torch × toolchain × arch</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Which vLLM releases build with which torch, CUDA toolkit and GPU arch</h1>",
    ]
    for line in summary_lines(d):
        parts.append(f"<p>{esc(line.replace('**', '').replace('`', ''))}</p>")
    parts.append('<p class="legend">')
    seen = set()
    for _, cls, words in [*MARKS.values(), UNKNOWN]:
        if cls in seen:
            continue
        seen.add(cls)
        parts.append(f'<span class="{cls}">{esc(words.split(":")[0])}</span>')
    parts.append(
        " cell text: depth (pf preflight, pr probe, bd build); hover a cell for cause, fix, "
        "evidence</p>"
    )
    parts.append('<div class="tables">')
    for key, cells in ts:
        rows, cols = _axes(cells)
        at = {(c["vllm"], c["torch"]): c for c in cells}
        parts.append(f'<section><h2 id="{table_anchor(key)}">{esc(table_title(key))}</h2>')
        parts.append('<table class="map"><thead><tr><th>vLLM \\ torch</th>')
        parts += [f"<th>{esc(t)}</th>" for t in cols]
        parts.append("</tr></thead><tbody>")
        for v in rows:
            parts.append(f"<tr><th>{esc(v)}</th>")
            for t in cols:
                c = at.get((v, t))
                if c is None:
                    parts.append('<td class="none"></td>')
                    continue
                _, cls, _ = mark(c)
                parts.append(
                    f'<td class="v {cls}" data-id="{esc(c["id"])}" '
                    f'data-verdict="{esc(c["verdict"])}" data-depth="{esc(c["depth"])}" '
                    f'data-w="{c.get("why", "")}"'
                    + (f' data-here="{esc(c["here"])}"' if c.get("here") else "")
                    + f">{depth_code(c)}</td>"
                )
            parts.append("</tr>")
        parts.append("</tbody></table></section>")
    parts.append("</div>")
    blob = json.dumps(causes, ensure_ascii=False).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="causes">{blob}</script>')
    parts.append(f"<script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(d: dict[str, Any], reports: Path) -> tuple[Path, Path]:
    md, page = reports / "map.md", reports / "map.html"
    atomic_write_text(md, render_md(d))
    atomic_write_text(page, render_html(d))
    return md, page


def slice_md(d: dict[str, Any], arch: str, skip_all_failing: bool = True) -> str:
    """One arch's tables (e.g. "sm120") for the README: marks without links, consecutive
    releases with the same row merged ("0.4.1 … 0.7.3"), tables where every cell fails left
    out (named in one line instead)."""
    out, dropped = [], []
    for key, cells in tables(d):
        if key[2] != arch:
            continue
        if skip_all_failing and all(c["verdict"] in ("PREDICTED-FAIL", "FAIL") for c in cells):
            dropped.append(table_title(key))
            continue
        rows, cols = _axes(cells)
        at = {(c["vllm"], c["torch"]): c for c in cells}
        out += [
            f"**{table_title(key)}**",
            "",
            "| vLLM \\ torch | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        runs: list[tuple[str, str, list[str]]] = []
        for v in rows:
            tds = [
                f"{mark(at[(v, t)])[0]}{depth_code(at[(v, t)])}" if (v, t) in at else ""
                for t in cols
            ]
            if runs and runs[-1][2] == tds:
                runs[-1] = (runs[-1][0], v, tds)
            else:
                runs.append((v, v, tds))
        for first, last, tds in runs:
            label = first if first == last else f"{first} … {last}"
            out.append(f"| {label} | " + " | ".join(tds) + " |")
        out.append("")
    if dropped:
        out.append("Every cell fails in: " + "; ".join(dropped) + ".")
        out.append("")
    return "\n".join(out)
