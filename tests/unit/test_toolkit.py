"""Fast tests of the toolkit providers on small fixture trees (no network, no real nvcc)."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from vllm_matrix.infra import index
from vllm_matrix.infra.errors import ConfigError, MatrixError, NotAvailable, SourceError
from vllm_matrix.stages import toolkit

# What Debian 12.4 (trixie) prints; paths as in its nvcc.profile.
DEBIAN_PROFILE = """\
NVVMIR_LIBRARY_DIR = /usr/lib/nvidia-cuda-toolkit/libdevice
PATH\t\t+= /usr/lib/nvidia-cuda-toolkit/bin:
LIBRARIES\t=+ $(_SPACE_) -L/usr/lib/x86_64-linux-gnu/stubs -L/usr/lib/x86_64-linux-gnu
"""
WHEEL_PROFILE = """\
TOP              = $(_HERE_)/..
CICC_PATH        = $(TOP)/nvvm/bin
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH += $(TOP)/lib:
PATH            += $(CICC_PATH):$(_HERE_):
INCLUDES        +=  "-I$(TOP)/$(_TARGET_DIR_)/include" $(_SPACE_)
SYSTEM_INCLUDES +=  "-isystem" "$(TOP)/$(_TARGET_DIR_)/include/cccl" $(_SPACE_)
LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/$(_TARGET_DIR_)/lib$(_TARGET_SIZE_)/stubs"
"""
NVCC_124 = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2024 NVIDIA Corporation
Built on Thu_Mar_28_02:18:24_PDT_2024
Cuda compilation tools, release 12.4, V12.4.131
Build cuda_12.4.r12.4/compiler.34097967_0
"""
HOST_CONFIG_124 = """
#if defined(__GNUC__)

#if __GNUC__ > 13

#error -- unsupported GNU version! gcc versions later than 13 are not supported!

#endif /* __GNUC__ > 13 */
"""
DEPENDS_124 = """nvidia-cuda-dev
  Depends: libcudart12
  Depends: libaccinj64-12.4
  Depends: libnvtoolsext1
  Depends: libnvvm4
  Depends: libcublas12
  Depends: libcu++-dev
  Depends: libcub-dev
  Depends: libthrust-dev
 |Depends: libcuda1
 |Depends: <libcuda.so.1>
    libcuda1
  Depends: <libcuda-12.4-1>
    libcuda1
  Breaks: libcuda1
  Recommends: libgl-dev
"""


def touch(path: Path, text: str = "x", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def fake_nvcc(bindir: Path, release: str = "12.4", full: str = "12.4.131") -> Path:
    """A shell script answering --version and --list-gpu-arch like nvcc does."""
    return touch(
        bindir / "nvcc",
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --version) echo "Cuda compilation tools, release {release}, V{full}";;\n'
        '  --list-gpu-arch) printf "compute_90\\ncompute_50\\ncompute_75\\n";;\n'
        "esac\n",
        0o755,
    )


# --------------------------------------------------------------------------- parsing


def test_parse_nvcc_version() -> None:
    assert toolkit.parse_nvcc_version(NVCC_124) == ("12.4", "12.4.131")


def test_parse_nvcc_version_garbage_says_what_it_saw() -> None:
    with pytest.raises(MatrixError) as exc:
        toolkit.parse_nvcc_version("segfault")
    assert "segfault" in str(exc.value.fix)


def test_parse_arch_list_sorts_numerically() -> None:
    # nvcc 13.0 prints 110 before 103.
    out = "compute_75\ncompute_90\ncompute_100\ncompute_110\ncompute_103\ncompute_120\n"
    assert toolkit.parse_arch_list(out) == ("7.5", "9.0", "10.0", "10.3", "11.0", "12.0")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (HOST_CONFIG_124, 13),
        ("#if defined(__GNUC__)\n#if __GNUC__ > 15\n#error\n#endif\n", 15),
        ("#if __clang_major__ >= 18\n#endif\n", None),
    ],
)
def test_parse_max_gcc(text: str, want: int | None) -> None:
    assert toolkit.parse_max_gcc(text) == want


def test_toolkit_json_roundtrip() -> None:
    tk = toolkit.Toolkit(
        "debian", "12.4", "12.4.131", Path("/r"), Path("/r/bin/nvcc"), ("5.0", "9.0"), 13, ("n",)
    )
    data = json.loads(json.dumps(tk.to_json()))
    assert data["archs"] == ["5.0", "9.0"] and data["root"] == "/r"
    assert toolkit.Toolkit.from_json(data) == tk


