"""The map as pictures a person reads: one section per GPU arch (sm_120 first: the question
people ask), a pivot table per toolchain in it (vLLM rows × torch columns). reports/map.md
(equal neighbouring releases merged), reports/map.html (a coloured grid, one static file,
each cell's title giving its cause, fix and evidence) and reports/map.json (the map's data,
packed, committed: map-slice and a re-render read it). What was compiled is told from what
is predicted at a glance: a compiled cell is a solid colour with ✓/✗, a prediction a pale
one with no text. Rendered from the map's JSON only."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from packaging.version import Version

from vllm_matrix.infra import results
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.cache import atomic_write_text
from vllm_matrix.infra.results import Verdict

# verdict (and whether it carries warnings) -> markdown mark, css class, words
MARKS: dict[tuple[str, bool], tuple[str, str, str]] = {
    (Verdict.PASS, False): ("✅", "pass", "PASS: compiled (probe or build) without error"),
    (Verdict.PASS, True): ("✅", "pass", "PASS: compiled without error"),
    (Verdict.FAIL, False): ("❌", "fail", "FAIL: a compile failed"),
    (Verdict.FAIL, True): ("❌", "fail", "FAIL: a compile failed"),
    (Verdict.PREFLIGHT_OK, False): (
        "🟢",
        "ok",
        "PREFLIGHT-OK: every rule passes, nothing compiled",
    ),
    (
        Verdict.PREFLIGHT_OK,
        True,
    ): (
        "🟡",
        "warn",
        "PREFLIGHT-OK with warnings (off the release's torch pin, or nvcc older "
        "than torch's CUDA): should build, nothing compiled",
    ),
    (Verdict.PREDICTED_FAIL, False): ("🟥", "pfail", "PREDICTED-FAIL: a rule says it cannot build"),
    (Verdict.PREDICTED_FAIL, True): ("🟥", "pfail", "PREDICTED-FAIL: a rule says it cannot build"),
    (Verdict.SKIPPED, False): (
        "⬜",
        "skip",
        "SKIPPED: cannot be checked on the machine that ran it",
    ),
    (Verdict.SKIPPED, True): ("⬜", "skip", "SKIPPED"),
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
        f"**Resting only on preflight: {only_pf} of {len(cells)} cells** (🟢 🟡 🟥, pale "
        f"in the pictures); {deeper} were compiled (✅ ❌, solid). A preflight verdict is a "
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
    fails = [c for c in pf if c["verdict"] == Verdict.PREDICTED_FAIL]
    facts_only = [c for c in fails if not any(r.startswith("api-") for r in c.get("rules", []))]
    api = [c for c in fails if c not in facts_only]
    oks = [c for c in pf if c["verdict"] == Verdict.PREFLIGHT_OK]
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
    return [
        "- compiled here or elsewhere (probe or build): ✅ PASS · ❌ FAIL "
        "(a `bd` after the mark: a wheel was built)",
        "- predicted from the release's sources and the toolchain facts, nothing compiled: "
        "🟢 should build on the release's own torch pin · 🟡 should build, with warnings "
        "(off the pin, or nvcc older than torch's CUDA) · 🟥 a rule says it cannot build",
        "- ⬜ skipped · ❔ not run · a blank slot: not in the grid",
        "- rows: vLLM releases (equal neighbours merged: `0.4.1 … 0.7.3`); columns: torch "
        "builds; the reasons per release are under [Releases](#releases-why-their-cells-fail)",
    ]


ARCH_WORDS = {
    "sm120": "Blackwell GeForce / workstation: RTX 50xx, RTX PRO 6000",
    "sm100": "Blackwell data centre: B200, GB200",
    "sm90": "Hopper: H100, H200",
    "sm89": "Ada: L4, L40, RTX 40xx",
    "sm86": "Ampere: A10, A40, RTX 30xx",
    "sm80": "Ampere: A100, A30",
}


def arch_order(d: dict[str, Any]) -> list[str]:
    """The map's arches, sm_120 first (the question people ask), then newest first."""
    tags = {c["arch"] for c in d["cells"]}
    return sorted(tags, key=lambda t: (t != "sm120", -Arch.parse(t).number))


def picture_size(d: dict[str, Any], arch: str) -> tuple[int, int]:
    """The window an arch's picture needs: the title, legend and column heads (~270 px),
    then 17 px per release row (measured in Chromium at the page's CSS), a margin."""
    rows = len({c["vllm"] for c in d["cells"] if c["arch"] == arch})
    return 1320, 300 + 17 * rows


