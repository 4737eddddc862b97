"""Debian packages through a private apt state, the system's left untouched.

The mirror is taken from the system's apt sources (or VLLM_MATRIX_DEBIAN_MIRROR); the
sources list, lists and cache live in a directory of ours (``<cache>/apt/<suite>``);
.debs are fetched with ``apt-get download`` and checked against the index's sha256.
Used by the debian toolkit provider and by infra.debpkg.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.infra import proc, progress
from vllm_matrix.infra.cache import atomic_write_text, scratch_dir, sha256_file, sweep
from vllm_matrix.infra.errors import NotAvailable, SourceError, ToolError


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    filename: str  # pool path from the Packages index
    sha256: str
    size: int

    @property
    def deb_name(self) -> str:
        return Path(self.filename).name


@dataclass(frozen=True)
class AptSource:
    uri: str
    signed_by: str | None


def parse_deb822_sources(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            current[key] += "\n" + raw.strip()
            continue
        if ":" in raw:
            key, value = raw.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _is_release_suite(suite: str) -> bool:
    # "bookworm", "trixie", "stable": the main archive (not -security/-updates/-backports).
    return bool(suite) and "-" not in suite and "/" not in suite


def debian_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Debian archive mirrors configured for apt (deb822 and one-line formats)."""
    found: list[AptSource] = []
    for f in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for st in parse_deb822_sources(f.read_text(errors="replace")):
            if st.get("enabled", "yes").lower() == "no" or "deb" not in st.get("types", "").split():
                continue
            if not any(_is_release_suite(s) for s in st.get("suites", "").split()):
                continue
            for uri in st.get("uris", "").split():
                found.append(AptSource(uri.rstrip("/"), st.get("signed-by") or None))
    lists = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for f in lists:
        if not f.is_file():
            continue
        for raw in f.read_text(errors="replace").splitlines():
            line = raw.split("#", 1)[0].strip()
            m = re.match(r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
            if not m or not _is_release_suite(m.group(3)):
                continue
            opts = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
            found.append(AptSource(m.group(2).rstrip("/"), opts.get("signed-by")))
    return found


def debian_mirror(etc_apt: Path = Path("/etc/apt")) -> AptSource:
    override = os.environ.get("VLLM_MATRIX_DEBIAN_MIRROR")
    if override:
        return AptSource(override.rstrip("/"), None)
    sources = debian_sources(etc_apt)
    if not sources:
        raise NotAvailable(
            f"no Debian archive mirror found in apt's sources under {etc_apt}",
            fix="configure a Debian mirror for apt, or set VLLM_MATRIX_DEBIAN_MIRROR to its URI",
        )
    return sources[0]


def private_sources_list(source: AptSource, suite: str) -> str:
    signed = (
        f" [signed-by={source.signed_by}]"
        if source.signed_by and "\n" not in source.signed_by
        else ""
    )
    return f"deb{signed} {source.uri} {suite} main contrib non-free\n"


def apt_options(apt_dir: Path) -> list[str]:
    """apt -o options that confine apt to ``apt_dir`` (the system's state is not touched)."""
    opts = {
        "Dir::Etc::sourcelist": str(apt_dir / "sources.list"),
        "Dir::Etc::sourceparts": "/dev/null",
        "Dir::Etc::preferences": "/dev/null",
        "Dir::Etc::preferencesparts": "/dev/null",
        "Dir::State::Lists": str(apt_dir / "lists"),
        "Dir::State::status": "/dev/null",
        "Dir::Cache": str(apt_dir / "cache"),
        # apt drops to its _apt user for downloads, which cannot write into our cache.
        "APT::Sandbox::User": pwd.getpwuid(os.getuid()).pw_name,
    }
    args: list[str] = []
    for key, value in opts.items():
        args += ["-o", f"{key}={value}"]
    return args


def parse_depends(text: str) -> list[str]:
    """Real (non-virtual) package names on the Depends lines of ``apt-cache depends``."""
    return re.findall(r"^\s*\|?Depends:\s*([^\s<>]+)\s*$", text, re.M)


def parse_apt_show(text: str) -> dict[str, DebPackage]:
    out: dict[str, DebPackage] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            m = re.match(r"^([A-Za-z0-9-]+):\s*(.*)$", line)
            if m:
                fields.setdefault(m.group(1).lower(), m.group(2).strip())
        if {"package", "version", "filename", "sha256", "size"} <= fields.keys():
            pkg = DebPackage(
                fields["package"],
                fields["version"],
                fields["filename"],
                fields["sha256"],
                int(fields["size"]),
            )
            out.setdefault(pkg.name, pkg)
    return out


def apt(
    args: list[str], apt_dir: Path, log: Path | None, cwd: Path | None = None
) -> proc.Completed:
    exe = args[0]
    return proc.run([exe, *apt_options(apt_dir), *args[1:]], log=log, cwd=cwd, env={"LC_ALL": "C"})


def show(
    names: Sequence[str], apt_dir: Path, log: Path | None, *, suite: str, fix: str
) -> list[DebPackage]:
    """``apt-cache show`` of ``names`` (the candidate versions) in ``names``' order; a name
    the suite does not have is NotAvailable with ``fix``."""
    shown = parse_apt_show(
        apt(["apt-cache", "show", "--no-all-versions", *names], apt_dir, log).output
    )
    missing = [n for n in names if n not in shown]
    if missing:
        raise NotAvailable(f"Debian {suite} lacks {', '.join(missing)}", fix=fix)
    return [shown[n] for n in names]


def apt_update(apt_dir: Path, suite: str, log: Path | None) -> None:
    source = debian_mirror()
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt_dir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    atomic_write_text(apt_dir / "sources.list", private_sources_list(source, suite))
    done = proc.run(
        ["apt-get", *apt_options(apt_dir), "update"], log=log, check=False, env={"LC_ALL": "C"}
    )
    # apt-get update exits 0 on an unreachable mirror (only warns), so look for the index.
    if done.returncode != 0 or not list(
        (apt_dir / "lists").glob(f"*_{suite}_non-free_binary-*_Packages*")
    ):
        raise ToolError(
            f"cannot read the Debian {suite} non-free package index from {source.uri}: "
            + done.output.strip()[-400:],
            fix="check the network / apt's mirror, or use provider pypi (CUDA 13) or system",
        )


def fetch_debs(
    packages: Sequence[DebPackage], apt_dir: Path, downloads: Path, log: Path | None
) -> list[Path]:
    """The .debs in ``downloads``, each checked against the Packages index's sha256.

    apt-get download verifies the hashes itself; we check again because a file
    already in the cache may be a leftover of an interrupted or corrupted run.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    sweep(downloads, "download", "")  # what a killed run left half-downloaded
    wanted = []
    for pkg in packages:
        path = downloads / pkg.deb_name
        if path.exists() and path.stat().st_size == pkg.size and sha256_file(path) == pkg.sha256:
            continue
        path.unlink(missing_ok=True)
        wanted.append(pkg)
    if wanted:
        tmp = scratch_dir(downloads, "download")  # a killed run's is swept
        bar = progress.watch_dir(
            f"downloading {len(wanted)} CUDA .debs",
            tmp,
            total=sum(p.size for p in wanted),
            suffix=".deb",
        )
        try:
            apt(
                ["apt-get", "download", *(f"{p.name}={p.version}" for p in wanted)],
                apt_dir,
                log,
                cwd=tmp,
            )
            for pkg in wanted:
                got = sorted(tmp.glob(f"{pkg.name}_*.deb"))
                if len(got) != 1 or sha256_file(got[0]) != pkg.sha256:
                    raise SourceError(
                        f"{pkg.name} {pkg.version}: not downloaded or sha256 not as indexed",
                        fix="retry; if it persists the mirror is inconsistent: try another mirror",
                    )
                os.replace(got[0], downloads / pkg.deb_name)
        finally:
            bar.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return [downloads / p.deb_name for p in packages]
