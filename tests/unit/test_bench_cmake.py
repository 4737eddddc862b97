"""studies/cmake_configure.py (benchmarks/studies/cmake_configure.py's logic): the flag
normalisation both sides go through, and the markdown rendered from its JSON (the prose under
the marker survives a re-render)."""

from __future__ import annotations

from pathlib import Path

from vllm_matrix.studies import cmake_configure as bench


def test_gencode_spellings_meet() -> None:
    names = {"/t": "$TREE"}
    # CMake's CUDA_ARCHITECTURES "80" and the probe's two -gencode pairs are the same thing
    cmake = bench.parse(["--generate-code=arch=compute_80,code=[compute_80,sm_80]"], names, None)
    home = bench.parse(
        ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_80,code=compute_80"],
        names,
        None,
    )
    assert cmake.gencode == home.gencode == ("compute_80->compute_80", "compute_80->sm_80")
    # a different arch is a difference
    other = bench.parse(["-gencode", "arch=compute_90a,code=sm_90a"], names, None)
    assert other.gencode != cmake.gencode


def test_defines_includes_and_the_source_line() -> None:
    names = {"/t": "$TREE", "/cuda": "$CUDA"}
    argv = [
        "-DA=1",
        "-D",
        "B",
        "-I/t/csrc",
        "-isystem",
        "/cuda/include",
        "-x",
        "cu",
        "-c",
        "/t/csrc/a.cu",
        "-o",
        "a.o",
        "-O2",
    ]
    flags = bench.parse(argv, names, "/t/csrc/a.cu")
    assert flags.defines == ("A=1", "B")
    assert flags.includes == ("-I $TREE/csrc", "-isystem $CUDA/include")
    assert flags.other == ("-O2",)  # -x cu, -c SRC, -o OBJ are not flags of the unit


def test_render_keeps_the_prose(tmp_path: Path) -> None:
    cell = {
        "homemade": {"wall_s": 0.1, "cpu_s": 0.05, "units": 2},
        "configure": {
            "cache": {
                "rc": 0,
                "wall_s": 20.0,
                "cpu_s": 10.0,
                "load_before": [1.0, 1.0, 1.0],
                "externals": {},
                "compared": True,
                "units_cmake": 3,
                "units_home": 2,
                "units_both": 2,
                "only_cmake": ["csrc/gen.cu"],
                "only_home": [],
                "agree": {
                    "gencode": 2,
                    "defines": 1,
                    "include_set": 1,
                    "include_order": 1,
                    "other": 2,
                    "all": 1,
                },
                "diff_classes": [
                    {
                        "units": 1,
                        "examples": ["csrc/a.cu"],
                        "diff": {
                            "defines": {"cmake_only": ["X"], "home_only": []},
                            "include_set": {"cmake_only": bench.IMPLICIT, "home_only": []},
                        },
                    }
                ],
            }
        },
    }
    data = {"cells": {"c1": cell}}
    text = bench.render(data)
    assert "| `c1` | cache: none | 0 | 3 | 2 | 1 | 0 | 2/2 | 1/2 | 1/2 | 2/2 | 1/2 |" in text
    markdown = tmp_path / "x.md"
    markdown.write_text("old tables\n" + bench.KEEP_MARK + "\nmy words\n")
    bench.write_md(data, markdown)
    out = markdown.read_text()
    assert "old tables" not in out and out.endswith(bench.KEEP_MARK + "\nmy words\n")


def test_cmake_output_lines_name_roots_not_this_machine(tmp_path: Path) -> None:
    """CMake's error lines go through infra.portable with the run's roots: the longest root
    wins ($CUDA inside the cache), the home dir becomes ~, a temp dir $TMPDIR."""
    home = str(Path.home())
    names = {"/c": "$CACHE_ROOT", "/c/toolkits/debian-12.4": "$CUDA", "/t": "$TREE"}
    lines = [
        "CMake Error at /t/CMakeLists.txt:12 (find_package):",
        "  /c/toolkits/debian-12.4/bin/nvcc -I/c/envs/x",
        f"  sys.path: {home}/.local/lib:/tmp/build-1/deps",
    ]
    assert bench.portable_lines(lines, names) == [
        "CMake Error at $TREE/CMakeLists.txt:12 (find_package):",
        "  $CUDA/bin/nvcc -I$CACHE_ROOT/envs/x",
        "  sys.path: ~/.local/lib:$TMPDIR/build-1/deps",
    ]