def arch_title(tag: str) -> str:
    words = ARCH_WORDS.get(tag)
    return Arch.parse(tag).sm + (f" ({words})" if words else "")


def arch_anchor(tag: str) -> str:
    return f"arch-{tag}"


def cell_text(c: dict[str, Any]) -> str:
    """The mark a markdown cell shows: the verdict's, plus the depth where the mark alone
    does not say it (a build, or a predicted verdict that a compile reached)."""
    m = mark(c)[0]
    compiled = results.depth_stage(str(c["depth"])) in results.COMPILED
    if compiled and (c["verdict"] not in (Verdict.PASS, Verdict.FAIL) or depth_code(c) != "pr"):
        return m + depth_code(c)
    return m


def merged_rows(
    cells: list[dict[str, Any]], text: Callable[[dict[str, Any]], str]
) -> tuple[list[str], list[tuple[str, str, list[str]]]]:
    """Columns, and rows of equal neighbouring releases merged: (first, last, cells)."""
    rows, cols = _axes(cells)
    at = {(c["vllm"], c["torch"]): c for c in cells}
    runs: list[tuple[str, str, list[str]]] = []
    for v in rows:
        tds = [text(at[(v, t)]) if (v, t) in at else "" for t in cols]
        if runs and runs[-1][2] == tds:
            runs[-1] = (runs[-1][0], v, tds)
        else:
            runs.append((v, v, tds))
    return cols, runs


