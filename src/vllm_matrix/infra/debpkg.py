"""Programs from Debian packages, unpacked into the cache without touching the system.

Like the debian toolkit provider, through ``infra.apt``: a private apt sources list and
state dir under ``<cache>/apt/<suite>`` (the mirror taken from the system's apt sources),
``apt-get download`` of the packages, sha256-checked against the index, and
``dpkg -x`` into ``<cache>/debian/<suite>/<name>-<version>``. Used for servers a test
needs (redis-server for the shared compile cache), in the machine's own Debian release
so the unpacked programs find the system's libraries; the packages' own ``lib*``
dependencies are unpacked beside them (``Unpacked.env()`` puts them on the path).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.infra import apt, proc, programs
from vllm_matrix.infra.cache import atomic_write_text, cache_root, locked, staging_dir
from vllm_matrix.infra.errors import NotAvailable

MARKER = ".vllm-matrix-debs.json"
TRIPLET = "x86_64-linux-gnu"
# Provided by every Debian system (and not relocatable): never unpacked beside a program.
BASE = ("libc6", "libgcc-s1", "libstdc++6")


@dataclass(frozen=True)
class Unpacked:
    root: Path  # dpkg -x target: usr/bin, usr/lib/<triplet>, ...
    packages: tuple[str, ...]  # "name=version"

    def program(self, name: str) -> Path:
        for d in ("usr/bin", "usr/sbin", "bin"):
            p = self.root / d / name
            if p.exists():
                return p
        raise NotAvailable(
            f"{name} is not in the unpacked Debian packages {', '.join(self.packages)}",
            fix="check the package list (`dpkg -c` of the .debs)",
        )

    def env(self) -> dict[str, str]:
        """LD_LIBRARY_PATH with the unpacked libraries (after any already set)."""
        lib = self.root / "usr" / "lib" / TRIPLET
        prev = os.environ.get("LD_LIBRARY_PATH")
        return {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(lib), prev]))}


def system_suite(os_release: Path = Path("/etc/os-release")) -> str:
    """The machine's Debian release (``bookworm``): its packages fit its libraries."""
    try:
        text = os_release.read_text()
    except OSError:
        text = ""
    fields = dict(
        (k, v.strip().strip('"')) for k, _, v in (ln.partition("=") for ln in text.splitlines())
    )
    suite = fields.get("VERSION_CODENAME", "")
    if fields.get("ID") != "debian" and "debian" not in fields.get("ID_LIKE", ""):
        suite = ""
    if not suite:
        raise NotAvailable(
            "this machine is not a Debian release (no VERSION_CODENAME in /etc/os-release)",
            fix="install the program with the system's package manager instead",
        )
    return suite


def lib_depends(apt_depends: str) -> list[str]:
    """The ``lib*`` packages of ``apt-cache depends`` output, less the base system."""
    return [
        d
        for d in dict.fromkeys(apt.parse_depends(apt_depends))
        if d.startswith("lib") and not d.startswith(BASE)
    ]


def installed(name: str) -> bool:
    """Whether the system has ``name`` installed (read from dpkg's status, not changed):
    its library is then used as it is, not an unpacked copy of another build."""
    done = proc.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Status}", name], check=False, timeout=30
    )
    return done.returncode == 0 and done.output.strip() == "installed"


def unpack(
    names: Sequence[str],
    *,
    suite: str | None = None,
    cache: Path | None = None,
    log: Path | None = None,
) -> Unpacked:
    """``names`` and their ``lib*`` dependencies, unpacked together (cached)."""
    for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-query"):
        programs.require(tool)
    suite = suite or system_suite()
    cache = cache or cache_root()
    final = cache / "debian" / suite / "-".join(sorted(names))
    marker = final / MARKER
    if marker.is_file():
        return Unpacked(final, tuple(json.loads(marker.read_text())["packages"]))
    apt_dir = cache / "apt" / suite
    with locked(final):
        if marker.is_file():
            return Unpacked(final, tuple(json.loads(marker.read_text())["packages"]))
        with locked(apt_dir):
            # the private apt state the debian toolkit uses: same sources, state dir, checks.
            apt.apt_update(apt_dir, suite, log)
            deps = apt.apt(["apt-cache", "depends", *names], apt_dir, log).output
            libs = [d for d in lib_depends(deps) if d not in names and not installed(d)]
            wanted = [*names, *libs]
            pkgs = apt.show(
                wanted,
                apt_dir,
                log,
                suite=suite,
                fix="check the package names against `apt-cache search`",
            )
            debs = apt.fetch_debs(pkgs, apt_dir, cache / "downloads" / "debian" / suite, log)
        if final.exists():
            shutil.rmtree(final)
        with staging_dir(final) as staging:
            for deb in debs:
                proc.run(["dpkg", "-x", deb, staging], log=log)
            got = [f"{p.name}={p.version}" for p in pkgs]
            atomic_write_text(staging / MARKER, json.dumps({"packages": got}) + "\n")
        return Unpacked(final, tuple(got))
