from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from vllm_matrix.infra import cache
from vllm_matrix.infra.errors import ToolError


def _tar(tmp: Path, members: dict[str, bytes], link: tuple[str, str] | None = None) -> Path:
    path = tmp / "a.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(info)
    return path


@pytest.fixture(params=["data_filter", "by_hand"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    # by_hand: a Python before 3.11.4 (Debian 12's 3.11.2) has no tarfile.data_filter
    if request.param == "by_hand":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


def test_extract_tar_unpacks_inside(tmp_path: Path, mode: str) -> None:
    src = _tar(tmp_path, {"pkg/a.txt": b"a", "pkg/sub/b.txt": b"b"}, ("pkg/l", "a.txt"))
    with tarfile.open(src) as tf:
        cache.extract_tar(tf, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "sub" / "b.txt").read_bytes() == b"b"
    assert (tmp_path / "out" / "pkg" / "l").is_symlink()


@pytest.mark.parametrize(
    ("members", "link"),
    [({"../evil.txt": b"x"}, None), ({"ok.txt": b"x"}, ("l", "../../etc/passwd"))],
)
def test_extract_tar_refuses_what_leaves_dest(
    tmp_path: Path, mode: str, members: dict[str, bytes], link: tuple[str, str] | None
) -> None:
    src = _tar(tmp_path, members, link)
    with tarfile.open(src) as tf, pytest.raises((ToolError, tarfile.TarError)):
        cache.extract_tar(tf, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_atomic_writes_get_the_mode_open_would_give(tmp_path: Path) -> None:
    import os
    import stat

    from vllm_matrix.infra.cache import atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    p = tmp_path / "r.md"
    atomic_write_text(p, "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask  # 0644 under umask 022, not 0600
    p.chmod(0o755)  # a file replaced keeps its mode
    atomic_write_text(p, "y")
    assert stat.S_IMODE(p.stat().st_mode) == 0o755 and p.read_text() == "y"
