"""The wheel's version label: ``<public>+cu124torch2.3`` in its file name, dist-info and
METADATA, and dist/ kept free of half-written wheels."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from vllm_matrix.infra import cache
from vllm_matrix.stages.compile.errors import BuildError


def local_label(cuda: str, torch_version: str) -> str:
    """``cu124torch2.3`` for CUDA 12.4 and torch 2.3.0+cu121."""
    t = Version(torch_version)
    return f"cu{cuda.replace('.', '')}torch{t.major}.{t.minor}"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


@dataclass(frozen=True)
class WheelName:
    name: str  # as in the file name (escaped)
    version: str
    build: str | None
    tags: str  # python-abi-platform

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        if not filename.endswith(".whl"):
            raise ValueError(f"not a wheel: {filename}")
        parts = filename[:-4].split("-")
        if len(parts) == 5:
            return cls(parts[0], parts[1], None, "-".join(parts[2:]))
        if len(parts) == 6:
            return cls(parts[0], parts[1], parts[2], "-".join(parts[3:]))
        raise ValueError(f"not a wheel file name: {filename}")

    def filename(self) -> str:
        build = f"-{self.build}" if self.build else ""
        return f"{self.name}-{self.version}{build}-{self.tags}.whl"


def relabel_wheel(wheel: Path, label: str, dest_dir: Path) -> Path:
    """Write ``wheel`` into ``dest_dir`` with version ``<public>+<label>``.

    The file name, the ``.dist-info`` (and ``.data``) directory names and METADATA's
    Version change together; RECORD is regenerated for the new names (signatures, which
    the change invalidates, are dropped). Written to a hidden temp name in ``dest_dir``
    and renamed, so ``dest_dir`` holds the old wheel or the new one, never a part.
    """
    wn = WheelName.parse(wheel.name)
    try:
        public = Version(wn.version).public
        new_version = str(Version(f"{public}+{label}"))
    except InvalidVersion as exc:
        raise BuildError(
            f"cannot label version {wn.version!r} with {label!r}: {exc}",
            fix="check the wheel's version and the local label",
        ) from exc
    old_prefixes = (f"{wn.name}-{wn.version}.dist-info/", f"{wn.name}-{wn.version}.data/")
    new_prefixes = (f"{wn.name}-{new_version}.dist-info/", f"{wn.name}-{new_version}.data/")
    new_info = new_prefixes[0]

    def rename(member: str) -> str:
        for old, new in zip(old_prefixes, new_prefixes, strict=True):
            if member.startswith(old):
                return new + member[len(old) :]
        return member

    out_name = WheelName(wn.name, new_version, wn.build, wn.tags).filename()
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / out_name
    tmp = dest_dir / f".{out_name}.{os.getpid()}.partial"
    try:
        with zipfile.ZipFile(wheel) as zin:
            infos = zin.infolist()
            if not any(i.filename == old_prefixes[0] + "METADATA" for i in infos):
                raise BuildError(
                    f"{wheel.name}: no {old_prefixes[0]}METADATA",
                    fix="the wheel does not follow the wheel spec; rebuild it",
                )
            skip = {old_prefixes[0] + n for n in ("RECORD", "RECORD.jws", "RECORD.p7s")}
            members = [i for i in infos if i.filename not in skip and not i.is_dir()]
            # dist-info last (the spec's recommendation), RECORD at the very end.
            members.sort(key=lambda i: i.filename.startswith(old_prefixes[0]))
            rows: list[list[str]] = []
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zout:
                for info in members:
                    data = zin.read(info)
                    name = rename(info.filename)
                    if name == new_info + "METADATA":
                        data = _set_metadata_version(data, new_version)
                    zi = zipfile.ZipInfo(name, date_time=info.date_time)
                    zi.external_attr = info.external_attr
                    zi.compress_type = zipfile.ZIP_DEFLATED
                    zout.writestr(zi, data)
                    rows.append([name, _record_hash(data), str(len(data))])
                rows.append([new_info + "RECORD", "", ""])
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(rows)
                zi = zipfile.ZipInfo(new_info + "RECORD", date_time=time.localtime()[:6])
                zi.external_attr = 0o644 << 16
                zi.compress_type = zipfile.ZIP_DEFLATED
                zout.writestr(zi, buf.getvalue())
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _set_metadata_version(data: bytes, version: str) -> bytes:
    text = data.decode("utf-8")
    head, sep, body = text.partition("\n\n")
    new_head, n = re.subn(r"(?m)^Version: .*$", f"Version: {version}", head, count=1)
    if n != 1:
        raise BuildError("METADATA has no Version header", fix="rebuild the wheel")
    return (new_head + sep + body).encode("utf-8")


def _clear_partials(dist: Path) -> list[str]:
    """Temp wheels a killed run left in dist/ (their pid is gone)."""
    removed = []
    for p in dist.glob(".*.partial"):
        m = re.search(r"\.(\d+)\.partial$", p.name)
        if m and cache.pid_alive(int(m.group(1))):
            continue
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed
