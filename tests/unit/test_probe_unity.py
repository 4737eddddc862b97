"""probe/unity.py: which units' front ends share a translation unit, the generated file, and
what makes sharing unsound (fixture files; the stage end to end is in test_probe_stage.py)."""

from __future__ import annotations

from pathlib import Path

from vllm_matrix.stages.probe import unity
from vllm_matrix.stages.probe.dryrun import Step

GCC = ["gcc", "-std=c++17", "-D__CUDA_ARCH_LIST__=900", "-E", "-x", "c++", "-D", "NDEBUG"]


def steps(src: Path, keep: Path, own: list[str], arch_list: str = "900") -> list[Step]:
    stem = src.name.rsplit(".", 1)[0]
    ii = f"{keep}/{stem}.cpp4.ii"
    gcc = [a.replace("900", arch_list) for a in GCC]
    return [
        Step("host-preprocess", (*gcc, *own, str(src), "-o", ii)),
        Step(
            "front-end",
            (
                "cudafe++",
                "--orig_src_file_name",
                str(src),
                "--gen_c_file_name",
                f"{keep}/{stem}.cudafe1.cpp",
                "--stub_file_name",
                f"{stem}.cudafe1.stub.c",
                ii,
            ),
        ),
        Step("device-preprocess", ("gcc", "-D__CUDA_ARCH__=900", "-E", str(src))),
    ]


def plan_of(
    tmp: Path,
    name: str,
    flags: list[str],
    text: str = "",
    arch_list: str = "900",
    closure: tuple[str, ...] = (),
) -> unity.Plan:
    src = tmp / "tree" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(text or f"// {name}\n")
    keep = tmp / "work" / "tmp" / name.replace("/", "__")
    # nvcc hands the unit's -D flags to gcc as "-D" "NAME=V"
    own = [x for f in flags if f.startswith("-D") for x in ("-D", f[2:])]
    p = unity.plan(
        src,
        keep,
        ["-O2", *flags],
        steps(src, keep, own, arch_list),
        {"PATH": "/x"},
        [tmp / "tree" / c for c in closure],
    )
    assert p is not None
    return p


def test_parse_and_drop_defines() -> None:
    rest, defs, plain = unity.parse_defines(["-O2", "-DA=1", "-D", "B", "-DC=x y", "-I/i"])
    assert rest == ["-O2", "-I/i"] and defs == {"A": "1", "B": "1", "C": "x y"} and plain
    assert not unity.parse_defines(["-DA", "-UA"])[2]  # order matters: not plain
    assert not unity.parse_defines(["-DA=1", "-DA=2"])[2]
    assert unity.drop_defines(["-O2", "-DA=1", "-D", "B=2", "-DC"], {"A", "B"}) == ["-O2", "-DC"]


def test_units_of_one_target_and_arch_share_one_translation_unit(tmp_path: Path) -> None:
    # the same commands but for the source: sm_90 and sm_90a units have the same host front
    # end (gencode reaches only device code); differing own -D flags are #defined per unit
    a = plan_of(tmp_path, "a.cu", ["-DTORCH_EXTENSION_NAME=_C", "-D_C_EXPORTS"])
    b = plan_of(tmp_path, "sub/b.cu", ["-DTORCH_EXTENSION_NAME=_C", "-D_C_EXPORTS"])
    c = plan_of(tmp_path, "moe/c.cu", ["-DTORCH_EXTENSION_NAME=_moe_C", "-D_moe_C_EXPORTS"])
    (g,) = unity.groups([a, b, c])
    assert g == [a, b, c]
    group = unity.Group(g)
    assert group.varying() == ["TORCH_EXTENSION_NAME", "_C_EXPORTS", "_moe_C_EXPORTS"]
    text = group.source().splitlines()
    i = text.index(f'#include "{c.path}"')
    assert text[i - 2 : i] == ["#define TORCH_EXTENSION_NAME _moe_C", "#define _moe_C_EXPORTS 1"]
    assert text[i + 1 : i + 3] == ["#undef TORCH_EXTENSION_NAME", "#undef _moe_C_EXPORTS"]
    assert "#define _C_EXPORTS 1" in text[: text.index(f'#include "{a.path}"')]
    # the shared file's flags: the differing ones go, the common ones stay
    assert group.flags(["-O2", "-DTORCH_EXTENSION_NAME=_C", "-DX=1", "-D", "_C_EXPORTS"]) == [
        "-O2",
        "-DX=1",
    ]
    tree = tmp_path / "tree"
    assert group.name(tree) == unity.Group([a, b, c]).name(tree) != unity.Group([a, b]).name(tree)
    assert str(tree) not in group.name(tree) and group.name(tree).startswith("unity-3-")


