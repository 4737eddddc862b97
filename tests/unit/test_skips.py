"""The one CI-aware skip helper (tests/conftest.py): every skip goes through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _pytest.outcomes import Failed, Skipped
from conftest import skip_or_fail

TESTS = Path(__file__).resolve().parents[1]
# A skip or a reading of CI anywhere but conftest.py would be a second rule.
OTHER_SKIP = re.compile(r"pytest\.skip\(|importorskip|mark\.skipif|environ\.get\(\"CI\"|\"CI\"\)")


@pytest.mark.parametrize(
    ("ci", "machine", "outcome"),
    [
        (None, False, Skipped),
        ("true", False, Failed),
        ("1", False, Failed),
        ("false", False, Skipped),
        ("true", True, Skipped),  # what this kind of machine lacks skips in CI too
    ],
)
def test_skip_or_fail_reads_ci_once(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, machine: bool, outcome: type[BaseException]
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no widget"):
        skip_or_fail("no widget", machine=machine)


def test_every_skip_goes_through_the_helper() -> None:
    found = [
        f"{p.relative_to(TESTS)}:{n}"
        for p in sorted(TESTS.rglob("*.py"))
        if p.name != "conftest.py" and p != Path(__file__).resolve()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if OTHER_SKIP.search(line)
    ]
    assert found == []
