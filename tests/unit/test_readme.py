from __future__ import annotations

from pathlib import Path

from vllm_matrix.report import readme


def row(cid: str, arch: str, verdict: str, depth: str, cause: str = "") -> dict[str, object]:
    return {
        "id": cid,
        "cell": {
            "vllm": "0.20.0",
            "torch": "2.11.0",
            "cuda": "13.0",
            "provider": "pypi",
            "python": "3.12",
            "arch": [arch],
        },
        "verdict": verdict,
        "depth": depth,
        "cause": cause,
        "findings": [
            {
                "rule": "nvcc-arch",
                "level": "fail",
                "message": "nvcc 12.4 cannot",
                "evidence": ["src"],
                "source": "https://x",
            }
        ],
    }


def test_the_blackwell_page_is_rendered_from_the_report_not_into_the_readme() -> None:
    doc = {
        "generated": "T",
        "cells": [
            row("a-sm120", "12.0", "PREDICTED-FAIL", "preflight", "nvcc 12.4 cannot"),
            row("b-sm120", "12.0f", "PREFLIGHT-OK", "env"),
            row("c-sm90", "9.0", "PASS", "probe"),
        ],
    }
    text = readme.render_md(doc)
    assert text.startswith("# Blackwell (sm_120)")
    assert "`a-sm120`" in text and "`c-sm90`" not in text
    assert "**Recommended:** vLLM 0.20.0" in text and "`b-sm120`" in text
    assert "(evidence: src) — https://x" in text
    # the README links the page and holds no generated section
    root = Path(__file__).resolve().parents[2]
    assert "generated:blackwell" not in (root / "README.md").read_text()
    assert "reports/blackwell.md" in (root / "README.md").read_text()


def test_a_run_elsewhere_that_targets_sm120_is_named_with_its_machine() -> None:
    other = row("d-sm120-current", "12.0", "PASS", "probe") | {
        "machine": {"gpu": "NVIDIA H200"},
        "stages": [{"stage": "probe", "summary": "12 units, all passed"}],
    }
    doc = {"generated": "T", "cells": [row("b-sm120", "12.0", "PREFLIGHT-OK", "env")]}
    text = readme.blackwell(doc | {"other_runs": [other]})
    assert "**Run on another machine (NVIDIA H200, its own torch 2.11.0 and CUDA 13.0):**" in text
    assert "`d-sm120-current` — PASS at probe: 12 units, all passed." in text
    assert "Probed on another" not in readme.blackwell(doc)


def _readme_commands() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [
        ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]


def test_readme_starts_with_the_main_job_and_the_test_command() -> None:
    main, tests = _readme_commands()[:2]
    assert main.endswith("nox -s matrix") and tests.endswith("nox -s tests")


def test_ci_runs_the_readme_test_command_in_a_clean_venv() -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()
    # the way a new machine would: its own venv, a clean PATH, CI=true, its own cache
    assert "-m venv" in ci and 'export PATH="$work/venv/bin:' in ci
    assert "CI=true" in ci and "VLLM_MATRIX_CACHE=" in ci


def test_the_readme_is_read_in_five_minutes_and_its_links_resolve() -> None:
    import re

    root = Path(__file__).resolve().parents[2]
    readme_text = (root / "README.md").read_text()
    assert len(readme_text.splitlines()) <= 250
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_the_deepest_passing_cell_is_recommended_in_plan_order() -> None:
    """Deeper first by PLAN's order, whatever the depth's qualifier says."""
    cells = [
        row("p-sm120", "12.0", "PASS", "probe"),
        row("m-sm120", "12.0", "PASS", "model (partial: targets _C, _C_stable_libtorch)"),
        row("b-sm120", "12.0", "PASS", "build (partial: targets _C)"),
        row("n-sm120", "12.0", "PASS", "none"),
    ]
    text = readme.blackwell({"generated": "T", "cells": cells})
    assert "`m-sm120`, PASS at model (partial" in text
    ranked = sorted(cells, key=lambda c: readme._deeper_first(str(c["depth"])))
    assert [c["id"] for c in ranked] == ["m-sm120", "b-sm120", "p-sm120", "n-sm120"]
