"""vLLM sources: a release sdist from the index (sha256-checked, cached), a local
tree, or a git checkout at a tag.

Cache layout (under cache_root()):
  pins/vllm-<version>.json         filename, url, sha256 of the release's sdist
  blobs/sha256/ab/<sha256>         the sdist itself, content-addressed
  src/vllm-<version>-<sha12>/      the unpacked tree (renamed into place when complete)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from vllm_matrix.infra import index, proc
from vllm_matrix.infra.cache import (
    atomic_write_bytes,
    atomic_write_text,
    blob_path,
    cache_root,
    extract_tar,
    locked,
    sha256_file,
    staging_dir,
)
from vllm_matrix.infra.errors import CommandError, MatrixError, SourceError, ToolError

PROJECT = "vllm"


@dataclass(frozen=True)
class SourceTree:
    version: str
    root: Path
    origin: str  # "sdist <filename> sha256:<hash>" | "path <dir>" | "git <url>@<ref>"


def _pin_path(version: str, root: Path) -> Path:
    return root / "pins" / f"{PROJECT}-{version}.json"


def resolve_sdist(version: str, root: Path | None = None) -> index.IndexFile:
    """The index's sdist for ``version``; remembered so later runs need no network."""
    root = root or cache_root()
    try:  # before the version names a file (too long; a path)
        if len(version) > 64:  # refused before it names a file ("File name too long")
            raise InvalidVersion(version)
        want = Version(version)
    except InvalidVersion as exc:
        raise SourceError(
            f"{version[:40]!r}{'...' if len(version) > 40 else ''} is not a vLLM version",
            fix="use a release number such as 0.8.5, or path:DIR / git:URL@TAG",
        ) from exc
    pin = _pin_path(version, root)
    if pin.exists() and blob_path(root, json.loads(pin.read_text())["sha256"]).exists():
        d = json.loads(pin.read_text())
        return index.IndexFile(
            filename=d["filename"],
            url=d["url"],
            sha256=d["sha256"],
            version=Version(version),
            kind="sdist",
            yanked=d.get("yanked", False),
        )
    files = index.project_files(PROJECT)
    sdists = [f for f in files if f.kind == "sdist" and f.version == want]
    if not sdists:
        released = sorted({f.version for f in files})
        if want in released:
            raise SourceError(
                f"vLLM {version} has no sdist on the index (wheels only)",
                fix="use a neighbouring release, or a git checkout: git:<vllm repo url>@v"
                + version,
            )
        near = [str(v) for v in released if v.release[:2] == want.release[:2]]
        hint = f" (releases in that series: {', '.join(near)})" if near else ""
        raise SourceError(
            f"vLLM {version} is not on the index{hint}",
            fix="pick a released version; `pip index versions vllm` lists them",
        )
    return sdists[0]


def _remember(f: index.IndexFile, root: Path) -> None:
    """Pin the verified file so later runs resolve it without the network."""
    pin = _pin_path(str(f.version), root)
    data = {"filename": f.filename, "url": f.url, "sha256": f.sha256, "yanked": f.yanked}
    atomic_write_text(pin, json.dumps(data, indent=1))


def fetch_sdist(version: str, root: Path | None = None) -> Path:
    """The verified sdist for ``version`` in the content-addressed cache."""
    root = root or cache_root()
    f = resolve_sdist(version, root)
    dest = blob_path(root, f.sha256)
    if dest.exists():
        return dest
    with locked(dest):
        if dest.exists():  # another run finished it while we waited
            return dest
        data = index.download(f.url)
        got = hashlib.sha256(data).hexdigest()
        if got != f.sha256:
            raise SourceError(
                f"{f.filename}: sha256 {got} does not match the index's {f.sha256}",
                fix="retry; if it persists your index or proxy serves a different file",
            )
        atomic_write_bytes(dest, data)
        _remember(f, root)
    return dest