def test_what_is_not_a_units_own_flag_separates(tmp_path: Path) -> None:
    # nvcc's own __CUDA_ARCH_LIST__ differs (sm_80 vs sm_90): it cannot be #defined per
    # unit, so the units run in separate translation units
    a = plan_of(tmp_path, "a.cu", ["-DX=1"])
    b = plan_of(tmp_path, "b.cu", ["-DX=1"], arch_list="800")
    c = plan_of(tmp_path, "c.cu", ["-DX=1"])
    assert unity.groups([a, b, c]) == [[a, c], [b]]
    # a split the shared file's check asked for: by the macro's value
    d = plan_of(tmp_path, "d.cu", ["-DX=2"])
    assert unity.groups([a, c, d]) == [[a, c, d]]
    assert unity.groups([a, c, d], split={"X"}) == [[a, c], [d]]


def test_a_unit_that_changes_a_command_line_macro_is_not_grouped(tmp_path: Path) -> None:
    src = tmp_path / "u.cu"
    src.write_text("#undef NDEBUG\n#include <cassert>\n")
    keep = tmp_path / "keep"
    assert unity.plan(src, keep, [], steps(src, keep, []), {}) is None
    src.write_text("// fine\n")
    assert unity.plan(src, keep, [], steps(src, keep, []), {}) is not None
    assert unity.plan(src, keep, ["-UX"], steps(src, keep, ["-UX"]), {}) is None
    # a pipeline without gcc -E then cudafe++ first (not nvcc's front end as known)
    odd = [Step("front-end", ("cudafe++", str(src)))]
    assert unity.plan(src, keep, [], odd, {}) is None


def test_headers_decide_whether_sharing_is_sound(tmp_path: Path) -> None:
    a = plan_of(
        tmp_path,
        "a.cu",
        ["-DTORCH_EXTENSION_NAME=_C"],
        '#define NS ns_a\n#include "k.h"\n',
        closure=("k.h",),
    )
    b = plan_of(tmp_path, "b.cu", ["-DTORCH_EXTENSION_NAME=_moe_C"], "#define LOCAL 1\n")
    g = unity.Group([a, b])
    hdr = tmp_path / "tree" / "k.h"
    hdr.write_text("namespace NS {}\n")
    torch_h = tmp_path / "torch.h"
    torch_h.write_text("// TORCH_EXTENSION_NAMES is another word\n")
    # NS is a's own macro, in a header only a includes: sound
    assert unity.clashes(g, [a.path, b.path, hdr, torch_h]) == (set(), set())
    # b reaches the header too: it would see a's NS (the header is read once): a alone
    b.closure = frozenset({hdr})
    assert unity.clashes(g, [hdr]) == (set(), {a.path})
    # a header outside the tree that mentions a unit's macro: that unit alone
    torch_h.write_text("#ifdef LOCAL\n#endif\n")
    assert unity.clashes(g, [torch_h]) == (set(), {b.path})
    # a differing flag that a header reads: split by its value
    torch_h.write_text("PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)\n")
    assert unity.clashes(g, [torch_h]) == ({"TORCH_EXTENSION_NAME"}, set())


