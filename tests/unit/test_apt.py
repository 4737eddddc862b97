"""Fast tests of the private apt state (no network, no apt runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from toolkitfakes import touch

from vllm_matrix.infra import apt
from vllm_matrix.infra.errors import NotAvailable, SourceError


def test_debian_mirror_from_deb822_sources(tmp_path: Path) -> None:
    touch(
        tmp_path / "sources.list.d" / "debian.sources",
        "Types: deb\n"
        "# a comment\n"
        "URIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.invalid/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )
    src = apt.debian_mirror(tmp_path)
    assert src.uri == "http://mirror.invalid/debian"
    assert src.signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    text = apt.private_sources_list(src, "trixie")
    assert text == (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.invalid/debian trixie main contrib non-free\n"
    )


def test_debian_mirror_from_one_line_sources(tmp_path: Path) -> None:
    touch(
        tmp_path / "sources.list",
        "# deb http://old.invalid/debian buster main\n"
        "deb http://sec.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://one.invalid/debian bookworm main\n",
    )
    assert apt.debian_mirror(tmp_path) == apt.AptSource("http://one.invalid/debian", None)


def test_debian_mirror_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_MATRIX_DEBIAN_MIRROR", raising=False)
    with pytest.raises(NotAvailable) as exc:
        apt.debian_mirror(tmp_path)
    assert "VLLM_MATRIX_DEBIAN_MIRROR" in str(exc.value.fix)


def test_apt_options_confine_apt(tmp_path: Path) -> None:
    opts = apt.apt_options(tmp_path)
    pairs = dict(o.split("=", 1) for o in opts[1::2])
    assert pairs["Dir::Etc::sourceparts"] == "/dev/null"
    assert pairs["Dir::State::Lists"] == str(tmp_path / "lists")
    assert pairs["Dir::Cache"] == str(tmp_path / "cache")
    assert all(flag == "-o" for flag in opts[0::2])


def test_parse_apt_show() -> None:
    text = (
        "Package: libcudart12\nVersion: 12.4.127~12.4.1-2\nSize: 176216\n"
        "Filename: pool/non-free/n/nvidia-cuda-toolkit/libcudart12_12.4.127~12.4.1-2_amd64.deb\n"
        "SHA256: " + "ab" * 32 + "\nDescription: x\n\n"
        "Package: libcub-dev\nVersion: 2.3.2-2\nSize: 3\nFilename: pool/main/c/cub.deb\n"
        "SHA256: " + "cd" * 32 + "\n"
    )
    got = apt.parse_apt_show(text)
    assert got["libcudart12"].deb_name == "libcudart12_12.4.127~12.4.1-2_amd64.deb"
    assert got["libcudart12"].size == 176216 and got["libcub-dev"].sha256 == "cd" * 32


def _deb(tmp_path: Path, name: str, data: bytes) -> apt.DebPackage:
    import hashlib

    return apt.DebPackage(
        name, "1.0-1", f"pool/x/{name}_1.0-1_amd64.deb", hashlib.sha256(data).hexdigest(), len(data)
    )


def test_fetch_debs_reuses_good_and_refetches_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = _deb(tmp_path, "good", b"good"), _deb(tmp_path, "bad", b"bad!")
    downloads = tmp_path / "dl"
    touch(downloads / good.deb_name, "good")
    touch(downloads / bad.deb_name, "ba")  # truncated by an interrupted run
    fetched: list[list[str]] = []

    def fake_apt(args: list[str], apt_dir: Path, log: Path | None, cwd: Path | None = None) -> None:
        fetched.append(args)
        assert cwd is not None
        touch(cwd / "bad_1.0-1_amd64.deb", "bad!")

    monkeypatch.setattr(apt, "apt", fake_apt)
    paths = apt.fetch_debs([good, bad], tmp_path / "apt", downloads, None)
    assert fetched == [["apt-get", "download", "bad=1.0-1"]]
    assert [p.read_text() for p in paths] == ["good", "bad!"]
    assert sorted(p.name for p in downloads.iterdir()) == sorted([good.deb_name, bad.deb_name])


def test_fetch_debs_rejects_a_hash_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = _deb(tmp_path, "p", b"right")

    def fake_apt(args: list[str], apt_dir: Path, log: Path | None, cwd: Path | None = None) -> None:
        assert cwd is not None
        touch(cwd / "p_1.0-1_amd64.deb", "wrong")

    monkeypatch.setattr(apt, "apt", fake_apt)
    with pytest.raises(SourceError) as exc:
        apt.fetch_debs([pkg], tmp_path / "apt", tmp_path / "dl", None)
    assert "sha256" in exc.value.message and exc.value.fix
    assert not (tmp_path / "dl" / pkg.deb_name).exists()