def _md_table(cells: list[dict[str, Any]]) -> list[str]:
    cols, runs = merged_rows(cells, cell_text)
    out = ["| vLLM \\ torch | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for first, last, tds in runs:
        label = first if first == last else f"{first} … {last}"
        out.append(f"| {label} | " + " | ".join(tds) + " |")
    return out


def render_md(d: dict[str, Any]) -> str:
    ts = tables(d)
    causes = _causes(d)
    archs = arch_order(d)
    out = [
        "# The map: which vLLM releases build with which torch, CUDA toolkit and GPU arch",
        "",
        "Generated by `nox -s map` from matrix.toml's `[grid]` (data: [map.json](map.json)); "
        "do not edit. The same as a coloured grid: [map.html](map.html) (hover a cell: its "
        "cause, fix, evidence); one arch as markdown: `python -m vllm_matrix map-slice "
        "--arch 12.0`. Pictures: "
        + " · ".join(f"[{Arch.parse(a).sm}](map-{a}.png)" for a in archs),
        "",
        *summary_lines(d),
        "",
        "## Legend",
        "",
        *legend_lines(),
        "",
        "Arches: " + " · ".join(f"[{arch_title(a)}](#{arch_anchor(a)})" for a in archs),
        "",
    ]
    for a in archs:
        out += [f'<a id="{arch_anchor(a)}"></a>', "", f"## {arch_title(a)}", ""]
        for key, cells in ts:
            if key[2] != a:
                continue
            out += [f'<a id="{table_anchor(key)}"></a>', "", f"### {table_title(key)}", ""]
            out += _md_table(cells)
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
            if c["verdict"] in (Verdict.PREDICTED_FAIL, Verdict.FAIL):
                groups.setdefault(tuple(c.get("rules") or [c["verdict"]]), []).append(c)
        oks = [c for c in cells if c["verdict"] in (Verdict.PASS, Verdict.PREFLIGHT_OK)]
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
body{font:14px/1.4 system-ui,sans-serif;margin:16px 20px;color:#222;background:#fff}
h1{font-size:21px;margin:0 0 6px}h2{font-size:18px;margin:22px 0 4px;
border-bottom:2px solid #ddd}h3{font-size:14px;margin:8px 0 4px}
p{max-width:1150px;margin:4px 0}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:8px 0;align-items:center}
.legend .sw{display:inline-block;width:26px;height:16px;line-height:16px;text-align:center;
vertical-align:middle;margin-right:5px;border-radius:2px;font-weight:bold}
.tables{display:flex;flex-wrap:wrap;gap:22px;align-items:flex-start}
table.map{border-collapse:collapse;font:12px/1 system-ui,sans-serif}
table.map th{padding:2px 5px;font-weight:normal;white-space:nowrap;text-align:right}
table.map thead th{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;
height:76px;padding:3px 1px;vertical-align:bottom}
table.map td{width:24px;min-width:24px;height:16px;padding:0;text-align:center;
border:1px solid #fff;font-weight:bold;font-size:13px}
.ok,.sw.ok{background:#b9e4c2}.warn,.sw.warn{background:#f3e6a3}
.pfail,.sw.pfail{background:#f5c4c0}.skip,.sw.skip{background:#ddd}
.unknown,.sw.unknown{background:#f4f4f4}td.none{background:#fff}
.pass,.sw.pass{background:#137333;color:#fff}.fail,.sw.fail{background:#a50e0e;color:#fff}
.note{color:#555;font-size:13px}
"""

# verdict class -> (swatch text, legend words), in legend order
LEGEND = (
    ("pass", "✓", "compiled: PASS"),
    ("fail", "✗", "compiled: FAIL"),
    ("ok", "", "predicted: should build (own torch pin)"),
    ("warn", "", "predicted: should build, with warnings (off the pin)"),
    ("pfail", "", "predicted: cannot build (a rule says)"),
    ("skip", "", "skipped"),
    ("unknown", "", "not run"),
)
VERDICT_OF = {
    "pass": "PASS",
    "fail": "FAIL",
    "ok": "PREFLIGHT-OK",
    "warn": "PREFLIGHT-OK (warnings)",
    "pfail": "PREDICTED-FAIL",
    "skip": "SKIPPED",
    "unknown": "UNKNOWN",
}

# Each cell's title is made here from the page's data: the cell itself carries only its
# class and a cause number (the page stays small: ~7,000 cells).
SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const T = (l) => D.lists[l].map(p => D.parts[p].map(i => D.texts[i]).join(', ')).join('; ');
for (const tb of document.querySelectorAll('table.map')) {
  const cols = [...tb.querySelectorAll('thead th')].slice(1).map(th => th.textContent);
  for (const tr of tb.querySelectorAll('tbody tr')) {
    const v = tr.firstElementChild.textContent;
    [...tr.children].slice(1).forEach((td, i) => {
      if (!td.classList.contains('v')) return;
      const t = cols[i].replace('+', '');
      let s = 'vLLM ' + v + ' x torch ' + cols[i] + ' x CUDA ' + tb.dataset.cuda +
        ' (' + tb.dataset.provider + ') x ' + tb.dataset.sm +
        '\\n' + D.verdicts[td.classList[1]] + ' at ' + (td.dataset.d || 'preflight');
      const c = D.causes[td.dataset.w];
      if (c) {
        s += '\\ncause: ' + T(c[0]);
        if (D.lists[c[1]].length) s += '\\nfix: ' + T(c[1]);
        const ev = D.lists[c[2]];
        if (ev.length) s += '\\nevidence: ' + ev.map(i => D.texts[i]).join(', ');
      }
      if (td.dataset.h) s += '\\nhere: ' + D.texts[td.dataset.h];
      td.title = s;
      td.dataset.id = 'vllm' + v + '-torch' + t + '-cu' + tb.dataset.cuda + '-py' +
        (td.dataset.py || tb.dataset.py) + '-' + tb.dataset.arch;
    });
  }
}
// map.html#only-sm120: that arch's section alone (the pictures are drawn this way)
const only = location.hash.match(/^#only-(\\w+)$/);
if (only) {
  document.body.classList.add('only');
  for (const s of document.querySelectorAll('section.arch'))
    if (s.id !== 'arch-' + only[1]) s.remove();
  for (const e of document.querySelectorAll('.full')) e.remove();
}
"""


def _interned(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """The page's data, every text and list once: ``texts``; ``parts``, the pieces of a
    cause or fix between '; ' as lists of texts (split again at ', ': the one advice names
    each cell's own change, "vLLM 0.4.1 → 0.34.0, torch 2.3.0+cu121 → …", unique as a whole
    and common in its pieces); ``lists``, the lists of parts (a cause, a fix) or of texts
    (evidence); each cause three list numbers. Without the second and third tables map.html
    was 1.1–1.5 MB with the advice in its tooltips."""
    texts: dict[str, int] = {}
    parts: dict[tuple[int, ...], int] = {}
    lists: dict[tuple[int, ...], int] = {}

    def ix(x: str) -> int:
        return texts.setdefault(x, len(texts))

    def part(x: str) -> int:
        key = tuple(ix(y) for y in x.split(", "))
        return parts.setdefault(key, len(parts))

    def listed(items: list[int]) -> int:
        return lists.setdefault(tuple(items), len(lists))

    causes = {
        str(c["n"]): [
            listed([part(x) for x in c["cause"].split("; ")] if c["cause"] else []),
            listed([part(x) for x in c["fix"].split("; ")] if c["fix"] else []),
            listed([ix(x) for x in c["evidence"]]),
        ]
        for c in d.get("causes", [])
    }
    for c in d["cells"]:
        if c.get("here"):
            ix(c["here"])
    data = {
        "verdicts": VERDICT_OF,
        "causes": causes,
        "parts": [list(k) for k in parts],
        "lists": [list(k) for k in lists],
    }
    return data, texts


def _legend_html() -> str:
    esc = html.escape
    items = [
        f'<span><span class="sw {cls}">{esc(t)}</span>{esc(words)}</span>'
        for cls, t, words in LEGEND
    ]
    return (
        '<div class="legend">' + "".join(items) + "<span class=note>rows: vLLM releases, "
        "columns: torch builds; hover a cell for its cause, fix and evidence</span></div>"
    )


def render_html(d: dict[str, Any]) -> str:
    esc = html.escape
    ts = tables(d)
    data, texts = _interned(d)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>vLLM build map: release × torch × toolchain × arch</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Which vLLM releases build with which torch, CUDA toolkit and GPU arch</h1>",
        _legend_html(),
    ]
    for line in summary_lines(d):
        plain = line.replace("**", "").replace("`", "")
        parts.append(f'<p class="note full">{esc(plain)}</p>')
    for a in arch_order(d):
        parts.append(f'<section class="arch" id="{arch_anchor(a)}">')
        parts.append(f"<h2>{esc(arch_title(a))}</h2>")
        parts.append('<div class="tables">')
        for key, cells in ts:
            if key[2] != a:
                continue
            rows, cols = _axes(cells)
            at = {(c["vllm"], c["torch"]): c for c in cells}
            pys = [c["python"] for c in cells]
            py = max(set(pys), key=pys.count)
            parts.append(
                f'<div><h3 id="{table_anchor(key)}">CUDA {esc(key[0])} ({esc(key[1])})</h3>'
                f'<table class="map" data-cuda="{esc(key[0])}" data-provider="{esc(key[1])}" '
                f'data-arch="{esc(a)}" data-sm="{esc(Arch.parse(a).sm)}" data-py="{esc(py)}">'
                "<thead><tr><th></th>"
            )
            parts += [f"<th>{esc(t)}</th>" for t in cols]
            parts.append("</tr></thead><tbody>")
            for v in rows:
                tds = []
                for t in cols:
                    c = at.get((v, t))
                    if c is None:
                        tds.append('<td class="none"></td>')
                        continue
                    _, cls, _ = mark(c)
                    compiled = results.depth_stage(str(c["depth"])) in results.COMPILED
                    attrs = f' data-w="{c["why"]}"' if c.get("why") else ""
                    if c["depth"] != "preflight":
                        attrs += f' data-d="{esc(c["depth"])}"'
                    if c.get("here"):
                        attrs += f' data-h="{texts[c["here"]]}"'
                    if c["python"] != py:
                        attrs += f' data-py="{esc(c["python"])}"'
                    text = {"pass": "✓", "fail": "✗"}.get(cls, "•") if compiled else ""
                    tds.append(f'<td class="v {cls}"{attrs}>{text}</td>')
                parts.append(f"<tr><th>{esc(v)}</th>" + "".join(tds) + "</tr>")
            parts.append("</tbody></table></div>")
        parts.append("</div></section>")
    data["texts"] = list(texts)
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="data">{blob}</script>')
    parts.append(f"<script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(d: dict[str, Any], reports: Path) -> tuple[Path, Path]:
    """map.md, map.html and map.json (the data they are drawn from, packed)."""
    md, page = reports / "map.md", reports / "map.html"
    atomic_write_text(md, render_md(d))
    atomic_write_text(page, render_html(d))
    atomic_write_text(reports / "map.json", json.dumps(pack(d), separators=(",", ":")) + "\n")
    return md, page


# ------------------------------------------------------------------ the committed data

CELL_KEYS = ("vllm", "torch", "cuda", "provider", "python", "arch", "verdict", "depth", "here")


def _cell_id(c: dict[str, Any]) -> str:
    torch = c["torch"].replace("+", "")
    return f"vllm{c['vllm']}-torch{torch}-cu{c['cuda']}-py{c['python']}-{c['arch']}"


def pack(d: dict[str, Any]) -> dict[str, Any]:
    """The map's JSON with every text interned (cause and fix split at '; ') and each cell a
    row of indices: reports/map.json, ~1/15 of the plain JSON's size; ``unpack`` undoes it."""
    texts: dict[str, int] = {}

    def ix(x: str) -> int:
        return texts.setdefault(x, len(texts))

    def parts(x: str) -> list[int]:
        return [ix(y) for y in x.split("; ")] if x else []

    causes = [
        [c["n"], parts(c["cause"]), parts(c["fix"]), [ix(e) for e in c["evidence"]]]
        for c in d.get("causes", [])
    ]
    cells = []
    for c in d["cells"]:
        row: list[Any] = [ix(c[k]) for k in CELL_KEYS]
        row += [int(bool(c.get("warn"))), [ix(r) for r in c.get("rules", [])], c.get("why", 0)]
        if c["id"] != _cell_id(c):
            row.append(c["id"])
        cells.append(row)
    rest = {k: v for k, v in d.items() if k not in ("cells", "causes")}
    return rest | {"packed": 1, "texts": list(texts), "causes": causes, "cells": cells}


def unpack(p: dict[str, Any]) -> dict[str, Any]:
    if not p.get("packed"):
        return p
    t = p["texts"]
    causes = [
        {
            "n": n,
            "cause": "; ".join(t[i] for i in c),
            "fix": "; ".join(t[i] for i in f),
            "evidence": [t[i] for i in e],
        }
        for n, c, f, e in p["causes"]
    ]
    cells = []
    for row in p["cells"]:
        c: dict[str, Any] = {k: t[i] for k, i in zip(CELL_KEYS, row, strict=False)}
        n = len(CELL_KEYS)
        c["warn"] = bool(row[n])
        c["rules"] = [t[i] for i in row[n + 1]]
        if row[n + 2]:
            c["why"] = row[n + 2]
        c = {"id": row[n + 3] if len(row) > n + 3 else _cell_id(c)} | c
        cells.append(c)
    rest = {k: v for k, v in p.items() if k not in ("cells", "causes", "texts", "packed")}
    return rest | {"causes": causes, "cells": cells}


def read(path: Path) -> dict[str, Any]:
    """A map's data (packed or not); {} when there is none."""
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return unpack(d) if isinstance(d, dict) and "cells" in d else {}


def compiled_cells(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compiled cells of a map (the committed one) as result-file verdicts by cell id,
    for ``mapping.run_map(earlier=...)``: a re-run that only predicts keeps them."""
    causes = {c["n"]: c for c in d.get("causes", [])}
    out = {}
    for c in d.get("cells", []):
        if c["depth"] == "preflight":
            continue
        why = causes.get(c.get("why", 0), {})
        out[c["id"]] = {
            "verdict": {
                "verdict": c["verdict"],
                "depth": c["depth"],
                "cause": why.get("cause", ""),
                "fix": why.get("fix", ""),
                "evidence": list(why.get("evidence", [])),
            }
        }
    return out


SLICE_LEGEND = (
    "✅ ❌ compiled (PASS, FAIL) · 🟢 🟡 🟥 predicted, nothing compiled (should build on "
    "its pin, should build off it, a rule says it cannot) · ⬜ skipped · ❔ not run; "
    "equal neighbouring releases merged."
)


def slice_md(d: dict[str, Any], arch: str, skip_all_failing: bool = True) -> str:
    """One arch's tables (e.g. "sm120"): marks without links, consecutive releases with the
    same row merged ("0.4.1 … 0.7.3"), tables where every cell fails left out (named in one
    line instead), the legend last."""
    out, dropped = [], []
    for key, cells in tables(d):
        if key[2] != arch:
            continue
        if skip_all_failing and all(
            c["verdict"] in (Verdict.PREDICTED_FAIL, Verdict.FAIL) for c in cells
        ):
            dropped.append(table_title(key))
            continue
        out += [f"**{table_title(key)}**", "", *_md_table(cells), ""]
    if dropped:
        out.append("Every cell fails in: " + "; ".join(dropped) + ".")
        out.append("")
    if not out:
        return ""
    out += [f"Legend: {SLICE_LEGEND}", ""]
    return "\n".join(out)
