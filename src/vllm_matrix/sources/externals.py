"""Offline sources for vLLM's FetchContent dependencies (CUTLASS, vllm-flash-attn, FlashMLA...).

vLLM's CMake downloads each pinned dependency at configure time unless the tree's own
``*_SRC_DIR`` environment variable points at a source dir. This module finds or brings
those source dirs so a build needs no network:

1. the tree's variable, if the user set it;
2. the sources cache: ``cache_root()/sources/<name>-<ref>``, made by ``prefetch`` from
   local git dirs (clones or mirrors) or a shallow ``git fetch`` of the pinned ref, with a
   marker written last that holds a digest of every file (checked before use);
3. PyPI's wheel at exactly the pinned version (nvidia-cutlass), sha256-checked. It holds
   CUTLASS's headers but not its CMakeLists.txt, so it serves the probe (which sets the
   include variables itself) and never a build (``need_tree``);
4. otherwise missing, with the command that brings it.

Sources are exported with ``git archive`` (a tree, no .git). A partial mirror that lacks
some blobs (e.g. cloned with a blob size limit) still yields the tree: the missing files
are left out and recorded. Submodules (gitlinks) are filled from a git dir holding their
commit, or fetched; what cannot be filled is recorded and reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from vllm_matrix.infra import index, proc
from vllm_matrix.infra.cache import atomic_write_text, cache_root, extract_tar, locked, staging_dir
from vllm_matrix.infra.errors import CommandError, MatrixError
from vllm_matrix.knowledge.probe_units import ProbeKnowledge
from vllm_matrix.sources import sdist as source
from vllm_matrix.stages.facts import External, SourceFacts, read_facts
from vllm_matrix.stages.toolkit.files import unzip_wheel

MARKER = ".vllm-matrix-source.json"
PYPI_MARKER = ".vllm-matrix-external.json"
SCHEMA = 1
# Submodules a CUDA build never compiles: leaving them out does not make a source incomplete.
OPTIONAL_SUBMODULES = {"composable_kernel": "ROCm only; a CUDA build does not use it"}
SUBMODULE_DEPTH = 2  # the dependency's own submodules, and theirs
# A shallow fetch that stalls (a blackholed proxy) must fail rather than hang the build.
_FETCH_OPTS = ("-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60")
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_NO_LAZY_FETCH": "1"}
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ExternalDir:
    name: str
    pin: str | None
    path: Path | None
    origin: str  # how it was found, or why not and how to bring it
    env_var: str | None = None  # the tree's own *_SRC_DIR variable (None: the tree has none)
    incomplete: tuple[str, ...] = ()  # needed submodules that could not be filled
    repo: str | None = None  # where it comes from upstream (for messages)

    @property
    def status(self) -> str:
        if self.path is None:
            return "missing"
        return "incomplete" if self.incomplete else "found"


# ==================================================================== small helpers


def _pin_version(pin: str | None) -> Version | None:
    if not pin:
        return None
    try:
        return Version(pin.lstrip("v"))
    except InvalidVersion:
        return None  # a commit hash: no release package can match it


def _version_h(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    parts = [re.search(rf"#define CUTLASS_{k} (\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        return None
    return ".".join(m.group(1) for m in parts if m)


def _short(ref: str | None) -> str:
    if ref and _HEX40.match(ref):
        return ref[:12]
    return ref or "?"


def _safe(ref: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in ref)


def source_dir(name: str, ref: str) -> Path:
    """Where the sources cache keeps ``name`` at ``ref``."""
    return cache_root() / "sources" / f"{_safe(name)}-{_safe(ref)}"


def repo_name(url: str | None) -> str | None:
    """``https://github.com/NVIDIA/cutlass.git`` -> ``cutlass``."""
    if not url:
        return None
    last = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return last[:-4] if last.endswith(".git") else last or None


def _var_of(ext: External | None, name: str) -> tuple[str, str | None]:
    """(the variable to look up, the tree's own variable or None)."""
    own = ext.env_var if ext and ext.env_var else None
    return own or f"VLLM_{name.upper()}_SRC_DIR", own


# ==================================================================== digest / verify