def test_files_read_are_the_line_markers(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    h = tmp_path / "inc" / "h.h"
    h.write_text("")
    ii = tmp_path / "x.ii"
    ii.write_text(
        f'# 1 "{tmp_path}/inc/../inc/h.h" 1 3 4\nint x;\n# 1 "<built-in>"\n# 2 "inc/h.h" 2\n'
        '# 1 "gone.h"\n'
    )
    assert unity.files_read(ii, tmp_path) == [h]


def test_a_header_macro_against_another_units_own_name_conflicts(tmp_path: Path) -> None:
    # vLLM 0.4.2: cache_kernels.cu includes cuda_compat.h (#define WARP_SIZE 32);
    # topk_softmax_kernels.cu does not, and declares its own WARP_SIZE: in one translation
    # unit cudafe++ would read "static constexpr int 32 = 32;"
    tree = tmp_path / "tree"
    (tree / "csrc").mkdir(parents=True)
    compat = tree / "csrc" / "cuda_compat.h"
    compat.write_text("#pragma once\n#define WARP_SIZE 32\n")
    cache = plan_of(
        tmp_path,
        "csrc/cache_kernels.cu",
        ["-DX=1"],
        '#include "cuda_compat.h"\n',
        closure=("csrc/cache_kernels.cu", "csrc/cuda_compat.h"),
    )
    topk = plan_of(
        tmp_path,
        "csrc/moe/topk.cu",
        ["-DX=1"],
        "static constexpr int WARP_SIZE = 32;\n",
        closure=("csrc/moe/topk.cu",),
    )
    other = plan_of(tmp_path, "csrc/other.cu", ["-DX=1"], "int f();\n", closure=("csrc/other.cu",))
    assert unity.closure_conflicts([cache, topk, other]) == {frozenset({cache.path, topk.path})}
    # a unit that includes the header itself sees the macro alone too: no conflict
    both = plan_of(
        tmp_path,
        "csrc/both.cu",
        ["-DX=1"],
        '#include "cuda_compat.h"\nint w = WARP_SIZE;\n',
        closure=("csrc/both.cu", "csrc/cuda_compat.h"),
    )
    assert unity.closure_conflicts([cache, both]) == set()
    # a unit's own file's macros are #undef'd after it: left to clashes()
    own = plan_of(tmp_path, "csrc/own.cu", ["-DX=1"], "#define f g\n", closure=("csrc/own.cu",))
    assert unity.closure_conflicts([own, other]) == set()
    # the jobs: the conflicting two in different translation units, the third with one
    items = [(object(), object()) for _ in range(3)]
    plans = {id(items[0][0]): cache, id(items[1][0]): topk, id(items[2][0]): other}
    jobs = unity.jobs_for(items, plans)  # type: ignore[arg-type]
    assert [len(j.items) for j in jobs] == [2, 1]
    assert jobs[0].group is not None and jobs[0].group.plans == [cache, other]
    assert jobs[1].group is None and jobs[1].items == [items[1]]


def test_colouring_keeps_conflicting_units_apart(tmp_path: Path) -> None:
    # vLLM 0.10.1: marlin_moe_wna16/ops.cu and gptq_marlin.cu (the closures' check keeps
    # them apart): not together, but each with others
    ps = [plan_of(tmp_path, f"u{i}.cu", ["-DX=1"]) for i in range(5)]
    ops, gptq = ps[1], ps[3]
    pair = frozenset({ops.path, gptq.path})
    classes = unity.colour(ps, {pair})
    assert len(classes) == 2 and sorted(map(len, classes)) == [2, 3]
    for c in classes:
        assert not (ops in c and gptq in c)
    assert sorted(p.path for c in classes for p in c) == sorted(p.path for p in ps)
    # no conflicts: one class, in order; a triangle: three classes
    assert unity.colour(ps, set()) == [ps]
    tri = {frozenset({ps[a].path, ps[b].path}) for a, b in ((0, 1), (1, 2), (0, 2))}
    got = unity.colour(ps, tri)
    assert len(got) == 3
    for c in got:
        assert not any(frozenset({p.path, q.path}) in tri for p in c for q in c)
