"""The debian provider: Debian's non-free nvidia-cuda-toolkit (.debs fetched with a
private apt state, unpacked with dpkg -x, rearranged into the standard layout).
"""

from __future__ import annotations

import platform
import re
import shutil
from pathlib import Path

from vllm_matrix.infra import apt, proc, programs, progress
from vllm_matrix.infra.cache import locked
from vllm_matrix.infra.errors import MatrixError, NotAvailable
from vllm_matrix.knowledge import toolchains
from vllm_matrix.stages.toolkit import base
from vllm_matrix.stages.toolkit.base import Toolkit
from vllm_matrix.stages.toolkit.files import move, remove_dangling_symlinks

DEBIAN_TRIPLET = "x86_64-linux-gnu"
# From `apt-cache depends nvidia-cuda-dev`: of its dependencies only these are needed
# to compile and link. The runtime math libraries (cublas, cufft, ... several GB) are
# left out: nvidia-cuda-dev ships link stubs for them in lib/<triplet>/stubs, and at
# run time torch's own nvidia-* wheels provide them. libcu++ (nv/target), CUB and
# Thrust are libcu++-dev/libcub-dev/libthrust-dev: for 12.4 that is CCCL 2.3.2, the
# same files as PyPI's nvidia-cuda-cccl-cu12 12.4.127.post1, so no wheel is needed.
DEBIAN_DEV_DEPENDS = re.compile(
    r"libcudart\d[\d.]*|libnvtoolsext\d+|libcu\+\+-dev|libcub-dev|libthrust-dev"
)
# Static archives kept from nvidia-cuda-dev; the other *_static*.a (2.4 GiB for 12.4)
# are the math libraries' static builds, which no vLLM/torch extension build links.
DEBIAN_KEEP_ARCHIVES = frozenset(
    {"libcudart_static.a", "libcudadevrt.a", "libculibos.a", "libcufilt.a"}
)
# Free disk a cold assembly needs (downloads + unpacked root, measured for 12.4: 1.0 GiB
# of .debs, 0.25 GiB kept), with headroom.
DEBIAN_NEED_GIB = 2.0


def debian_suites() -> dict[str, str]:
    """Which release of the archive carries which toolkit (non-free component): the
    knowledge's [provider.debian] suites."""
    return toolchains.load().providers["debian"].suites


def debian_package_set(cuda_dev_depends: str) -> tuple[str, ...]:
    picked = [d for d in apt.parse_depends(cuda_dev_depends) if DEBIAN_DEV_DEPENDS.fullmatch(d)]
    names = ["nvidia-cuda-toolkit", "nvidia-cuda-dev", *dict.fromkeys(picked)]
    for needed, why in (("libcudart", "libcudart.so"), ("libcu++-dev", "nv/target")):
        if not any(n.startswith(needed) for n in names):
            raise NotAvailable(
                f"nvidia-cuda-dev no longer depends on a {needed}* package ({why})",
                fix="check `apt-cache depends nvidia-cuda-dev` and update DEBIAN_DEV_DEPENDS",
            )
    return tuple(names)


