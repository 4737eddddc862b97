"""The kernel gates and source facts of every committed release (knowledge/data/vllm_pins.toml:
0.4.1 … 0.34.0), read by the CMake evaluator (cmake/survey.py), against the answers of the
readers it replaced: a regex over a 12-line window (gates) and facts' own if/else tracker and
``${VAR}`` resolver. cmake_answers.toml holds those answers, one digest of the canonical JSON
per release, recorded with the old readers (commit aea6b39) over the cached sdists; where
the evaluator reads a release better, the file says which line and why. And on a spread of
releases: preflight's gates against what the probe's evaluation of a cell compiles."""

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
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages.facts import read_facts
from vllm_matrix.stages.preflight import gates
from vllm_matrix.stages.probe.configure import build_model

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


SPREAD = ["0.6.4", "0.8.3", "0.9.1", "0.11.0", "0.14.1", "0.19.0", "0.26.0", "0.34.0"]


@pytest.mark.parametrize("version", SPREAD)
def test_preflight_and_probe_agree_on_every_gate(version: str) -> None:
    """What preflight says of a gate ("built"/"NOT built with nvcc X", where the tree's arch
    rule for that nvcc lists the arch at all) is what the probe's evaluation of the cell
    (build_model) compiles: a family of the gate's variable holding its sources, for sm_120
    and sm_90 and the nvcc releases around the gates' floors."""
    try:
        tree = source.sdist_tree(version)
    except (MatrixError, OSError) as exc:
        skip_or_fail(f"vLLM {version}'s sdist is neither cached nor downloadable: {exc}")
    found = gates.gates(tree.root)
    facts = read_facts(tree.root, tree.version)
    checked = 0
    for arch in ("12.0", "9.0"):
        for nvcc in ("12.0", "12.4", "12.8", "12.9", "13.0"):
            listed = arch in facts.archs_for(nvcc)
            model = build_model(tree.root, f"{nvcc}.1", (arch,))
            for g in gates.for_arch(found, arch):
                compiled = any(
                    f.arch_var == g.var and set(g.sources) <= set(f.sources) for f in model.families
                )
                assert compiled == (listed and g.built_with(nvcc)), (arch, nvcc, g)
                checked += 1
    assert checked, f"vLLM {version} has gates for sm_120 or sm_90"
