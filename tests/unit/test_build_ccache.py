"""The build's ccache settings: the remote storage (unit level; the real redis + nvcc run is
tests/integration/test_ccache_remote.py)."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vllm_matrix.commands.run import build_options
from vllm_matrix.infra import results
from vllm_matrix.infra.config import load_matrix
from vllm_matrix.infra.errors import ConfigError
from vllm_matrix.infra.results import PASS, WARN, Finding
from vllm_matrix.stages import compile as build
from vllm_matrix.stages.compile import ccache


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on return: nothing listens there


def test_env_beats_the_matrix_and_off_turns_it_off() -> None:
    m = "redis://matrix-cache:6379"
    assert build.remote_setting(m, {}) == m
    assert build.remote_setting(m, {ccache.REMOTE_ENV: ""}) == m
    assert build.remote_setting(m, {ccache.REMOTE_ENV: "http://h:8080/c"}) == "http://h:8080/c"
    assert build.remote_setting(m, {ccache.REMOTE_ENV: "off"}) is None
    assert build.remote_setting(None, {}) is None
    with pytest.raises(ConfigError) as e:
        build.remote_setting(m, {ccache.REMOTE_ENV: "localhost:6379"})
    assert ccache.REMOTE_ENV in e.value.message


def test_ccache_env_hands_the_remote_to_ccache(tmp_path: Path) -> None:
    local = ccache.ccache_env(tmp_path / "src", tmp_path / "cc")
    assert "CCACHE_REMOTE_STORAGE" not in local
    env = ccache.ccache_env(tmp_path / "src", tmp_path / "cc", "redis://127.0.0.1:6379")
    # the machines' compilers are different files: identified by content, not mtime
    assert env == local | {
        "CCACHE_REMOTE_STORAGE": "redis://127.0.0.1:6379",
        "CCACHE_COMPILERCHECK": "content",
    }


def test_with_a_remote_the_cache_root_is_the_base_dir(tmp_path: Path) -> None:
    src = tmp_path / "cache" / "builds" / "cell" / "src"
    r = "redis://h:1"
    assert ccache.ccache_env(src, tmp_path / "cc", r, tmp_path / "cache")["CCACHE_BASEDIR"] == str(
        tmp_path / "cache"
    )
    assert ccache.ccache_env(src, tmp_path / "cc", None, tmp_path / "cache")["CCACHE_BASEDIR"] == (
        str(src)
    )  # local only: as before
    elsewhere = tmp_path / "w" / "src"  # a work dir outside the cache root
    assert ccache.ccache_env(elsewhere, tmp_path / "cc", r, tmp_path / "cache")[
        "CCACHE_BASEDIR"
    ] == str(elsewhere)


def test_redact() -> None:
    assert ccache.redact("redis://:s3cret@h:6379") == "redis://:***@h:6379"
    assert ccache.redact("http://u:p@h/c|layout=flat") == "http://u:***@h/c|layout=flat"
    assert ccache.redact("redis://h:6379") == "redis://h:6379"


def test_remote_problem(listening: int, closed_port: int, tmp_path: Path) -> None:
    assert ccache.remote_problem(f"redis://127.0.0.1:{listening}") is None
    assert ccache.remote_problem(f"http://127.0.0.1:{listening}/cache|layout=bazel") is None
    assert ccache.remote_problem(f"redis://:pw@127.0.0.1:{listening}/0") is None
    why = ccache.remote_problem(f"redis://127.0.0.1:{closed_port}", timeout=1)
    assert why is not None and f"127.0.0.1:{closed_port}" in why
    assert ccache.remote_problem(f"file://{tmp_path}") is None
    assert ccache.remote_problem(f"file://{tmp_path}/none") is not None
    assert ccache.remote_problem(f"redis+unix://{tmp_path}/sock") is not None


def test_an_unreachable_remote_is_dropped_with_one_warning(
    listening: int, closed_port: int
) -> None:
    good, bad = f"redis://127.0.0.1:{listening}", f"redis://:pw@127.0.0.1:{closed_port}"
    r = ccache.ccache_remote(f"{good} {bad}", timeout=1)
    assert r.url == good and r.warning is not None
    assert "local cache only" in r.warning and ":***@" in r.warning and "pw" not in r.warning
    said: list[str] = []
    findings: list[Finding] = []
    r = ccache.ccache_remote_checked(bad, said.append, findings)
    assert r.url is None
    assert len(said) == 1 and said[0].startswith("warning: ccache remote storage unreachable")
    assert [f.level for f in findings] == ["warn"] and ccache.REMOTE_ENV in findings[0].fix
    assert ccache.ccache_remote(None) == ccache.RemoteCache(None, None, None)


def test_run_takes_the_matrix_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "matrix.toml"
    p.write_text(
        '[ccache]\nremote = "redis://cache:6379"\n'
        '[[cell]]\nvllm = "0.8.5"\ntorch = "2.6.0"\ncuda = "12.4"\nprovider = "debian"\n'
        'python = "3.12"\narch = ["9.0"]\n'
    )
    monkeypatch.delenv(ccache.REMOTE_ENV, raising=False)
    args = argparse.Namespace()
    assert build_options(args, load_matrix(p)).ccache_remote == "redis://cache:6379"
    monkeypatch.setenv(ccache.REMOTE_ENV, "off")
    assert build_options(args, load_matrix(p)).ccache_remote is None


def _stack_with_ccache(tmp_path: Path) -> tuple[Any, ...]:
    from test_build_stage import fake_stack  # the stand-in pip of test_build_stage.py

    cell, tree, tk, tv, fx = fake_stack(tmp_path, "ok")
    fake_ccache = tv.python_exe.parent / "ccache"
    fake_ccache.write_text("#!/bin/sh\nprintf 'cache_miss\\t4\\nremote_storage_hit\\t0\\n'\n")
    fake_ccache.chmod(0o755)
    return cell, tree, tk, tv, fx


def test_build_wheel_hands_a_reachable_remote_to_ccache(tmp_path: Path, listening: int) -> None:
    cell, tree, tk, tv, fx = _stack_with_ccache(tmp_path)
    url = f"redis://:pw@127.0.0.1:{listening}"
    said: list[str] = []
    r = build.build_wheel(
        cell, tree, tk, tv, fx, tmp_path / "w", tmp_path / "d", series=(),
        ccache_dir=tmp_path / "cc", ccache_remote=url, progress=said.append,
    )  # fmt: skip
    assert r.status == PASS, r
    assert r.details["env"]["CCACHE_REMOTE_STORAGE"] == f"redis://:***@127.0.0.1:{listening}"
    assert r.details["ccache"]["remote"] == r.details["env"]["CCACHE_REMOTE_STORAGE"]
    assert "remote_storage_hit" in r.details["ccache"]["delta"]
    assert not [s for s in said if s.startswith("warning")]


def test_build_wheel_with_an_unreachable_remote_builds_locally(
    tmp_path: Path, closed_port: int
) -> None:
    cell, tree, tk, tv, fx = _stack_with_ccache(tmp_path)
    said: list[str] = []
    r = build.build_wheel(
        cell, tree, tk, tv, fx, tmp_path / "w", tmp_path / "d", series=(),
        ccache_dir=tmp_path / "cc", ccache_remote=f"redis://127.0.0.1:{closed_port}",
        progress=said.append,
    )  # fmt: skip
    assert r.status == WARN and results.verdict_of([r]).verdict == "PASS"
    assert "CCACHE_REMOTE_STORAGE" not in r.details["env"]
    assert r.details["ccache"]["remote"] is None
    assert len([s for s in said if s.startswith("warning")]) == 1
    assert [f.rule for f in r.findings if f.level == "warn"] == ["ccache-remote"]