def _unpack(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        extract_tar(tf, dest)


def sdist_tree(version: str, root: Path | None = None) -> SourceTree:
    root = root or cache_root()
    f = resolve_sdist(version, root)
    final = root / "src" / f"{PROJECT}-{version}-{f.sha256[:12]}"
    marker = final / ".vllm-matrix-complete"
    if not marker.exists():
        archive = fetch_sdist(version, root)
        with locked(final):
            if not marker.exists():
                if sha256_file(archive) != f.sha256:
                    archive.unlink()
                    raise SourceError(
                        f"cached {f.filename} is corrupt (sha256 mismatch); removed it",
                        fix="run again to download it afresh",
                    )
                with staging_dir(final) as tmp:
                    _unpack(archive, tmp)
                    tops = [p for p in tmp.iterdir()]
                    if len(tops) == 1 and tops[0].is_dir():
                        for child in tops[0].iterdir():
                            shutil.move(str(child), tmp / child.name)
                        tops[0].rmdir()
                    (tmp / ".vllm-matrix-complete").write_text(f.sha256 + "\n")
    return SourceTree(version, final, f"sdist {f.filename} sha256:{f.sha256}")


def local_tree(path: Path, version: str | None = None) -> SourceTree:
    path = path.expanduser().resolve()
    if not (path / "CMakeLists.txt").is_file() or not (path / "setup.py").is_file():
        raise SourceError(
            f"{path} is not a vLLM source tree (no CMakeLists.txt / setup.py)",
            fix="point at the top of a vLLM checkout or unpacked sdist",
        )
    return SourceTree(version or tree_version(path) or "unknown", path, f"path {path}")


def tree_version(path: Path) -> str | None:
    pkg = path / "PKG-INFO"
    if pkg.is_file():
        for line in pkg.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return None


def git_error(url: str, ref: str, exc: CommandError) -> MatrixError:
    """Why ``git clone`` failed, from its own words (the ``fatal:`` line), and the fix: a
    host or repository that cannot be reached is the machine's side (ToolError: ERROR), a
    ref the repository does not have is the spec's (SourceError)."""
    lines = [ln.strip() for ln in exc.tail.splitlines() if ln.strip()]
    said = next((ln for ln in reversed(lines) if ln.startswith(("fatal:", "error:"))), "")
    said = said or (lines[-1] if lines else f"exit status {exc.returncode}")
    low = said.lower()
    where = f"git:{url}@{ref}"
    if "remote branch" in low and "not found" in low:
        return SourceError(
            f"{where}: the repository has no tag or branch '{ref}' ({said})",
            fix="check the ref after @ (a tag such as v0.8.5), or use a release number",
        )
    if any(w in low for w in ("could not resolve", "unable to access", "connection", "timed out")):
        fix = (
            "this machine cannot reach that host: check the URL and the network/proxy, or "
            "clone it elsewhere and use path:DIR (or a release number: its sdist comes from "
            "the package index)"
        )
    elif any(w in low for w in ("not found", "does not exist", "not appear to be a git repo")):
        fix = "check the repository URL before @ (e.g. a local clone's path or an https URL)"
    else:
        fix = "run the same `git clone` by hand to see why; or use path:DIR or a release number"
    return ToolError(f"{where}: git clone failed: {said}", fix=fix)


def git_tree(url: str, ref: str, root: Path | None = None) -> SourceTree:
    root = root or cache_root()
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in f"{url}@{ref}")[-120:]
    final = root / "git" / safe
    with locked(final):
        if not (final / "CMakeLists.txt").exists():
            with staging_dir(final) as tmp:
                try:
                    proc.run(
                        ["git", "clone", "--depth", "1", "--branch", ref, url, str(tmp / "t")],
                        timeout=1800,
                    )
                except CommandError as exc:
                    raise git_error(url, ref, exc) from None
                for child in (tmp / "t").iterdir():
                    shutil.move(str(child), tmp / child.name)
                (tmp / "t").rmdir()
    version = ref[1:] if ref.startswith("v") else ref
    return SourceTree(version, final, f"git {url}@{ref}")


def get_tree(spec: str, root: Path | None = None) -> SourceTree:
    """``0.8.5`` (index sdist) | ``path:DIR`` | ``git:URL@REF``."""
    if spec.startswith("path:"):
        return local_tree(Path(spec[5:]))
    if spec.startswith("git:"):
        rest = spec[4:]
        url, sep, ref = rest.rpartition("@")
        if not sep or not url:
            raise SourceError(f"bad git source '{spec}'", fix="write git:URL@TAG")
        return git_tree(url, ref, root)
    return sdist_tree(spec, root)
