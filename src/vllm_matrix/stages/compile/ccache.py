"""ccache for a build: its settings, the shared remote storage (checked before a build),
and its counters."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vllm_matrix.infra import config, proc
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import Finding

CCACHE_MAXSIZE = "20G"
# ccache counters worth reporting (``ccache --print-stats``, ccache >= 4.4).
CCACHE_KEYS = (
    "direct_cache_hit",
    "preprocessed_cache_hit",
    "cache_miss",
    # with a remote storage (ccache >= 4.8 names): hits another machine's compile made
    "local_storage_hit",
    "remote_storage_hit",
    "remote_storage_miss",
    "remote_storage_error",
    "remote_storage_timeout",
    "unsupported_compiler_option",
    "unsupported_source_language",
    "compile_failed",
)


def ccache_env(
    src: Path, cdir: Path, remote: str | None = None, shared_root: Path | None = None
) -> dict[str, str]:
    """The ccache settings of a build of the work copy ``src`` (shared cache ``cdir``).

    ``remote``: ccache's remote storage, shared by many machines (see ``ccache_remote``);
    ``shared_root``: the directory holding everything the compiles include besides the
    system (the cache root: work copies, toolkits, torch envs, FetchContent sources)."""
    basedir = src
    remote_env: dict[str, str] = {}
    if remote:
        remote_env = {
            "CCACHE_REMOTE_STORAGE": remote,
            # ccache identifies the compiler by its mtime by default; on another machine
            # the same nvcc is another file (a PyPI toolkit gets its unzip time): measured,
            # two copies of one compiler with different mtimes never hit each other's
            # results; with "content" they do.
            "CCACHE_COMPILERCHECK": "content",
        }
        # Measured: torch headers under another machine's cache root (another $HOME) made
        # every compile a remote miss with the work copy as base dir, a hit with the
        # cache root (paths under it hash relative to the compile's working directory).
        if shared_root is not None and src.is_relative_to(shared_root):
            basedir = shared_root
    return remote_env | {
        "CCACHE_DIR": str(cdir),
        # Paths under the work copy hash as relative: another work dir of the same tree
        # (a sibling cell, a clean rebuild elsewhere) can hit.
        "CCACHE_BASEDIR": str(basedir),
        # vLLM builds RelWithDebInfo (-g): ccache then hashes the working directory
        # (hash_dir), which differs per work dir, so nothing hit across work dirs
        # (measured: a clean canary rebuild in a new dir, 20 of 35 calls missed). The
        # cost: debug info names the first build's directory.
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": CCACHE_MAXSIZE,
    }


# ccache's remote storage for every machine building the matrix: this variable, else
# matrix.toml's [ccache] remote. "off" turns the matrix's remote off on one machine.
REMOTE_ENV = "VLLM_MATRIX_CCACHE_REMOTE"
REMOTE_CHECK_SECONDS = 2.0
_REMOTE_DEFAULT_PORTS = {"redis": 6379, "http": 80, "https": 443}


def remote_setting(
    matrix_remote: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The remote storage asked for: ``VLLM_MATRIX_CCACHE_REMOTE``, else the matrix's."""
    value = (os.environ if environ is None else environ).get(REMOTE_ENV, "").strip()
    if value.lower() in ("off", "none"):
        return None
    if not value:
        return matrix_remote
    return " ".join(config.check_ccache_remote(u, REMOTE_ENV) for u in value.split())


def redact(url: str) -> str:
    """``redis://user:secret@host`` → ``redis://user:***@host`` (for logs and results)."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", url)


def remote_problem(url: str, timeout: float = REMOTE_CHECK_SECONDS) -> str | None:
    """None when ccache can reach the remote storage ``url``, else why not.

    A TCP connect for redis:// and http(s):// (host and port from the URL, ccache's
    ``|attribute=value`` suffix ignored), the socket for redis+unix://, the directory for
    file://; other schemes are left to ccache."""
    base = url.split("|", 1)[0]
    scheme, _, rest = base.partition("://")
    if scheme == "redis+unix":
        path = rest.split("?", 1)[0]
        return None if Path(path).is_socket() else f"no socket at {path}"
    if scheme == "file":
        d = Path(rest)
        return None if d.is_dir() and os.access(d, os.W_OK) else f"{d} is not a writable dir"
    if scheme not in _REMOTE_DEFAULT_PORTS:
        return None
    hostport = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if hostport.startswith("["):  # [v6]:port
        host, _, port_s = hostport[1:].partition("]")
        port_s = port_s.lstrip(":")
    else:
        host, _, port_s = hostport.partition(":")
    try:
        port = int(port_s) if port_s else _REMOTE_DEFAULT_PORTS[scheme]
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return f"cannot connect to {host}:{port_s or _REMOTE_DEFAULT_PORTS[scheme]} ({exc})"


@dataclass(frozen=True)
class RemoteCache:
    """What a build hands ccache: ``url`` (None: local only) and, when a remote asked for
    could not be reached, the one warning saying so."""

    asked: str | None
    url: str | None
    warning: str | None = None


def ccache_remote(asked: str | None, timeout: float = REMOTE_CHECK_SECONDS) -> RemoteCache:
    """Check the remote storage before a build: an unreachable one is left out (the build
    goes on with the local cache, one warning), so it never fails or stalls a build.
    ccache itself also carries on past remote errors that happen mid-build (it counts
    them as ``remote_storage_error``)."""
    if not asked:
        return RemoteCache(None, None)
    ok, bad = [], []
    for u in asked.split():
        why = remote_problem(u, timeout)
        if why is None:
            ok.append(u)
        else:
            bad.append(f"{redact(u)}: {why}")
    warning = (
        f"ccache remote storage unreachable, building with the local cache only: {'; '.join(bad)}"
        if bad
        else None
    )
    return RemoteCache(asked, " ".join(ok) or None, warning)


def ccache_remote_checked(
    asked: str | None, progress: Callable[[str], None] | None, findings: list[Finding]
) -> RemoteCache:
    """``ccache_remote`` for the build stage: its warning printed once and kept."""
    remote = ccache_remote(asked)
    if remote.warning:
        if progress is not None:
            progress(f"warning: {remote.warning}")
        findings.append(
            Finding(
                "ccache-remote",
                "warn",
                remote.warning,
                f"start the cache server or fix {REMOTE_ENV} / matrix.toml [ccache] remote",
            )
        )
    return remote


def ccache_stats(ccache: str, env: Mapping[str, str]) -> dict[str, int]:
    try:
        out = proc.run([ccache, "--print-stats"], env=dict(env), check=False, timeout=60)
    except MatrixError:
        return {}
    stats: dict[str, int] = {}
    for line in out.output.splitlines():
        k, _, v = line.partition("\t")
        if v.strip().isdigit():
            stats[k.strip()] = int(v)
    return stats


def _ccache_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in CCACHE_KEYS if k in after}
