"""The kernel gates and source facts of every committed release (knowledge/data/vllm_pins.toml:
0.4.1 … 0.34.0), read by the CMake evaluator (cmake/survey.py), against the answers of the
readers it replaced: a regex over a 12-line window (gates) and facts' own if/else tracker and
``${VAR}`` resolver. cmake_answers.toml holds those answers, one digest of the canonical JSON
per release, recorded with the old readers (commit aea6b39) over the cached sdists; where
the evaluator reads a release better, the file says which line and why."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path

import pytest
from conftest import skip_or_fail

from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.knowledge import pins
from vllm_matrix.stages import gates, source
from vllm_matrix.stages.facts import read_facts

pytestmark = [pytest.mark.integration]

ANSWERS = tomllib.loads((Path(__file__).parent / "cmake_answers.toml").read_text())["answers"]


def canonical(facts: dict[str, object], found: list[dict[str, object]]) -> str:
    """The answers as the digests were made: facts and gates as dataclasses.asdict gives
    them, in JSON with sorted keys."""
    return json.dumps({"facts": facts, "gates": found}, sort_keys=True, separators=(",", ":"))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_every_pinned_release_has_recorded_answers() -> None:
    versions = pins.releases()
    assert len(versions) >= 76 and versions[0] == "0.4.1" and "0.34.0" in versions
    assert sorted(set(versions) - set(ANSWERS)) == [], "record their answers in cmake_answers.toml"


@pytest.mark.parametrize("version", pins.releases())
def test_the_evaluator_gives_the_recorded_answers(version: str) -> None:
    try:
        tree = source.sdist_tree(version)
    except (MatrixError, OSError) as exc:
        skip_or_fail(f"vLLM {version}'s sdist is neither cached nor downloadable: {exc}")
    facts = read_facts(tree.root, tree.version)
    found = gates.gates(tree.root)
    text = canonical(
        json.loads(json.dumps(dataclasses.asdict(facts))),
        json.loads(json.dumps([dataclasses.asdict(g) for g in found])),
    )
    if digest(text) != ANSWERS.get(version):
        shown = "\n".join(
            [f"gate {g.where} {g.var} {';'.join(g.archs)} {g.needs()}" for g in found]
            + [f"arch rule {r}" for r in facts.cuda_archs]
            + [f"external {e}" for e in facts.external]
        )
        pytest.fail(f"vLLM {version}: the CMake answers changed; check them in its CMake:\n{shown}")
