"""`nox -l` is the list a newcomer reads: whole sentences, the developers' sessions apart."""

from __future__ import annotations

import runpy
from pathlib import Path

import nox.registry
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_each_session_says_what_it_does_in_one_whole_sentence() -> None:
    runpy.run_path(str(ROOT / "noxfile.py"))
    sessions = nox.registry.get()
    assert {"matrix", "map", "report", "tests", "newest", "build"} <= set(sessions)
    seen_dev = False
    for name, fn in sessions.items():
        first = (fn.__doc__ or "").strip().splitlines()[0]
        assert first.endswith(".") and first[0].isupper(), name  # nox shows this line only
        assert len(f"- {name} -> {first}") <= 110, name
        dev = name.startswith(("bench-", "device-"))
        assert dev == ("(developers)" in first), name
        # the user's sessions are listed before the developers' ones
        assert not (seen_dev and not dev), f"{name} is listed after a developers' session"
        seen_dev |= dev


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    from vllm_matrix import __version__, cli

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert __version__ == meta["version"]
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"vllm-matrix {meta['version']}\n"
