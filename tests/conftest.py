from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import socket
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

# The suite judges the releases of the committed knowledge/data/vllm_pins.toml, never "what
# the index holds today": a release published upstream must not turn it red (that is
# `nox -s currency`'s job). Set before any test imports the package; forced, not defaulted.
os.environ["VLLM_MATRIX_RELEASES"] = "pinned"

# The stage order that results, classify and the report read is PLAN's, registered when
# pipeline/plan.py is imported: every entry point imports it (the CLI does), so do the tests.
import vllm_matrix.pipeline.plan  # noqa: F401


def in_ci() -> bool:
    """The one reading of ``CI`` (.ci/run sets CI=true; GitHub and GitLab set it too)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(why: str, *, machine: bool = False) -> NoReturn:
    """The one way a test does not run: every skip in tests/ goes through here.

    Something the test needs is missing: it skips -- but with CI=true it fails, since a
    missing index, tool or package there is the setup's defect, not something to pass
    silently. ``machine=True``: what this kind of machine genuinely has or lacks (a GPU, a
    local git mirror, a system CUDA, an index only some sites configure) skips in CI too.
    """
    if in_ci() and not machine:
        pytest.fail(f"CI=true: {why} (a missing index or tool fails in CI instead of skipping)")
    pytest.skip(why, allow_module_level=True)  # a module that needs a package skips whole


def need_program(name: str, package: str) -> None:
    if shutil.which(name) is None:
        skip_or_fail(f"{name} not installed (Debian package {package})")


def need_module(name: str, why: str, *, machine: bool = False) -> ModuleType:
    """``import name``, or skip_or_fail saying why the test needs it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_or_fail(f"{name} is not installed ({why}): {exc}", machine=machine)


@cache
def index_reachable() -> str | None:
    """None if the package index answers, else why not (integration tests skip on it)."""
    from vllm_matrix.infra import index

    try:
        url = index.index_url()
        host = url.split("/")[2].split(":")[0]
        socket.getaddrinfo(host, 443)
        index.project_files("vllm")
    except Exception as exc:  # any failure means: cannot test against the real index here
        return f"package index not reachable: {exc}"
    return None


@pytest.fixture
def need_index() -> None:
    why = index_reachable()
    if why:
        skip_or_fail(why)


@pytest.fixture(autouse=True)
def offline_advice(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests only: the one advice (pipeline/advice.py) walks real releases' facts; a
    unit test that reaches it through a predicted failure (the preflight stage stores the
    advice) gets an adviser that reads none, so no unit test downloads a vLLM sdist.
    test_advice.py gives it fixture releases; integration tests get the real one."""
    if "unit" not in Path(str(request.node.path)).parts:
        return
    from vllm_matrix.infra.errors import SourceError
    from vllm_matrix.pipeline import advice

    def no_release(version: str) -> object:
        raise SourceError(f"unit tests read no release from the index (vLLM {version})")

    real = advice.adviser_for

    def offline(*a: object, **k: object) -> advice.Adviser:
        adv = real(*a, **k)  # type: ignore[arg-type]
        adv.facts = no_release
        return adv

    monkeypatch.setattr(advice, "adviser_for", offline)


_CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def tracked_reports_untouched() -> Iterator[None]:
    """No test writes the checkout's reports/ (a query never writes a tracked file; a test
    that runs `run` on the shipped matrix.toml rendered them once): their mtimes and sizes
    after the session are what they were before it."""

    def stamps() -> dict[str, tuple[int, int]]:
        out = {}
        for p in sorted((_CHECKOUT / "reports").rglob("*")):
            if p.is_file() and "logs" not in p.parts:
                st = p.stat()
                out[str(p.relative_to(_CHECKOUT))] = (st.st_mtime_ns, st.st_size)
        return out

    before = stamps()
    yield
    changed = sorted(k for k, v in stamps().items() if before.get(k) not in (None, v))
    assert not changed, f"tests rewrote tracked reports: {changed[:5]}"
