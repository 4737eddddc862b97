"""Package index client: the PEP 691 JSON simple API of the index pip is set up for.

No host name lives in this code: the index URL comes from pip's configuration
(environment, config files) and, if none is set, from pip's own built-in default.
"""

from __future__ import annotations

import io
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from functools import cache

from packaging.utils import parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from vllm_matrix.infra import proc, programs
from vllm_matrix.infra.errors import SourceError

PEP691 = "application/vnd.pypi.simple.v1+json"
TIMEOUT = 60.0


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str
    version: Version
    kind: str  # "sdist" | "wheel"
    yanked: bool


@cache
def pip_config() -> dict[str, dict[str, str]]:
    """``pip config list`` as {key: {scope: value}} (pip's own reading of its files/env)."""
    out = proc.output_of([*programs.python_module("pip"), "config", "list"]) or ""
    found: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        m = re.match(r"^([^.]*)\.([a-z-]+)='(.*)'$", line.strip())
        if m:
            found.setdefault(m.group(2), {})[m.group(1)] = m.group(3)
    return found


def pip_cert() -> str | None:
    """The CA bundle pip is configured with (PIP_CERT or pip.conf's cert), if any: uv does
    not read pip's configuration, so it is handed on (a proxy's CA, a private index)."""
    scopes = pip_config().get("cert", {})
    return os.environ.get("PIP_CERT") or next(
        (scopes[s] for s in (":env:", "install", "download", "global") if s in scopes), None
    )


@cache
def index_url() -> str:
    """The simple-API base URL pip would use: env, then pip config, then pip's default."""
    env = os.environ.get("VLLM_MATRIX_INDEX_URL") or os.environ.get("PIP_INDEX_URL")
    if env:
        return env.rstrip("/")
    found = pip_config().get("index-url", {})
    for scope in (":env:", "install", "download", "global"):
        if scope in found:
            return found[scope].rstrip("/")
    try:
        from pip._internal.models.index import PyPI  # pip's own default, not ours

        return str(PyPI.simple_url).rstrip("/")
    except ImportError as exc:  # pragma: no cover - pip is always there in practice
        raise SourceError(
            "no package index configured and pip is not importable",
            fix="set PIP_INDEX_URL (or VLLM_MATRIX_INDEX_URL) to your index's simple URL",
        ) from exc


def _get(url: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            data: bytes = resp.read()
            return data
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SourceError(
            f"cannot reach the package index at {url}: {exc}",
            fix="check the network / pip's index-url, or pass a local source tree (path:DIR)",
        ) from exc


_ANCHOR = re.compile(r'<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', re.I)


def _html_files(raw: bytes) -> list[dict[str, object]]:
    """PEP 503 HTML (PyTorch's per-CUDA indexes serve only this): anchors whose URL
    fragment carries the sha256."""
    out: list[dict[str, object]] = []
    for href, text in _ANCHOR.findall(raw.decode("utf-8", "replace")):
        url, _, frag = href.replace("&amp;", "&").partition("#")
        algo, _, digest = frag.partition("=")
        hashes = {algo: digest} if algo and digest else {}
        out.append({"filename": text.strip(), "url": url, "hashes": hashes})
    return out


@cache
def project_files(project: str, base: str | None = None) -> tuple[IndexFile, ...]:
    """Every file the index lists for ``project`` (one request per process and index).

    ``base``: another simple index (a torch variant's); default: pip's configured one.
    """
    base = base or index_url()
    url = f"{base}/{project}/"
    raw = _get(url, f"{PEP691}, text/html;q=0.1")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = {"files": _html_files(raw)}
        if not doc["files"] and b"<a" not in raw:
            raise SourceError(
                f"the index at {base} answered neither PEP 691 JSON nor PEP 503 HTML",
                fix="point the setting at a simple index (…/simple or a per-CUDA torch index)",
            ) from None
    files: list[IndexFile] = []
    for f in doc.get("files", []):
        name = f["filename"]
        try:
            if name.endswith(".whl"):
                version, kind = parse_wheel_filename(name)[1], "wheel"
            elif name.endswith((".tar.gz", ".zip")):
                version, kind = parse_sdist_filename(name)[1], "sdist"
            else:
                continue
        except (InvalidVersion, ValueError):
            continue
        sha = f.get("hashes", {}).get("sha256")
        if not sha:
            continue
        files.append(
            IndexFile(
                filename=name,
                url=urllib.parse.urljoin(url, f["url"]),
                sha256=sha,
                version=version,
                kind=kind,
                yanked=bool(f.get("yanked")),
            )
        )
    return tuple(files)


def versions(project: str) -> list[Version]:
    return sorted({f.version for f in project_files(project)})


def download(url: str) -> bytes:
    return _get(url)


class RemoteFile(io.RawIOBase):
    """A seekable read-only view of a URL served with HTTP Range requests.

    Enough for zipfile: reading a wheel's central directory and a few members costs
    kilobytes to megabytes instead of the whole (often ~1 GB) wheel.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.pos = 0
        self.fetched = 0
        tail = self._get("bytes=-65536")  # the zip's central directory usually fits
        self.size = self._total
        self.chunks: dict[int, bytes] = {self.size - len(tail): tail}

    def _get(self, rng: str) -> bytes:
        req = urllib.request.Request(self.url, headers={"Range": rng})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                self._total = int(resp.headers["Content-Range"].rsplit("/", 1)[1])
                data: bytes = resp.read()
        except (urllib.error.URLError, TimeoutError, OSError, KeyError) as exc:
            raise SourceError(
                f"cannot read {self.url} by range: {exc}",
                fix="check the network; the index must allow HTTP Range requests",
            ) from exc
        self.fetched += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        for start, data in self.chunks.items():
            if start <= self.pos and self.pos + n <= start + len(data):
                buf[:n] = data[self.pos - start : self.pos - start + n]
                self.pos += n
                return n
        data = self._get(f"bytes={self.pos}-{self.pos + max(n, 1 << 16) - 1}")
        self.chunks[self.pos] = data
        n = min(n, len(data))
        buf[:n] = data[:n]
        self.pos += n
        return n


def zip_members(url: str, names: tuple[str, ...]) -> dict[str, bytes | None]:
    """Selected members of a remote zip (wheel); None for absent ones."""
    with zipfile.ZipFile(io.BufferedReader(RemoteFile(url), 1 << 16)) as zf:
        present = set(zf.namelist())
        return {n: (zf.read(n) if n in present else None) for n in names}


def wheel_requires(file: IndexFile) -> list[str]:
    """Requires-Dist of a wheel without downloading it.

    The PEP 658 ``.metadata`` file where the index has one; many older (and some new)
    vLLM wheels have none, so then METADATA is read out of the wheel by range requests.
    """
    try:
        raw = _get(file.url + ".metadata").decode("utf-8", "replace")
    except SourceError:
        with zipfile.ZipFile(io.BufferedReader(RemoteFile(file.url), 1 << 16)) as zf:
            name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            raw = zf.read(name).decode("utf-8", "replace")
    return [str(v) for v in HeaderParser().parsestr(raw).get_all("Requires-Dist") or []]
