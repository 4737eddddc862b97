"""pins.releases(): the release list read from the index, cached with a TTL, the last list
seen when the index does not answer, the committed pins file when none was ever seen; and
sources.releases.pinned(): a release the pins file lacks gets its pin from its sdist."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from vllm_matrix.commands import newest
from vllm_matrix.infra import index
from vllm_matrix.infra.errors import ConfigError, SourceError
from vllm_matrix.knowledge import pins
from vllm_matrix.sources import releases

URL = "https://index.invalid/simple"


def sdist(v: str, kind: str = "sdist") -> index.IndexFile:
    name = f"vllm-{v}.tar.gz" if kind == "sdist" else f"vllm-{v}-cp38-abi3-linux_x86_64.whl"
    return index.IndexFile(name, f"{URL}/{name}", "0" * 64, Version(v), kind, False)


class FakeIndex:
    def __init__(self, versions: list[str]) -> None:
        self.files = [sdist(v) for v in versions]
        self.calls = 0
        self.down = False

    def __call__(self, project: str, base: str | None = None) -> tuple[index.IndexFile, ...]:
        assert project == "vllm"
        self.calls += 1
        if self.down:
            raise SourceError("cannot reach the package index", fix="check the network")
        return tuple(self.files)


@pytest.fixture
def idx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeIndex]:
    fake = FakeIndex(["0.3.3", "0.4.1", "0.33.0", "0.34.0", "0.35.0rc1"])
    fake.files.append(sdist("0.36.0", "wheel"))  # wheels only: not a release with an sdist
    monkeypatch.setenv("VLLM_MATRIX_RELEASES", "index")
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path))
    monkeypatch.setattr(index, "project_files", fake)
    monkeypatch.setattr(index, "index_url", lambda: URL)
    pins.clear()
    yield fake
    pins.clear()


def test_the_index_lists_final_sdists_from_the_first_cmake_release(idx: FakeIndex) -> None:
    got = pins.release_list()
    assert got.versions == ("0.4.1", "0.33.0", "0.34.0") and got.origin == "index"
    assert got.index == URL
    assert newest.releases() == ["0.34.0", "0.33.0", "0.4.1"]  # the newest-first view


def test_cached_within_the_ttl_and_asked_again_after_it(
    idx: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins.releases()
    pins.clear()
    idx.files.append(sdist("0.35.0"))
    assert pins.releases()[-1] == "0.34.0" and idx.calls == 1  # fresh cache: no request
    assert pins.release_list().origin.startswith("index (cached")
    assert pins.releases(refresh=True)[-1] == "0.35.0" and idx.calls == 2
    pins.clear()
    idx.files.append(sdist("0.36.0"))
    monkeypatch.setenv("VLLM_MATRIX_RELEASES_TTL", "0")
    assert pins.releases()[-1] == "0.36.0" and idx.calls == 3


def test_offline_falls_back_to_the_last_list_seen(idx: FakeIndex, tmp_path: Path) -> None:
    pins.releases()
    pins.clear()
    idx.down = True
    path = next((tmp_path / "index").glob("vllm-releases-*.json"))
    d = json.loads(path.read_text())
    path.write_text(json.dumps(d | {"fetched": time.time() - 10 * 86400}))  # stale
    got = pins.release_list()
    assert got.versions == ("0.4.1", "0.33.0", "0.34.0")
    assert got.origin.startswith("last list seen") and "did not answer" in got.origin
    pins.clear()
    assert pins.release_list(offline=True).origin.startswith("last list seen")


def test_never_seen_and_offline_is_the_committed_pins_file(idx: FakeIndex) -> None:
    idx.down = True
    got = pins.release_list()
    assert got.index is None and got.origin.startswith("vllm_pins.toml")
    assert set(got.versions) == set(pins.load()) and "0.4.1" in got.versions


def test_a_damaged_cached_list_is_as_if_never_seen(idx: FakeIndex, tmp_path: Path) -> None:
    pins.releases()
    pins.clear()
    next((tmp_path / "index").glob("vllm-releases-*.json")).write_text('{"versions": [1]}')
    idx.down = True
    assert pins.release_list().origin.startswith("vllm_pins.toml")


def test_pinned_mode_never_asks_the_index(idx: FakeIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_MATRIX_RELEASES", "pinned")
    assert pins.releases() == sorted(pins.load(), key=Version) and idx.calls == 0
    monkeypatch.setenv("VLLM_MATRIX_RELEASES", "frozen")
    with pytest.raises(ConfigError, match="not one of index, pinned"):
        pins.releases()


def test_a_release_the_pins_file_lacks_gets_its_pin_from_its_sdist(
    idx: FakeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx.files.append(sdist("99.0.0"))
    read: list[str] = []

    def from_sdist(v: str) -> str | None:
        read.append(v)
        return "2.99.0" if v == "99.0.0" else None

    monkeypatch.setattr(releases, "pin_from_sdist", from_sdist)
    got = releases.pinned()
    assert got["99.0.0"] == "2.99.0" and got["0.4.1"] == pins.load()["0.4.1"]
    assert "0.4.1" not in read  # the committed pins are not read again
