"""Source patches: ``patches/series.toml`` lists each patch with the vLLM versions it
applies to, why it exists and where it comes from; ``apply_all`` applies a
selection to a work copy of a tree, all or nothing.

The tool is GNU ``patch``, not ``git apply``: it names each failing hunk and the
line it expected ("Hunk #1 FAILED at 41"), which is what a user needs to write a
variant of the patch; it needs no repository and behaves the same wherever the
work copy lives (``git apply`` run inside some other git work tree resolves paths
against that repository and can skip files without an error). ``--fuzz=0``: a
hunk whose context lines differ is a failure, never a guess; only line offsets
are tolerated, because the same block moves between releases.

Cached trees are never written: ``copy_tree`` makes the work copy, and ``apply_all``
puts each patched file in place by rename, so a hard-linked copy stays safe.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from vllm_matrix.infra import datafiles, proc, tomlfile
from vllm_matrix.infra.errors import ConfigError, MatrixError
from vllm_matrix.sources.sdist import tree_version

SERIES = "series.toml"
PATCH_KEYS = ("file", "applies", "why", "upstream", "strip")
Status = Literal["applied", "already-applied"]


class PatchError(MatrixError):
    """A patch does not apply to a tree (the tree is left unchanged)."""


@dataclass(frozen=True)
class Target:
    path: str  # relative to the tree root, after stripping
    created: bool  # the patch's old side is /dev/null


@dataclass(frozen=True)
class Patch:
    name: str
    file: Path
    applies: SpecifierSet
    why: str
    upstream: str
    strip: int
    targets: tuple[Target, ...] = field(default=(), compare=False, repr=False)

    def paths(self) -> tuple[str, ...]:
        return tuple(t.path for t in self.targets)


@dataclass(frozen=True)
class Applied:
    patch: Patch
    status: Status

    def to_json(self) -> dict[str, Any]:
        return {
            "patch": self.patch.name,
            "file": self.patch.file.name,
            "status": self.status,
            "upstream": self.patch.upstream,
        }


# ---------------------------------------------------------------------------
# The series file


# The series shipped with vllm-matrix (its checkout's patches/; the package is installed
# editable from there, as the README says).
SHIPPED = datafiles.patches_dir() / SERIES


def default_series(root: Path | None = None) -> Path:
    """``<root>/patches/series.toml`` where the project (matrix.toml's directory) has its
    own series; else the series shipped with vllm-matrix, so a matrix file kept elsewhere
    still gets the patches."""
    own = (root or Path.cwd()) / "patches" / SERIES
    return own if own.is_file() or not SHIPPED.is_file() else SHIPPED


def _nth_line(doc: tomlfile.TomlDoc, n: int) -> int:
    lines = [i for i, t in enumerate(doc.text.splitlines(), 1) if t.strip() == "[[patch]]"]
    return lines[n] if n < len(lines) else 0


def parse_targets(text: str, strip: int, where: str) -> tuple[Target, ...]:
    """The files a unified diff touches, as paths relative to the tree root."""
    lines = text.splitlines()
    out: dict[str, Target] = {}
    for i in range(len(lines) - 2):
        old, new, hunk = lines[i], lines[i + 1], lines[i + 2]
        if not (old.startswith("--- ") and new.startswith("+++ ") and hunk.startswith("@@")):
            continue
        old_name = old[4:].split("\t")[0].strip()
        new_name = new[4:].split("\t")[0].strip()
        name = old_name if new_name == "/dev/null" else new_name
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or len(parts) <= strip:
            raise ConfigError(
                f"{where}: file name '{name}' has no path left after stripping {strip} "
                "component(s)",
                fix="write the diff with a/ b/ prefixes (diff -ruN a b) and strip = 1",
            )
        rel = parts[strip:]
        if ".." in rel:
            raise ConfigError(
                f"{where}: file name '{name}' points outside the tree",
                fix="diff the two trees from their top directories",
            )
        path = "/".join(rel)
        out.setdefault(path, Target(path, old_name == "/dev/null"))
    if not out:
        raise ConfigError(
            f"{where}: no unified diff in the file (no ---/+++/@@ lines)",
            fix="make it with `diff -ruN a/ b/` or `git diff` from two real trees",
        )
    return tuple(out.values())


def load_series(path: Path | None = None, root: Path | None = None) -> tuple[Patch, ...]:
    """Read and check the series: keys, types, ranges, files present, none unlisted.

    ``path`` wins; else ``default_series(root)``.
    """
    path = path or default_series(root)
    doc = tomlfile.load(path)
    tomlfile.check_keys(doc, doc.data, ("patch",), "the top level")
    raw = doc.data.get("patch", [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(
            f"{doc.where('patch')}: 'patch' must be an array of tables",
            fix="write each entry as a [[patch]] table",
        )
    # absolute: patch runs with -d <tree> and would look for the file there
    here = path.absolute().parent
    present = sorted(p.name for p in here.glob("*.patch"))
    out: list[Patch] = []
    seen: dict[str, int] = {}
    for n, t in enumerate(raw):
        line = _nth_line(doc, n)
        ctx = f"[[patch]] #{n + 1}"
        tomlfile.check_keys(doc, t, PATCH_KEYS, ctx, line)
        fname = tomlfile.require(doc, t, "file", str, ctx, line)
        if "/" in fname or "\\" in fname or not fname.endswith(".patch"):
            raise ConfigError(
                f"{doc.where('file', line)}: file '{fname}' in {ctx} must be the name of a "
                f"*.patch in {here}",
                fix="keep patches next to series.toml and give the bare file name",
            )
        if fname in seen:
            raise ConfigError(
                f"{doc.where('file', line)}: {fname} is listed twice (first at line {seen[fname]})",
                fix="keep one entry per patch file",
            )
        seen[fname] = line
        file = here / fname
        if not file.is_file():
            raise ConfigError(
                f"{doc.where('file', line)}: {ctx} names {fname}, which is not in {here}",
                fix=tomlfile.did_you_mean(fname, present) if present else "add the file",
            )
        spec_text = tomlfile.require(doc, t, "applies", str, ctx, line)
        try:
            applies = SpecifierSet(spec_text)
        except InvalidSpecifier:
            raise ConfigError(
                f"{doc.where('applies', line)}: applies = {spec_text!r} in {ctx} is not a "
                "version specifier set",
                fix='write a PEP 440 range such as ">=0.6.2,<0.9.1"',
            ) from None
        if not str(applies):
            raise ConfigError(
                f"{doc.where('applies', line)}: applies in {ctx} is empty, which would match "
                "every vLLM version",
                fix="write the range of releases the patch was checked against",
            )
        why = tomlfile.require(doc, t, "why", str, ctx, line).strip()
        upstream = tomlfile.require(doc, t, "upstream", str, ctx, line).strip()
        if not why:
            raise ConfigError(f"{doc.where('why', line)}: why in {ctx} is empty", fix="say why")
        if not upstream.startswith(("https://", "http://")):
            raise ConfigError(
                f"{doc.where('upstream', line)}: upstream in {ctx} must be a URL, not {upstream!r}",
                fix="link the upstream PR, issue or commit the change comes from",
            )
        strip = tomlfile.expect(doc, t.get("strip", 1), "strip", int, ctx, line)
        if strip < 0:
            raise ConfigError(
                f"{doc.where('strip', line)}: strip in {ctx} must be 0 or more",
                fix="strip = 1 for a/ b/ prefixes",
            )
        text = file.read_text(encoding="utf-8", errors="replace")
        targets = parse_targets(text, strip, str(file))
        out.append(Patch(file.stem, file, applies, why, upstream, strip, targets))
    for name in present:
        if name not in seen:
            raise ConfigError(
                f"{here / name} is not listed in {path}",
                fix=f'add a [[patch]] entry with file = "{name}", applies, why and upstream, '
                "or delete the file",
            )
    return tuple(out)


def select(series: Iterable[Patch], version: str) -> tuple[Patch, ...]:
    """The patches whose range holds ``version``, in series order.

    Pre-releases count: a checkout that calls itself 0.8.6.dev12 is inside a range
    that holds 0.8.6.
    """
    try:
        v = Version(version)
    except InvalidVersion:
        raise PatchError(
            f"cannot choose patches for vLLM version {version!r}: not a version number",
            fix="give the tree's release version (a local tree needs PKG-INFO or an "
            "explicit version)",
        ) from None
    return tuple(p for p in series if p.applies.contains(v, prereleases=True))


# ---------------------------------------------------------------------------
# Work copies


def copy_tree(src: Path, dst: Path, *, private: Iterable[str] | None = None) -> Path:
    """Copy the tree ``src`` to the new directory ``dst``.

    ``private=None`` copies every file: use it for a tree that will be built,
    because a build rewrites files it finds (setuptools-scm rewrites
    vllm/_version.py in place) and would write through a hard link into the cache.
    With ``private`` (paths relative to the tree, e.g. ``touched(patches)``), those
    files are copied and every other file is hard-linked: for trees that are only
    patched and read (configure probes, tests). Measured on vLLM 0.33.0's tree
    (153 MB, 8.5k files) on 2 cores: a full copy 1.2 s idle to 4 s busy, hard
    links 0.3 s to 2 s; against hours of compiling, the safe full copy is the default.
    """
    if dst.exists():
        raise PatchError(
            f"{dst} already exists; a work copy goes into a new directory",
            fix="remove it or choose another work directory",
        )
    if private is None:
        shutil.copytree(src, dst, symlinks=True)
        return dst
    own = {os.path.normpath(p) for p in private}

    def link_or_copy(s: str, d: str) -> object:
        if os.path.relpath(s, src) in own:
            return shutil.copy2(s, d)
        try:
            os.link(s, d)
        except OSError:  # another file system, or links not allowed there
            return shutil.copy2(s, d)
        return d

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy)
    return dst


def touched(patches: Iterable[Patch]) -> tuple[str, ...]:
    """Every path the patches write, relative to the tree, in first-use order."""
    seen: dict[str, None] = {}
    for p in patches:
        for path in p.paths():
            seen.setdefault(path, None)
    return tuple(seen)


# ---------------------------------------------------------------------------
# Applying

_FILE_LINE = re.compile(r"^(?:checking|patching) file '?(.+?)'?$")
_HUNK_FAILED = re.compile(r"^(Hunk #\d+ FAILED at \d+.*?)\.?$")
_MALFORMED = re.compile(r"^patch: \*\*\*\* (.*)$")


def failed_hunks(output: str) -> list[str]:
    """``<file>: Hunk #N FAILED at L`` for each hunk GNU patch rejected; other errors too."""
    out: list[str] = []
    current = "?"
    for line in output.splitlines():
        if m := _FILE_LINE.match(line):
            current = m.group(1)
        elif m := _HUNK_FAILED.match(line):
            out.append(f"{current}: {m.group(1)}")
        elif line.startswith("can't find file to patch"):
            out.append("a file to patch is not in the tree")
        elif m := _MALFORMED.match(line):
            out.append(m.group(1))
    return out


def _run_patch(
    p: Patch, where: Path, log: Path | None, *, dry_run: bool, reverse: bool = False
) -> proc.Completed:
    argv: list[str | os.PathLike[str]] = [
        "patch",
        f"-p{p.strip}",
        # --force: never guess that a patch is reversed and never ask; whether it
        # is already applied is decided by the separate reverse dry run.
        "--force",
        "--fuzz=0",
        "--no-backup-if-mismatch",
        "--reject-file=-",
        "-d",
        where,
        "-i",
        p.file,
    ]
    if dry_run:
        argv.append("--dry-run")
    if reverse:
        argv.append("--reverse")
    # The messages are parsed: keep them in English.
    return proc.run(argv, log=log, check=False, env={"LC_ALL": "C"})


def _fail(p: Patch, version: str, detail: str, missing: bool = False) -> PatchError:
    series = p.file.parent / SERIES
    narrow = f"narrow applies = '{p.applies}' in {series} to leave {version} out"
    return PatchError(
        f"patch {p.name} does not apply to vLLM {version}: {detail}; the tree is unchanged",
        fix=narrow
        if missing
        else f"{p.file.name} was made from other text; if vLLM {version} needs it, diff "
        "that release's tree into a variant patch and give the two disjoint `applies` "
        f"ranges, else {narrow}",
    )


def apply_all(
    tree: Path,
    patches: tuple[Patch, ...],
    log: Path | None = None,
    *,
    version: str | None = None,
) -> tuple[Applied, ...]:
    """Apply ``patches`` in order to ``tree``, all or nothing.

    Every patch is first tried on a scratch copy of the files the series touches,
    one after another so a patch may build on an earlier one: dry run forward;
    if that fails, a reverse dry run that succeeds means already applied (or,
    for stacked patches, undoing the whole selection last-first succeeds); else
    PatchError naming the patch, the version and the failing hunks. Only when all
    pass do the changed files replace the tree's (by rename; unchanged files keep
    their mtime so a configured build does not re-run). ``version`` is for the
    messages; by default the tree's PKG-INFO.
    """
    if not patches:
        return ()
    version = version or tree_version(tree) or "unknown"
    paths = touched(patches)
    created: set[str] = set()
    for p in patches:
        for t in p.targets:
            if not t.created and t.path not in created and not (tree / t.path).is_file():
                raise _fail(p, version, f"{t.path} is not in the tree", missing=True)
            created.add(t.path)
    with tempfile.TemporaryDirectory(prefix="vllm-matrix-patch-") as tmp:
        scratch = Path(tmp) / "forward"
        _scratch_copy(tree, scratch, paths)
        try:
            results = _forward(scratch, patches, log, version)
        except PatchError:
            # A later patch may rewrite lines an earlier one added; then no single
            # reverse dry run matches, but undoing the whole selection from the
            # last patch back does.
            undo = Path(tmp) / "reverse"
            _scratch_copy(tree, undo, paths)
            if not _all_applied(undo, patches, log):
                raise
            return tuple(Applied(p, "already-applied") for p in patches)
        _commit(scratch, tree, paths)
    return tuple(results)


def _scratch_copy(tree: Path, scratch: Path, paths: tuple[str, ...]) -> None:
    scratch.mkdir()
    for rel in paths:
        if (tree / rel).is_file():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / rel, scratch / rel)