# --------------------------------------------------------------------------- profile


def test_written_profile_is_relocatable_and_standard() -> None:
    text = toolkit.profile_text()
    assert toolkit.profile_is_relocatable(text)
    assert "NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice" in text
    assert '"-I$(TOP)/include"' in text
    assert '"-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"' in text
    assert "include/cccl" not in text
    assert '"-isystem" "$(TOP)/include/cccl"' in toolkit.profile_text(cccl_subdir=True)


def test_relocatable_check() -> None:
    assert not toolkit.profile_is_relocatable(DEBIAN_PROFILE)
    assert toolkit.profile_is_relocatable(WHEEL_PROFILE)
    assert not toolkit.profile_is_relocatable(
        "PATH += $(_HERE_):\nINCLUDES += -I/opt/cuda/include\n"
    )


def test_write_profile_replaces_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc.profile").symlink_to("/etc/nvcc.profile")
    (tmp_path / "include" / "cccl").mkdir(parents=True)
    toolkit.write_profile(tmp_path)
    profile = tmp_path / "bin" / "nvcc.profile"
    assert not profile.is_symlink()
    assert "include/cccl" in profile.read_text()


# --------------------------------------------------------------------------- provide()


def test_unknown_provider_did_you_mean() -> None:
    with pytest.raises(ConfigError) as exc:
        toolkit.provide("pypy", "13.0")
    assert "pypy" in exc.value.message
    assert "did you mean 'pypi'" in str(exc.value.fix)


def test_unknown_provider_far_off_lists_all() -> None:
    with pytest.raises(ConfigError) as exc:
        toolkit.provide("homebrew", "13.0")
    assert "conda-prefix" in str(exc.value.fix)


