"""A real headless Chromium for rendering reports/map.html, without installing anything.

Debian's ``chromium-headless-shell`` and the libraries it needs that this system lacks
are fetched with ``apt-get download`` (the system's configured sources, read-only) and
unpacked with ``dpkg -x`` into the project cache, as the debian toolkit does for CUDA; the
binary runs with LD_LIBRARY_PATH pointing there. Nothing outside the cache is written.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import zlib
from pathlib import Path

from vllm_matrix.infra import proc
from vllm_matrix.infra.cache import cache_root, locked, staging_dir
from vllm_matrix.infra.errors import NotAvailable

PACKAGE = "chromium-headless-shell"
MARKER = ".vllm-matrix-complete"
# Dependencies of the package's maintainer scripts, never of the binary.
SKIP = re.compile(r"^(cdebconf|install-info|lsb-base|xdg-utils|debconf.*|libdebian-installer.*)$")


def _need_tools() -> None:
    for tool, pkg in (("apt-get", "apt"), ("apt-cache", "apt"), ("dpkg", "dpkg")):
        if shutil.which(tool) is None:
            raise NotAvailable(
                f"{tool} not found: fetching Debian's {PACKAGE} needs it",
                fix=f"run on Debian/Ubuntu (package {pkg}), or set VLLM_MATRIX_CHROMIUM to a "
                "chromium binary",
            )


def _installed(names: list[str]) -> set[str]:
    if not names:
        return set()
    r = proc.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Status}\n", *names], check=False, timeout=120
    )
    return {
        line.split()[0] for line in r.output.splitlines() if line.endswith("install ok installed")
    }


_DEP = re.compile(r"^(\|?)(?:Pre)?Depends:\s*(\S+)")


def _depends(pkg: str) -> list[str]:
    """The first alternative of each Depends group of ``pkg`` (apt-cache marks every
    alternative but a group's last with a leading '|')."""
    r = proc.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", pkg], timeout=120)
    out, in_group = [], False
    for line in r.output.splitlines():
        m = _DEP.match(line.strip())
        if not m:
            continue
        name = m.group(2)
        if not in_group and not name.startswith("<"):
            out.append(name.split(":")[0])
        in_group = bool(m.group(1))
    return out


def closure(root_pkg: str = PACKAGE) -> list[str]:
    """``root_pkg`` and every dependency this system does not have installed."""
    seen: set[str] = set()
    todo, missing = [root_pkg], []
    while todo:
        batch = [p for p in dict.fromkeys(todo) if p not in seen]
        todo = []
        seen.update(batch)
        have = _installed(batch)
        for p in batch:
            if p in have or SKIP.match(p):
                continue
            missing.append(p)
            todo += _depends(p)
    return missing


def _version(pkg: str) -> str:
    r = proc.run(["apt-cache", "policy", pkg], timeout=120)
    m = re.search(r"Candidate:\s*(\S+)", r.output)
    if not m or m.group(1) == "(none)":
        raise NotAvailable(
            f"no {pkg} in this system's apt sources",
            fix=f"add a Debian source that has {pkg} (bookworm and newer), or set "
            "VLLM_MATRIX_CHROMIUM to a chromium binary",
        )
    return m.group(1)


def headless_shell(log: Path | None = None) -> Path:
    """The chromium-headless-shell binary, fetched once into the cache."""
    explicit = os.environ.get("VLLM_MATRIX_CHROMIUM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise NotAvailable(
                f"VLLM_MATRIX_CHROMIUM={explicit} is not an executable",
                fix="point it at a chromium or chromium-headless-shell binary, or unset it",
            )
        return Path(explicit)
    _need_tools()
    version = _version(PACKAGE)
    final = cache_root() / "browser" / f"{PACKAGE}-{version}"
    exe = final / "usr" / "lib" / "chromium" / "chromium-headless-shell"
    if (final / MARKER).exists():
        return exe
    with locked(final):
        if (final / MARKER).exists():
            return exe
        pkgs = closure()
        with staging_dir(final) as tmp:
            debs = tmp / ".debs"
            debs.mkdir()
            proc.run(["apt-get", "download", *pkgs], cwd=debs, log=log, timeout=1800)
            for deb in sorted(debs.glob("*.deb")):
                proc.run(["dpkg", "-x", str(deb), str(tmp)], log=log, timeout=600)
            shutil.rmtree(debs)
            (tmp / MARKER).write_text("\n".join(pkgs) + "\n")
    if not exe.exists():
        raise NotAvailable(f"{PACKAGE} {version} has no {exe.name} where expected")
    return exe


def _env(exe: Path) -> dict[str, str]:
    root = exe.parents[2] if exe.parent.name == "chromium" else exe.parent
    # every unpacked directory holding a shared library (pulseaudio keeps its own)
    libs = sorted(
        {str(p.parent) for top in ("lib", "usr/lib") for p in root.glob(f"{top}/**/*.so*")}
    )
    old = os.environ.get("LD_LIBRARY_PATH", "")
    return {"LD_LIBRARY_PATH": ":".join([*libs, old] if old else libs)}


def _args(exe: Path) -> list[str]:
    return [
        str(exe),
        "--headless",
        "--no-sandbox",  # no user namespaces in containers; the page is our own file
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
    ]


def dump_dom(exe: Path, html: Path, timeout: float = 120) -> str:
    """The page's DOM after its scripts ran."""
    r = proc.run(
        [*_args(exe), "--dump-dom", html.resolve().as_uri()], env=_env(exe), timeout=timeout
    )
    return r.output


def screenshot(
    exe: Path, html: Path, png: Path, size: tuple[int, int] = (1400, 1000), fragment: str = ""
) -> Path:
    """``html`` drawn at ``size`` into ``png``; ``fragment`` (``only-sm120``) is handed to
    the page as its URL's #fragment."""
    png.parent.mkdir(parents=True, exist_ok=True)
    url = html.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    proc.run(
        [
            *_args(exe),
            f"--screenshot={png.resolve()}",
            f"--window-size={size[0]},{size[1]}",
            url,
        ],
        env=_env(exe),
        timeout=180,
    )
    return png


def png_colors(png: Path, limit: int = 4096) -> int:
    """How many distinct colours a PNG has (8-bit RGB/RGBA, not interlaced): a blank page
    has one."""
    data = png.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{png.name} is not a PNG")
    pos, idat, w = 8, b"", 0
    h = bpp = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, inter = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or inter:
                raise ValueError(f"{png.name}: PNG type {ctype}/{depth}/{inter} not handled")
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    colors: set[bytes] = set()
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 4 == 0:
            for x in range(0, stride, bpp * 4):
                colors.add(bytes(line[x : x + 3]))
            if len(colors) >= limit:
                return len(colors)
        prev = line
    return len(colors)
