from __future__ import annotations

from pathlib import Path

from vllm_matrix import readme


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


def test_blackwell_section_is_regenerated_between_markers(tmp_path: Path) -> None:
    doc = {
        "generated": "T",
        "cells": [
            row("a-sm120", "12.0", "PREDICTED-FAIL", "preflight", "nvcc 12.4 cannot"),
            row("b-sm120", "12.0f", "PREFLIGHT-OK", "env"),
            row("c-sm90", "9.0", "PASS", "probe"),
        ],
    }
    p = tmp_path / "README.md"
    p.write_text(
        "intro\n<!-- BEGIN generated:blackwell -->\nold\n<!-- END generated:blackwell -->\nafter\n"
    )
    assert readme.update(p, doc)
    text = p.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "`a-sm120`" in text and "`c-sm90`" not in text
    assert "**Recommended:** vLLM 0.20.0" in text and "`b-sm120`" in text
    assert "(evidence: src) — https://x" in text
    assert not readme.update(tmp_path / "none.md", doc)