@pytest.mark.parametrize("bad", ["12", "12.4.1", "cu124", ""])
def test_version_must_be_major_minor(bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        toolkit.provide("debian", bad)
    assert exc.value.fix


@pytest.mark.parametrize("version", ["12.4", "12.8", "11.8"])
def test_pypi_refuses_cuda_12_with_the_reason(version: str, tmp_path: Path) -> None:
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("pypi", version, cache=tmp_path)
    assert "ptxas only" in exc.value.message and "no nvcc" in exc.value.message
    assert 'provider = "debian"' in str(exc.value.fix) and "12.4" in str(exc.value.fix)
    assert not (tmp_path / "toolkits").exists()


def test_path_only_for_existing_installs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        toolkit.provide("debian", "12.4", path=tmp_path)
    assert "system" in str(exc.value.fix)


def test_debian_unknown_version_lists_what_it_has(tmp_path: Path) -> None:
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("debian", "12.8", cache=tmp_path)
    assert "12.4 (trixie)" in str(exc.value.fix) and "11.8 (bookworm)" in str(exc.value.fix)


# --------------------------------------------------------------------------- cache


def fake_toolkit(root: Path, provider: str = "pypi") -> toolkit.Toolkit:
    return toolkit.Toolkit(
        provider, "13.0", "13.0.88", root, root / "bin" / "nvcc", ("7.5",), 15, ()
    )


def test_build_cached_builds_once(tmp_path: Path) -> None:
    final = toolkit.toolkits_dir(tmp_path) / "pypi-13.0"
    calls = []

    def build(staging: Path) -> toolkit.Toolkit:
        calls.append(staging)
        assert staging != final and not final.exists()
        fake_nvcc(staging / "bin")
        return fake_toolkit(final)

    first = toolkit._build_cached(final, build)
    second = toolkit._build_cached(final, build)
    assert first == second and len(calls) == 1
    assert (final / toolkit.MARKER).is_file() and (final / "bin" / "nvcc").is_file()
    assert [p.name for p in final.parent.iterdir() if p.name.endswith(".partial")] == []


def test_build_cached_redoes_a_partial_or_stale_dir(tmp_path: Path) -> None:
    final = tmp_path / "pypi-13.0"
    touch(final / "bin" / "half-copied")  # no marker: an interrupted older run

    def build(staging: Path) -> toolkit.Toolkit:
        fake_nvcc(staging / "bin")
        return fake_toolkit(final)

    toolkit._build_cached(final, build)
    assert not (final / "bin" / "half-copied").exists()
    marker = final / toolkit.MARKER
    data = json.loads(marker.read_text())
    data["format"] = toolkit.ASSEMBLY_FORMAT - 1
    marker.write_text(json.dumps(data))
    assert toolkit._cached(final) is None  # an older assembly format is rebuilt
    (final / "bin" / "nvcc").unlink()
    marker.write_text(json.dumps({**data, "format": toolkit.ASSEMBLY_FORMAT}))
    assert toolkit._cached(final) is None  # nvcc gone: not usable


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "pypi-13.0"

    def build(staging: Path) -> toolkit.Toolkit:
        touch(staging / "bin" / "nvcc")
        raise NotAvailable("no network", fix="retry")

    with pytest.raises(NotAvailable):
        toolkit._build_cached(final, build)
    assert not final.exists()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


# --------------------------------------------------------------------------- debian


def test_debian_mirror_from_deb822_sources(tmp_path: Path) -> None:
    touch(
        tmp_path / "sources.list.d" / "debian.sources",
        "Types: deb\n"
        "# a comment\n"
        "URIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.invalid/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )
    src = toolkit.debian_mirror(tmp_path)
    assert src.uri == "http://mirror.invalid/debian"
    assert src.signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    text = toolkit.private_sources_list(src, "trixie")
    assert text == (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.invalid/debian trixie main contrib non-free\n"
    )


def test_debian_mirror_from_one_line_sources(tmp_path: Path) -> None:
    touch(
        tmp_path / "sources.list",
        "# deb http://old.invalid/debian buster main\n"
        "deb http://sec.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://one.invalid/debian bookworm main\n",
    )
    assert toolkit.debian_mirror(tmp_path) == toolkit.AptSource("http://one.invalid/debian", None)


def test_debian_mirror_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_MATRIX_DEBIAN_MIRROR", raising=False)
    with pytest.raises(NotAvailable) as exc:
        toolkit.debian_mirror(tmp_path)
    assert "VLLM_MATRIX_DEBIAN_MIRROR" in str(exc.value.fix)


def test_apt_options_confine_apt(tmp_path: Path) -> None:
    opts = toolkit.apt_options(tmp_path)
    pairs = dict(o.split("=", 1) for o in opts[1::2])
    assert pairs["Dir::Etc::sourceparts"] == "/dev/null"
    assert pairs["Dir::State::Lists"] == str(tmp_path / "lists")
    assert pairs["Dir::Cache"] == str(tmp_path / "cache")
    assert all(flag == "-o" for flag in opts[0::2])


def test_debian_package_set_from_depends() -> None:
    got = toolkit.debian_package_set(DEPENDS_124)
    assert got == (
        "nvidia-cuda-toolkit",
        "nvidia-cuda-dev",
        "libcudart12",
        "libnvtoolsext1",
        "libcu++-dev",
        "libcub-dev",
        "libthrust-dev",
    )


def test_debian_package_set_needs_libcu() -> None:
    with pytest.raises(NotAvailable) as exc:
        toolkit.debian_package_set("  Depends: libcudart12\n")
    assert "libcu++-dev" in exc.value.message


def test_parse_apt_show() -> None:
    text = (
        "Package: libcudart12\nVersion: 12.4.127~12.4.1-2\nSize: 176216\n"
        "Filename: pool/non-free/n/nvidia-cuda-toolkit/libcudart12_12.4.127~12.4.1-2_amd64.deb\n"
        "SHA256: " + "ab" * 32 + "\nDescription: x\n\n"
        "Package: libcub-dev\nVersion: 2.3.2-2\nSize: 3\nFilename: pool/main/c/cub.deb\n"
        "SHA256: " + "cd" * 32 + "\n"
    )
    got = toolkit.parse_apt_show(text)
    assert got["libcudart12"].deb_name == "libcudart12_12.4.127~12.4.1-2_amd64.deb"
    assert got["libcudart12"].size == 176216 and got["libcub-dev"].sha256 == "cd" * 32


def _deb(tmp_path: Path, name: str, data: bytes) -> toolkit.DebPackage:
    import hashlib

    return toolkit.DebPackage(
        name, "1.0-1", f"pool/x/{name}_1.0-1_amd64.deb", hashlib.sha256(data).hexdigest(), len(data)
    )


def test_fetch_debs_reuses_good_and_refetches_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = _deb(tmp_path, "good", b"good"), _deb(tmp_path, "bad", b"bad!")
    downloads = tmp_path / "dl"
    touch(downloads / good.deb_name, "good")
    touch(downloads / bad.deb_name, "ba")  # truncated by an interrupted run
    fetched: list[list[str]] = []

    def fake_apt(args: list[str], apt_dir: Path, log: Path | None, cwd: Path | None = None) -> None:
        fetched.append(args)
        assert cwd is not None
        touch(cwd / "bad_1.0-1_amd64.deb", "bad!")

    monkeypatch.setattr(toolkit, "_apt", fake_apt)
    paths = toolkit._fetch_debs([good, bad], tmp_path / "apt", downloads, None)
    assert fetched == [["apt-get", "download", "bad=1.0-1"]]
    assert [p.read_text() for p in paths] == ["good", "bad!"]
    assert sorted(p.name for p in downloads.iterdir()) == sorted([good.deb_name, bad.deb_name])


def test_fetch_debs_rejects_a_hash_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = _deb(tmp_path, "p", b"right")

    def fake_apt(args: list[str], apt_dir: Path, log: Path | None, cwd: Path | None = None) -> None:
        assert cwd is not None
        touch(cwd / "p_1.0-1_amd64.deb", "wrong")

    monkeypatch.setattr(toolkit, "_apt", fake_apt)
    with pytest.raises(SourceError) as exc:
        toolkit._fetch_debs([pkg], tmp_path / "apt", tmp_path / "dl", None)
    assert "sha256" in exc.value.message and exc.value.fix
    assert not (tmp_path / "dl" / pkg.deb_name).exists()


def debian_tree(root: Path) -> Path:
    """The shape of dpkg -x of Debian's CUDA 12.4 packages, with tiny files."""
    usr = root / "usr"
    tk = usr / "lib" / "nvidia-cuda-toolkit"
    lib = usr / "lib" / "x86_64-linux-gnu"
    touch(root / "etc" / "nvcc.profile", DEBIAN_PROFILE)
    touch(usr / "bin" / "nvcc", "#!/bin/sh\nexec /usr/lib/nvidia-cuda-toolkit/bin/nvcc\n", 0o755)
    for tool in ("ptxas", "fatbinary", "nvlink", "cudafe++", "cuobjdump", "bin2c"):
        touch(usr / "bin" / tool, "elf", 0o755)
    (usr / "bin" / "compute-sanitizer").symlink_to(
        "../lib/nvidia-cuda-toolkit/compute-sanitizer/compute-sanitizer"
    )
    touch(tk / "bin" / "nvcc", "real nvcc", 0o755)
    touch(tk / "bin" / "cicc", "cicc", 0o755)
    touch(tk / "bin" / "gcc", "#!/bin/sh\n", 0o755)
    touch(tk / "bin" / "crt" / "link.stub")
    (tk / "bin" / "nvcc.profile").symlink_to("/etc/nvcc.profile")
    touch(tk / "libdevice" / "libdevice.10.bc")
    touch(tk / "compute-sanitizer" / "compute-sanitizer", "cs", 0o755)
    touch(usr / "include" / "cuda_runtime.h")
    touch(usr / "include" / "crt" / "host_config.h", HOST_CONFIG_124)
    touch(usr / "include" / "nv" / "target")
    touch(usr / "include" / "cuda" / "std" / "atomic")
    touch(lib / "libcudart.so.12.4.127")
    (lib / "libcudart.so.12").symlink_to("libcudart.so.12.4.127")
    (lib / "libcudart.so").symlink_to("libcudart.so.12")
    (lib / "libcublas.so").symlink_to("libcublas.so.12")  # libcublas12 is not taken
    touch(lib / "libcudart_static.a")
    touch(lib / "libcudadevrt.a")
    touch(lib / "libcublasLt_static.a", "big")
    touch(lib / "stubs" / "libcublas.so")
    touch(lib / "stubs" / "libcuda.so")
    touch(lib / "pkgconfig" / "cuda.pc", "prefix=/usr\n")
    touch(usr / "share" / "cmake" / "libcudacxx" / "libcudacxx-header-search.cmake")
    touch(usr / "lib" / "cuda" / "include" / "cuda.h")
    return root


def test_arrange_debian_gives_the_standard_layout(tmp_path: Path) -> None:
    extracted = debian_tree(tmp_path / "deb")
    root = tmp_path / "root"
    notes = toolkit.arrange_debian(extracted, root)
    assert toolkit.layout_problems(root) == []
    assert (root / "bin" / "nvcc").read_text() == "real nvcc"  # not the /usr/bin wrapper
    assert os.access(root / "bin" / "nvcc", os.X_OK)
    assert (root / "nvvm" / "bin" / "cicc").is_file()
    assert (root / "nvvm" / "libdevice" / "libdevice.10.bc").is_file()
    assert (root / "bin" / "crt" / "link.stub").is_file()
    assert not (root / "bin" / "gcc").exists()
    assert (root / "bin" / "compute-sanitizer").resolve() == (
        root / "compute-sanitizer" / "compute-sanitizer"
    ).resolve()
    assert (root / "lib64" / "libcudart.so").resolve().name == "libcudart.so.12.4.127"
    assert not (root / "lib64" / "libcublas.so").is_symlink()  # dangling link removed
    assert (root / "lib64" / "stubs" / "libcublas.so").is_file()  # the stub stays
    assert not (root / "lib64" / "libcublasLt_static.a").exists()
    assert (root / "lib64" / "libcudart_static.a").exists()
    assert not (root / "lib64" / "pkgconfig").exists()
    assert (root / "lib64" / "cmake" / "libcudacxx" / "libcudacxx-header-search.cmake").exists()
    profile = (root / "bin" / "nvcc.profile").read_text()
    assert toolkit.profile_is_relocatable(profile) and "/usr" not in profile
    assert toolkit.parse_max_gcc((root / "include" / "crt" / "host_config.h").read_text()) == 13
    assert any("static archives" in n for n in notes)
    assert any("libcublas.so" in n for n in notes)


# --------------------------------------------------------------------------- pypi


def make_wheel(path: Path, files: dict[str, tuple[str, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, (text, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, text)
    return path


def test_unzip_wheel_keeps_exec_bits(tmp_path: Path) -> None:
    whl = make_wheel(
        tmp_path / "w.whl",
        {"nvidia/cu13/bin/nvcc": ("elf", 0o755), "nvidia/cu13/include/a.h": ("h", 0o644)},
    )
    toolkit.unzip_wheel(whl, tmp_path / "out")
    assert os.access(tmp_path / "out" / "nvidia" / "cu13" / "bin" / "nvcc", os.X_OK)
    assert not os.access(tmp_path / "out" / "nvidia" / "cu13" / "include" / "a.h", os.X_OK)


def test_unzip_wheel_refuses_path_escape(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path / "w.whl", {"../evil": ("x", 0o644)})
    with pytest.raises(SourceError):
        toolkit.unzip_wheel(whl, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_arrange_pypi(tmp_path: Path) -> None:
    unpacked = tmp_path / "u"
    cu = unpacked / "nvidia" / "cu13"
    touch(cu / "bin" / "nvcc.profile", WHEEL_PROFILE)
    fake_nvcc(cu / "bin", "13.0", "13.0.88")
    touch(cu / "nvvm" / "bin" / "cicc", "c", 0o755)
    touch(cu / "nvvm" / "libdevice" / "libdevice.10.bc")
    touch(cu / "include" / "cuda_runtime.h")
    touch(cu / "include" / "crt" / "host_config.h", "#if __GNUC__ > 15\n#endif\n")
    touch(cu / "include" / "nv" / "target")
    touch(cu / "lib" / "libcudart.so.13")
    touch(cu / "lib" / "libcudart_static.a")
    touch(unpacked / "nvidia_cuda_nvcc-13.0.88.dist-info" / "RECORD")
    root = tmp_path / "root"
    root.mkdir()
    notes = toolkit.arrange_pypi(unpacked, root)
    assert toolkit.layout_problems(root) == []
    assert (root / "lib64").is_symlink() and os.readlink(root / "lib64") == "lib"
    assert os.readlink(root / "lib" / "libcudart.so") == "libcudart.so.13"
    assert (root / "bin" / "nvcc.profile").read_text() == WHEEL_PROFILE  # already relocatable
    assert (root / "dist-info" / "nvidia_cuda_nvcc-13.0.88.dist-info" / "RECORD").exists()
    assert any("lib64 -> lib" in n for n in notes)
    tk = toolkit.inspect_root(root, "pypi", notes)
    assert (tk.version, tk.full_version, tk.archs, tk.max_gcc) == (
        "13.0",
        "13.0.88",
        ("5.0", "7.5", "9.0"),
        15,
    )


def _file(version: str, filename: str, yanked: bool = False) -> index.IndexFile:
    return index.IndexFile(
        filename=filename,
        url=f"https://files.invalid/{filename}",
        sha256="0" * 64,
        version=Version(version),
        kind="wheel",
        yanked=yanked,
    )


def test_pypi_pick_newest_final_x86_wheel_of_the_minor() -> None:
    files = [
        _file("13.0.48", "n-13.0.48-py3-none-manylinux2014_x86_64.whl"),
        _file("13.0.88", "n-13.0.88-py3-none-manylinux2014_x86_64.whl"),
        _file("13.0.99", "n-13.0.99-py3-none-manylinux2014_aarch64.whl"),
        _file("13.1.80", "n-13.1.80-py3-none-manylinux2014_x86_64.whl"),
        _file("13.0.100rc1", "n-13.0.100rc1-py3-none-manylinux2014_x86_64.whl"),
        _file("13.0.101", "n-13.0.101-py3-none-manylinux2014_x86_64.whl", yanked=True),
    ]
    got = toolkit.pypi_pick(files, 13, 0)
    assert got is not None and str(got.version) == "13.0.88"
    assert toolkit.pypi_pick(files, 13, 2) is None
    assert toolkit.pypi_versions(files) == ["13.0", "13.1"]


# --------------------------------------------------------------------------- system


def test_system_candidates_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert toolkit.system_candidates("12.4", None) == [
        tmp_path,
        Path("/usr/local/cuda-12.4"),
        Path("/usr/local/cuda"),
    ]
    assert toolkit.system_candidates("12.4", tmp_path / "x") == [tmp_path / "x"]


def test_system_explicit_path(tmp_path: Path) -> None:
    fake_nvcc(tmp_path / "bin")
    tk = toolkit.provide("system", "12.4", path=tmp_path)
    assert (tk.root, tk.full_version, tk.archs) == (tmp_path, "12.4.131", ("5.0", "7.5", "9.0"))
    assert any("layout gaps" in n for n in tk.notes)
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("system", "12.8", path=tmp_path)
    assert f"{tmp_path} (CUDA 12.4)" in exc.value.message


def test_system_missing_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("system", "12.4", path=tmp_path / "nope")
    assert f"{tmp_path / 'nope'} (no bin/nvcc)" in exc.value.message
    assert "CUDA_HOME" in str(exc.value.fix)


# --------------------------------------------------------------------------- conda


def conda_env(prefix: Path) -> Path:
    target = prefix / "targets" / "x86_64-linux"
    fake_nvcc(prefix / "bin")
    touch(prefix / "bin" / "python", "", 0o755)
    touch(prefix / "bin" / "ptxas", "", 0o755)
    touch(prefix / "nvvm" / "bin" / "cicc", "", 0o755)
    touch(target / "include" / "cuda_runtime.h")
    touch(target / "include" / "crt" / "host_config.h", HOST_CONFIG_124)
    touch(target / "lib" / "libcudart.so.12")
    (target / "lib" / "libcudart.so").symlink_to("libcudart.so.12")
    return prefix


def test_conda_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = conda_env(tmp_path / "env")
    before = sorted(str(p) for p in prefix.rglob("*"))
    monkeypatch.setenv("CONDA_PREFIX", str(prefix))
    tk = toolkit.provide("conda-prefix", "12.4", cache=tmp_path / "cache")
    view = tk.root
    assert view.parent == toolkit.toolkits_dir(tmp_path / "cache")
    assert (view / "bin" / "nvcc").resolve() == prefix / "bin" / "nvcc"
    assert not (view / "bin" / "python").exists()
    assert (view / "include" / "cuda_runtime.h").exists()
    assert (view / "lib64" / "libcudart.so").exists()
    assert toolkit.profile_is_relocatable((view / "bin" / "nvcc.profile").read_text())
    assert tk.max_gcc == 13
    assert sorted(str(p) for p in prefix.rglob("*")) == before  # the env is untouched
    assert toolkit.provide("conda-prefix", "12.4", cache=tmp_path / "cache", path=prefix) == tk


def test_conda_wrong_version_and_missing_parts(tmp_path: Path) -> None:
    prefix = conda_env(tmp_path / "env")
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("conda-prefix", "12.8", cache=tmp_path / "c", path=prefix)
    assert "has CUDA 12.4" in exc.value.message
    (prefix / "targets" / "x86_64-linux" / "include" / "cuda_runtime.h").unlink()
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("conda-prefix", "12.4", cache=tmp_path / "c", path=prefix)
    assert "cuda-cudart-dev" in exc.value.message


def test_conda_no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    with pytest.raises(NotAvailable) as exc:
        toolkit.provide("conda-prefix", "12.4", cache=tmp_path)
    assert "CONDA_PREFIX" in exc.value.message and exc.value.fix