def arrange_debian(extracted: Path, root: Path) -> list[str]:
    """Move Debian's FHS layout (from dpkg -x) into a standard CUDA root; return notes."""
    usr = extracted / "usr"
    tk = usr / "lib" / "nvidia-cuda-toolkit"
    notes = []
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for f in sorted((usr / "bin").iterdir()):
        # usr/bin/nvcc (and compute-sanitizer in 11.8) are shell wrappers with absolute
        # paths into tk; links point into tk too.
        if f.name in ("nvcc", "compute-sanitizer") or f.is_symlink():
            continue
        move(f, bindir / f.name)
    move(tk / "bin" / "nvcc", bindir / "nvcc")
    if (tk / "bin" / "crt").is_dir():
        move(tk / "bin" / "crt", bindir / "crt")
    move(tk / "bin" / "cicc", root / "nvvm" / "bin" / "cicc")
    move(tk / "libdevice", root / "nvvm" / "libdevice")
    notes.append(
        "bin/nvcc is Debian's real nvcc (usr/bin/nvcc is a shell wrapper); "
        "cicc and libdevice moved under nvvm/"
    )
    if (tk / "bin" / "gcc").exists():
        notes.append(
            "Debian's gcc/g++ wrappers (pick the newest supported gcc-N) are not copied: "
            "pass -ccbin for a host gcc newer than max_gcc"
        )
    if (tk / "compute-sanitizer").is_dir():
        move(tk / "compute-sanitizer", root / "compute-sanitizer")
        (bindir / "compute-sanitizer").symlink_to("../compute-sanitizer/compute-sanitizer")
    move(usr / "include", root / "include")
    lib = root / "lib64"
    move(usr / "lib" / DEBIAN_TRIPLET, lib)
    if (usr / "share" / "cmake").is_dir():
        # Their header-search files look in ../../../include: the same depth under lib64/cmake.
        move(usr / "share" / "cmake", lib / "cmake")
    if (lib / "pkgconfig").is_dir():
        shutil.rmtree(lib / "pkgconfig")  # prefix=/usr: would point outside this root
    dropped = [p for p in sorted(lib.glob("*_static*.a")) if p.name not in DEBIAN_KEEP_ARCHIVES]
    if dropped:
        size = sum(p.stat().st_size for p in dropped)
        for p in dropped:
            p.unlink()
        notes.append(
            f"dropped {len(dropped)} static archives of the math libraries "
            f"({size / 2**20:.0f} MiB); "
            "kept libcudart_static.a, libcudadevrt.a, libculibos.a"
        )
    dangling = remove_dangling_symlinks(lib)
    if dangling:
        notes.append(
            f"removed {len(dangling)} dev links into runtime packages not taken "
            f"({', '.join(Path(d).name for d in dangling[:4])}, ...): "
            "lib64/stubs serves the link step"
        )
    base.write_profile(root)
    notes.append(
        "bin/nvcc.profile rewritten relocatable ($(_HERE_)); "
        "Debian's is /etc/nvcc.profile with /usr paths"
    )
    return notes


def debian_versions() -> str:
    return ", ".join(f"{v} ({s})" for v, s in debian_suites().items())


def provide(version: str, cache: Path, log: Path | None) -> Toolkit:
    suite = debian_suites().get(version)
    if suite is None:
        raise NotAvailable(
            f"Debian does not package CUDA {version}",
            fix=f"use a version Debian has: {debian_versions()}; or provider pypi (13.x) / system",
        )
    final = base.toolkits_dir(cache) / f"debian-{version}"

    def build(staging: Path) -> Toolkit:
        if platform.machine() != "x86_64":
            raise NotAvailable(
                f"the debian provider assembles x86_64 toolkits only, this is {platform.machine()}",
                fix="use provider system or conda-prefix",
            )
        for tool in ("apt-get", "apt-cache", "dpkg"):
            programs.require(tool)
        apt_dir = cache / "apt" / suite
        with locked(apt_dir):
            apt.apt_update(apt_dir, suite, log)
            policy = apt.apt(
                ["apt-cache", "show", "--no-all-versions", "nvidia-cuda-toolkit"], apt_dir, log
            ).output
            top = apt.parse_apt_show(policy).get("nvidia-cuda-toolkit")
            if top is None or not top.version.startswith(version + "."):
                have = top.version if top else "none"
                raise NotAvailable(
                    f"Debian {suite} non-free has nvidia-cuda-toolkit {have}, not CUDA {version}",
                    fix="update [provider.debian] suites in knowledge/data/toolchains.toml to the"
                    " suite that has it, or use another provider",
                )
            deps = apt.apt(["apt-cache", "depends", "nvidia-cuda-dev"], apt_dir, log).output
            names = debian_package_set(deps)
            pkgs = apt.show(
                names, apt_dir, log, suite=suite, fix="check the mirror's non-free component"
            )
            debs = apt.fetch_debs(pkgs, apt_dir, cache / "downloads" / "debian" / suite, log)
        extracted = staging / "_deb"
        for deb in progress.iterate(debs, "unpacking CUDA .debs", "debs", lambda p: p.name):
            proc.run(["dpkg", "-x", deb, extracted], log=log)
        notes = [f"debian {suite} non-free: " + ", ".join(f"{p.name} {p.version}" for p in pkgs)]
        notes += arrange_debian(extracted, staging)
        shutil.rmtree(extracted)
        problems = base.layout_problems(staging)
        if problems:
            raise MatrixError(
                f"assembled Debian CUDA {version} is incomplete: {'; '.join(problems)}",
                fix="the package split changed: compare `dpkg -c` of the .debs with arrange_debian",
            )
        return base.inspect_root(staging, "debian", notes, log=log, final_root=final)

    return base.build_cached(final, build, need_gib=DEBIAN_NEED_GIB)
