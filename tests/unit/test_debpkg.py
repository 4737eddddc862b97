from __future__ import annotations

from pathlib import Path

import pytest

from vllm_matrix.infra import debpkg
from vllm_matrix.infra.errors import NotAvailable

# `apt-cache depends redis-server redis-tools` on bookworm (captured)
DEPENDS = """redis-server
  PreDepends: init-system-helpers
  Depends: lsb-base
    sysvinit-utils
  Depends: redis-tools
redis-tools
  Depends: adduser
  Depends: libatomic1
  Depends: libc6
  Depends: libjemalloc2
  Depends: liblzf1
  Depends: libssl3
  Depends: libsystemd0
    libelogind0
  Breaks: redis-server
  Suggests: ruby-redis
  Replaces: redis-server
"""


def test_lib_depends_leaves_out_the_base_system() -> None:
    assert debpkg.lib_depends(DEPENDS) == [
        "libatomic1",
        "libjemalloc2",
        "liblzf1",
        "libssl3",
        "libsystemd0",
    ]


def test_system_suite(tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
    )
    assert debpkg.system_suite(f) == "bookworm"
    f.write_text("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n")
    assert debpkg.system_suite(f) == "noble"
    f.write_text("ID=fedora\nVERSION_CODENAME=\n")
    with pytest.raises(NotAvailable, match="not a Debian release"):
        debpkg.system_suite(f)
    with pytest.raises(NotAvailable):
        debpkg.system_suite(tmp_path / "none")


def test_unpacked_program_and_library_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "usr" / "bin" / "redis-cli").write_text("")
    u = debpkg.Unpacked(tmp_path, ("redis-tools=7",))
    assert u.program("redis-cli") == tmp_path / "usr" / "bin" / "redis-cli"
    with pytest.raises(NotAvailable, match="redis-server is not in"):
        u.program("redis-server")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/x")
    lib = tmp_path / "usr" / "lib" / "x86_64-linux-gnu"
    assert u.env() == {"LD_LIBRARY_PATH": f"{lib}:/opt/x"}