def _forward(
    scratch: Path, patches: tuple[Patch, ...], log: Path | None, version: str
) -> list[Applied]:
    results: list[Applied] = []
    for p in patches:
        forward = _run_patch(p, scratch, log, dry_run=True)
        if forward.returncode == 0:
            done = _run_patch(p, scratch, log, dry_run=False)
            if done.returncode != 0:  # the dry run passed: only I/O can get here
                raise _fail(p, version, (done.output.strip().splitlines() or ["failed"])[-1])
            results.append(Applied(p, "applied"))
            continue
        if _run_patch(p, scratch, log, dry_run=True, reverse=True).returncode == 0:
            results.append(Applied(p, "already-applied"))
            continue
        detail = failed_hunks(forward.output)
        tail = forward.output.strip().splitlines()[-3:]
        raise _fail(p, version, "; ".join(detail or tail or ["patch failed"]))
    return results


def _all_applied(scratch: Path, patches: tuple[Patch, ...], log: Path | None) -> bool:
    for p in reversed(patches):
        if _run_patch(p, scratch, log, dry_run=True, reverse=True).returncode != 0:
            return False
        if _run_patch(p, scratch, log, dry_run=False, reverse=True).returncode != 0:
            return False
    return True


def _commit(scratch: Path, tree: Path, paths: tuple[str, ...]) -> None:
    """Move the changed files into the tree: staged first, then renamed over."""
    staged: list[tuple[Path, Path]] = []
    removed: list[Path] = []
    try:
        for rel in paths:
            new, dest = scratch / rel, tree / rel
            if new.is_file():
                if dest.is_file() and filecmp.cmp(new, dest, shallow=False):
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.vllm-matrix-new")
                shutil.copy2(new, tmp)
                staged.append((tmp, dest))
            elif dest.is_file():
                removed.append(dest)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, dest in staged:
        os.replace(tmp, dest)
    for dest in removed:
        dest.unlink()
