"""File moves shared by the assembling providers (and wheels' unpacking)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from pathlib import Path

from vllm_matrix.infra.errors import SourceError


def move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and dst.is_dir() and not dst.is_symlink() and src.is_dir():
        for child in src.iterdir():
            move(child, dst / child.name)
        src.rmdir()
    else:
        os.replace(src, dst)


def unzip_wheel(wheel: Path, dest: Path) -> None:
    """Unpack a wheel keeping the executable bits (zipfile alone drops them)."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            if not target.resolve().is_relative_to(dest.resolve()):
                raise SourceError(
                    f"{wheel.name}: member {info.filename} escapes the target dir",
                    fix="delete the wheel from the cache's downloads dir and retry",
                )
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode | stat.S_IRUSR | stat.S_IWUSR)


def add_dev_symlinks(lib: Path) -> list[str]:
    """libX.so -> libX.so.N where only the versioned file exists (wheels carry no links)."""
    added = []
    for f in sorted(lib.glob("lib*.so.*")):
        m = re.match(r"^(lib.+\.so)\.\d+$", f.name)
        if m and not (lib / m.group(1)).exists() and not (lib / m.group(1)).is_symlink():
            (lib / m.group(1)).symlink_to(f.name)
            added.append(f"{m.group(1)} -> {f.name}")
    return added


def remove_dangling_symlinks(root: Path) -> list[str]:
    removed = []
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            p = Path(dirpath) / name
            if p.is_symlink() and not p.exists():
                removed.append(str(p.relative_to(root)))
                p.unlink()
    return sorted(removed)