def tree_digest(root: Path) -> tuple[str, int, int]:
    """(sha256 over sorted (path, content sha256, exec bit), files, bytes); marker excluded.

    ``__pycache__`` is not part of a source tree: vLLM's build imports CUTLASS's python/
    (PYTHONPATH=${CUTLASS_DIR}/python) and Python writes bytecode next to it.
    """
    rows: list[tuple[str, str, str]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        base = Path(dirpath)
        for fn in filenames:
            p = base / fn
            rel = p.relative_to(root).as_posix()
            if rel == MARKER:
                continue
            st = p.lstat()
            if p.is_symlink():
                target = os.readlink(p)
                rows.append((rel, hashlib.sha256(target.encode()).hexdigest(), "l"))
                continue
            with p.open("rb") as fh:
                sha = hashlib.file_digest(fh, "sha256").hexdigest()
            total += st.st_size
            rows.append((rel, sha, "x" if st.st_mode & 0o100 else "-"))
        for d in list(dirnames):  # a symlink to a directory is an entry, not a subtree
            if (base / d).is_symlink():
                dirnames.remove(d)
                rel = (base / d).relative_to(root).as_posix()
                target = os.readlink(base / d)
                rows.append((rel, hashlib.sha256(target.encode()).hexdigest(), "l"))
    h = hashlib.sha256()
    for rel, sha, mode in sorted(rows):
        h.update(f"{rel}\0{sha}\0{mode}\n".encode())
    return h.hexdigest(), len(rows), total


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def verify(path: Path) -> str | None:
    """None when ``path`` is a complete prefetched tree whose files match its marker's
    digest; else the problem, in words."""
    if not (path / MARKER).is_file():
        return f"{path}: no {MARKER} (not a finished prefetch)"
    m = read_marker(path)
    if m is None or "digest" not in m:
        return f"{path / MARKER}: unreadable"
    got, files, _ = tree_digest(path)
    if got != m["digest"]:
        return (
            f"{path}: tree digest {got[:16]} != marker {str(m['digest'])[:16]} "
            f"({files} files now, {m.get('files')} when made): changed since the prefetch"
        )
    return None


# A cache entry is immutable once renamed into place; hash it once per process.
_VERIFIED: dict[tuple[str, int, int], str | None] = {}


def _verify_once(path: Path) -> str | None:
    try:
        st = (path / MARKER).stat()
    except OSError:
        return verify(path)
    key = (str(path), st.st_ino, st.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = verify(path)
    return _VERIFIED[key]


def _describe(m: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """(origin text, needed submodules missing) from a marker."""
    notes = [f"prefetched: {m.get('origin')} (commit {_short(m.get('commit'))}; digest verified)"]
    left = list(m.get("left_out", []))
    incomplete: list[str] = []
    for s in m.get("submodules", []):
        left += list(s.get("left_out", []))
        if s.get("status") != "filled":
            why = s.get("optional") or "needed, the build will fail without it"
            notes.append(
                f"submodule {s['path']} ({repo_name(s.get('url'))}@{_short(s.get('commit'))}) "
                f"missing: {why}"
            )
            if not s.get("optional"):
                incomplete.append(str(s["path"]))
    if left:
        shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
        notes.append(f"left out {len(left)} path(s) the git dir lacks: {shown}")
    return "; ".join(notes), tuple(incomplete)


# ==================================================================== lookup


def bring_hint(version: str, var: str | None) -> str:
    how = f"`inv prefetch --vllm {version}` (or `--git DIR` from a local clone/mirror)"
    return how + (f", or set {var}" if var else "")


def reason(d: ExternalDir) -> str:
    """``d.origin`` without the how-to-bring-it hint (for lists that give the fix once)."""
    return d.origin.split(": `inv prefetch --vllm", 1)[0]


def external_dir(
    facts: SourceFacts,
    name: str,
    know: ProbeKnowledge,
    *,
    fetch: bool,
    need_tree: bool = False,
) -> ExternalDir:
    """Where ``name``'s sources for this tree's pin are, without the network unless ``fetch``.

    Order: the tree's own override variable (e.g. VLLM_CUTLASS_SRC_DIR) in our environment,
    then the sources cache (``prefetch``; its digest checked), then the PyPI package at
    exactly the pinned version (sha256 from the index, unpacked into the cache, its version
    header checked against the pin). ``need_tree`` (a build): PyPI's copy does not count,
    it lacks the dependency's CMakeLists.txt that sets the include variables vLLM uses.
    """
    ext = next((e for e in facts.external if e.name == name), None)
    found = _lookup(facts, name, know, fetch=fetch, need_tree=need_tree)
    return replace(found, repo=ext.repo if ext else None)


def _lookup(
    facts: SourceFacts,
    name: str,
    know: ProbeKnowledge,
    *,
    fetch: bool,
    need_tree: bool = False,
) -> ExternalDir:
    ext = next((e for e in facts.external if e.name == name), None)
    spec = next((e for e in know.externals if e.name == name), None)
    pin = ext.ref if ext else None
    var, own = _var_of(ext, name)
    hint = bring_hint(facts.vllm, var)
    why: list[str] = []
    given = os.environ.get(var)
    if given and Path(given).is_dir():
        return ExternalDir(name, pin, Path(given).resolve(), f"${var}", own)
    if given:
        why.append(f"${var}={given} is not a directory")
    if pin:
        cached = source_dir(name, pin)
        if (cached / MARKER).is_file():
            problem = _verify_once(cached)
            if problem is None:
                m = read_marker(cached) or {}
                origin, incomplete = _describe(m)
                return ExternalDir(name, pin, cached, origin, own, incomplete)
            why.append(f"cached copy fails verification ({problem})")
    if need_tree or spec is None or spec.pypi is None:
        return ExternalDir(name, pin, None, "; ".join([*why, "not prefetched"]) + f": {hint}", own)
    want = _pin_version(pin)
    if want is None:
        return ExternalDir(name, pin, None, f"pin {pin} is not a release: {hint}", own)
    final = cache_root() / "externals" / f"{name}-{want}"
    marker = final / PYPI_MARKER
    if marker.is_file():
        d = json.loads(marker.read_text())
        return ExternalDir(name, pin, final / spec.pypi_root, d["origin"], own)
    if not fetch:
        return ExternalDir(name, pin, None, f"not fetched yet: {hint}", own)
    try:
        files = index.project_files(spec.pypi)
    except MatrixError as exc:
        return ExternalDir(
            name, pin, None, f"{spec.pypi} not reachable ({exc.message}): {hint}", own
        )
    wheels = [f for f in files if f.kind == "wheel" and f.version == want and not f.yanked]
    if not wheels:
        have = ", ".join(str(v) for v in sorted({f.version for f in files}))
        return ExternalDir(
            name,
            pin,
            None,
            f"PyPI {spec.pypi} has no {want} (has {have or 'nothing'}): {hint}",
            own,
        )
    w = wheels[0]
    with locked(final):
        if not marker.is_file():
            data = index.download(w.url)
            got = hashlib.sha256(data).hexdigest()
            if got != w.sha256:
                return ExternalDir(
                    name, pin, None, f"{w.filename}: sha256 {got} != index {w.sha256}", own
                )
            with staging_dir(final) as tmp:
                wheel = tmp / w.filename
                wheel.write_bytes(data)
                unzip_wheel(wheel, tmp)
                wheel.unlink()
                found = _version_h(tmp / spec.pypi_root / spec.version_header)
                if found is None or Version(found) != want:
                    raise MatrixError(
                        f"{w.filename}: {spec.version_header} says {found}, pin is {pin}",
                        fix=f"set {var} to a {name} checkout at {pin}",
                    )
                origin = f"PyPI {w.filename} sha256:{w.sha256} ({spec.version_header}: {found})"
                atomic_write_text(tmp / marker.name, json.dumps({"origin": origin}))
    d = json.loads(marker.read_text())
    return ExternalDir(name, pin, final / spec.pypi_root, d["origin"], own)


def resolve_all(facts: SourceFacts, know: ProbeKnowledge, *, fetch: bool) -> dict[str, ExternalDir]:
    """Every FetchContent dependency of the tree, as a build needs it (a whole source tree).

    ``fetch``: a pin that is not here is brought from its repo over the network (a shallow
    ``git fetch``, as ``prefetch`` does without git dirs); without it, only what is here.
    """
    if fetch:
        return prefetch(facts, know, network=True)
    return {
        e.name: external_dir(facts, e.name, know, fetch=False, need_tree=True)
        for e in facts.external
    }


def build_env(dirs: Mapping[str, ExternalDir]) -> dict[str, str]:
    """The tree's ``*_SRC_DIR`` variables for every dependency that is here."""
    return {d.env_var: str(d.path) for d in dirs.values() if d.path is not None and d.env_var}


def missing_error(version: str, dirs: Mapping[str, ExternalDir]) -> MatrixError | None:
    """One error naming every dependency a build of ``version`` lacks, and how to bring it."""
    bad = [d for d in dirs.values() if d.status != "found"]
    if not bad:
        return None
    lines = []
    for d in bad:
        var = d.env_var or "no *_SRC_DIR variable in this tree"
        what = "missing" if d.path is None else f"incomplete (submodule {', '.join(d.incomplete)})"
        lines.append(f"  {d.name} {d.pin} ({var}): {what}: {reason(d)}")
    names = ", ".join(d.name for d in bad)
    sets = [f"{d.env_var}=<{d.name} checkout at {_short(d.pin)}>" for d in bad if d.env_var]
    fix = (
        f"where the network reaches their repos: `inv prefetch --vllm {version}`; "
        f"from local git clones or mirrors: `inv prefetch --vllm {version} --git DIR "
        f"[--git DIR ...]` (one per repo: "
        + ", ".join(f"{d.name}: {d.repo or '?'}" for d in bad)
        + ")"
        + (f"; or set {', '.join(sets)}" if sets else "")
    )
    return MatrixError(
        f"vLLM {version} needs FetchContent sources that are not here ({names}):\n"
        + "\n".join(lines),
        fix=fix,
    )


# ==================================================================== git export


def _git(
    git_dir: Path, *args: str, log: Path | None, check: bool = True, timeout: float = 1800
) -> proc.Completed:
    return proc.run(
        ["git", "-C", str(git_dir), *args], log=log, env=_GIT_ENV, check=check, timeout=timeout
    )


def _has_commit(git_dir: Path, ref: str, log: Path | None) -> str | None:
    """The commit ``ref`` names in ``git_dir``, if it holds it."""
    r = _git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", log=log, check=False)
    sha = r.output.strip().splitlines()[-1] if r.returncode == 0 and r.output.strip() else ""
    if not _HEX40.match(sha):
        return None
    ok = _git(git_dir, "cat-file", "-e", f"{sha}^{{commit}}", log=log, check=False)
    return sha if ok.returncode == 0 else None


def _candidates(git_dirs: Sequence[Path], url: str | None, ref: str) -> list[Path]:
    """Git dirs to try for ``url`` at ``ref``: those named like the repo first; any other
    only for a commit hash (a tag name like v1.0 means nothing in another repo)."""
    want = (repo_name(url) or "").lower()
    named = [d for d in git_dirs if want and want in str(d).lower()]
    if not _HEX40.match(ref):
        return named
    return named + [d for d in git_dirs if d not in named]


def _archive(
    git_dir: Path, commit: str, dest: Path, paths: Sequence[str], log: Path | None
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".archive.", suffix=".tar", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        git_args = ["archive", "--format=tar", f"--output={tmp}", commit]
        if paths:
            git_args += ["--", *paths]
        _git(git_dir, *git_args, log=log)
        with tarfile.open(tmp) as tf:
            extract_tar(tf, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _missing_blobs(git_dir: Path, commit: str, log: Path | None) -> list[str]:
    """Paths at ``commit`` whose blobs ``git_dir`` lacks (a partial clone or mirror)."""
    r = _git(git_dir, "rev-list", "--objects", "--no-walk", "--missing=print", commit, log=None)
    gone = {line[1:].strip() for line in r.output.splitlines() if line.startswith("?")}
    if not gone:
        return []
    listing = _git(git_dir, "ls-tree", "-r", "-z", commit, log=None).output
    out = []
    for entry in listing.split("\0"):
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[2] in gone:
            out.append(path)
    if log is not None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"# {git_dir}@{commit[:12]} lacks {len(out)} blob(s): {out}\n")
    return sorted(out)


def export(git_dir: Path, commit: str, dest: Path, log: Path | None = None) -> list[str]:
    """The tree at ``commit`` written under ``dest``; returns the paths left out.

    The whole tree in one ``git archive`` when the git dir holds every blob; else the
    same without the files it lacks; else each top-level entry on its own, leaving out
    those that fail.
    """
    with contextlib.suppress(CommandError):
        _archive(git_dir, commit, dest, (), log)
        return []
    lacking = _missing_blobs(git_dir, commit, log)
    if lacking:
        with contextlib.suppress(CommandError):
            _archive(
                git_dir, commit, dest, [".", *(f":(exclude,literal){p}" for p in lacking)], log
            )
            return lacking
    left: list[str] = []
    listing = _git(git_dir, "ls-tree", "-z", commit, log=log).output
    for entry in listing.split("\0"):
        meta, _, path = entry.partition("\t")
        if not path or meta.startswith("160000"):
            continue
        try:
            _archive(git_dir, commit, dest, [f":(literal){path}"], log)
        except CommandError:
            left.append(path)
    return left


def _gitlinks(git_dir: Path, commit: str, log: Path | None) -> list[tuple[str, str, str | None]]:
    """(path, commit, url from .gitmodules) of every submodule at ``commit``."""
    listing = _git(git_dir, "ls-tree", "-r", "-z", commit, log=log).output
    links = []
    for entry in listing.split("\0"):
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[0] == "160000":
            links.append((path, parts[2]))
    if not links:
        return []
    r = _git(
        git_dir,
        "config",
        "-z",
        "--blob",
        f"{commit}:.gitmodules",
        "--get-regexp",
        r"^submodule\..*\.(path|url)$",
        log=log,
        check=False,
    )
    by_name: dict[str, dict[str, str]] = {}
    for item in r.output.split("\0") if r.returncode == 0 else []:
        key, _, value = item.partition("\n")
        sub, _, attr = key.removeprefix("submodule.").rpartition(".")
        if sub and attr in ("path", "url"):
            by_name.setdefault(sub, {})[attr] = value
    url_of = {v["path"]: v.get("url") for v in by_name.values() if "path" in v}
    return [(p, c, url_of.get(p)) for p, c in links]


def _join_url(base: str | None, rel: str | None) -> str | None:
    """A submodule URL relative to its superproject's (``../cutlass.git``), made absolute."""
    if rel is None or not rel.startswith(("./", "../")) or not base:
        return rel
    parts = base.rstrip("/").split("/")
    for piece in rel.split("/"):
        if piece == "..":
            parts.pop()
        elif piece not in (".", ""):
            parts.append(piece)
    return "/".join(parts)


@dataclass
class _Fetched:
    git_dir: Path
    commit: str
    origin: str


@dataclass(frozen=True)
class _Work:
    git_dirs: Sequence[Path]
    network: bool
    log: Path | None
    scratch: Path


@contextlib.contextmanager
def _locate(work: _Work, url: str | None, ref: str) -> Iterator[tuple[_Fetched | None, list[str]]]:
    """A git dir holding ``ref`` (one of ``git_dirs``, or a shallow fetch of ``url``),
    and what was tried."""
    tried: list[str] = []
    for d in _candidates(work.git_dirs, url, ref):
        sha = _has_commit(d, ref, work.log)
        if sha is not None:
            # Its name only: the origin lands in result files, which name no path of
            # the machine that made them (the git dir is the user's, not a known root).
            yield _Fetched(d, sha, f"local git dir {d.name}@{ref}"), tried
            return
        tried.append(f"{d} lacks {_short(ref)}")
    if not work.git_dirs:
        tried.append("no --git dir given")
    elif not _candidates(work.git_dirs, url, ref):
        tried.append(f"no --git dir named like {repo_name(url)!r}")
    if not work.network or not url:
        tried.append("offline (no git fetch)" if not work.network else "no git URL to fetch")
        yield None, tried
        return
    repo = Path(tempfile.mkdtemp(prefix=".fetch.", dir=work.scratch))
    try:
        proc.run(["git", "init", "-q", "--bare", str(repo)], log=work.log, env=_GIT_ENV)
        r = _git(
            repo,
            *_FETCH_OPTS,
            "fetch",
            "--no-tags",
            "--depth",
            "1",
            url,
            ref,
            log=work.log,
            check=False,
        )
        sha = _has_commit(repo, "FETCH_HEAD", work.log) if r.returncode == 0 else None
        if sha is None:
            tail = (r.output.strip().splitlines() or ["?"])[-1]
            tried.append(f"git fetch {url} {_short(ref)} failed: {tail}")
            yield None, tried
        else:
            yield _Fetched(repo, sha, f"git fetch --depth 1 {url} {ref}"), tried
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def _fill_submodules(
    work: _Work, src: _Fetched, url: str | None, dest: Path, prefix: str, depth: int
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path, commit, sub_url in _gitlinks(src.git_dir, src.commit, work.log):
        full_url = _join_url(url, sub_url)
        name = repo_name(full_url) or path.rsplit("/", 1)[-1]
        optional = OPTIONAL_SUBMODULES.get(name)
        rec: dict[str, Any] = {
            "path": prefix + path,
            "url": full_url,
            "commit": commit,
            "optional": optional,
            "left_out": [],
        }
        out.append(rec)  # before its own submodules
        with _locate(work, full_url, commit) as (got, tried):
            if got is None:
                rec |= {"status": "missing", "origin": "; ".join(tried)}
            else:
                target = dest / path
                if target.exists():
                    shutil.rmtree(target)
                left = export(got.git_dir, got.commit, target, work.log)
                rec |= {
                    "status": "filled",
                    "origin": got.origin,
                    "left_out": [f"{prefix}{path}/{p}" for p in left],
                }
                if depth < SUBMODULE_DEPTH:
                    out += _fill_submodules(
                        work, got, full_url, target, f"{prefix}{path}/", depth + 1
                    )
    return out


def _make(
    ext: External, spec_header: tuple[str, Version] | None, work: _Work, final: Path
) -> str | None:
    """Build ``final`` for ``ext``; None when done, else why not."""
    with _locate(work, ext.repo, ext.ref) as (got, tried):
        if got is None:
            return "; ".join(tried)
        t0 = time.monotonic()
        with staging_dir(final) as tmp:
            left = export(got.git_dir, got.commit, tmp, work.log)
            subs = _fill_submodules(work, got, ext.repo, tmp, "", 1)
            if spec_header is not None:
                header, want = spec_header
                found = _version_h(tmp / header)
                if found is None or Version(found) != want:
                    raise MatrixError(
                        f"{ext.name} from {got.origin}: {header} says {found}, pin is {ext.ref}",
                        fix=f"give a --git dir whose {ext.ref} is {ext.name}'s own",
                    )
            digest, files, size = tree_digest(tmp)
            marker = {
                "schema": SCHEMA,
                "name": ext.name,
                "ref": ext.ref,
                "commit": got.commit,
                "repo": ext.repo,
                "origin": got.origin,
                "left_out": left,
                "submodules": subs,
                "digest": digest,
                "files": files,
                "bytes": size,
                "seconds": round(time.monotonic() - t0, 1),
            }
            atomic_write_text(tmp / MARKER, json.dumps(marker, indent=1) + "\n")
    return None


def _header_check(ext: External, know: ProbeKnowledge) -> tuple[str, Version] | None:
    spec = next((e for e in know.externals if e.name == ext.name), None)
    want = _pin_version(ext.ref)
    if spec is None or not spec.version_header or want is None:
        return None
    return spec.version_header, want


def _check_git_dirs(git_dirs: Sequence[Path]) -> list[Path]:
    out = []
    for d in git_dirs:
        d = Path(d).expanduser().resolve()
        r = proc.run(["git", "-C", str(d), "rev-parse", "--git-dir"], check=False, env=_GIT_ENV)
        if not d.is_dir() or r.returncode != 0:
            raise MatrixError(
                f"--git {d}: not a git repository",
                fix="give a clone or mirror (bare or not) of the dependency's repo",
            )
        out.append(d)
    return out


def prefetch(
    target: str | SourceFacts,
    know: ProbeKnowledge,
    *,
    git_dirs: Sequence[Path] = (),
    network: bool = True,
    log: Path | None = None,
) -> dict[str, ExternalDir]:
    """Bring every FetchContent dependency of a vLLM version (or its facts) into the cache.

    A dependency already here (its variable set, or a verified cached copy with every
    needed submodule) is left as is. Else it is exported from the first git dir holding
    its ref, or, with ``network``, from a shallow fetch of its repo.
    """
    if isinstance(target, str):
        tree = source.get_tree(target)
        facts = read_facts(tree.root, tree.version)
    else:
        facts = target
    dirs = _check_git_dirs(git_dirs)
    out: dict[str, ExternalDir] = {}
    for ext in facts.external:
        have = external_dir(facts, ext.name, know, fetch=False, need_tree=True)
        if have.status == "found":
            out[ext.name] = have
            continue
        final = source_dir(ext.name, ext.ref)
        scratch = final.parent
        scratch.mkdir(parents=True, exist_ok=True)
        work = _Work(dirs, network, log, scratch)
        with locked(final):
            again = external_dir(facts, ext.name, know, fetch=False, need_tree=True)
            if again.status == "found":  # another process made it meanwhile
                out[ext.name] = again
                continue
            try:
                why = _make(ext, _header_check(ext, know), work, final)
            except MatrixError as exc:
                why = str(exc).replace("\n", " ")
        _VERIFIED.clear()
        got = external_dir(facts, ext.name, know, fetch=False, need_tree=True)
        if got.path is None and why:
            var, _ = _var_of(ext, ext.name)
            why = f"not in the sources cache; {why}"
            got = replace(got, origin=f"{why}: {bring_hint(facts.vllm, var)}")
        out[ext.name] = got
    return out


__all__ = [
    "ExternalDir",
    "build_env",
    "export",
    "external_dir",
    "missing_error",
    "prefetch",
    "resolve_all",
    "source_dir",
    "tree_digest",
    "verify",
]
