"""Which of a vLLM release's runtime packages the GPU machine lacks, as cp312 manylinux wheels.

The GPU machine reaches no index: what `import vllm` + `vllm.LLM(...)` need and the machine
lacks travels as wheels, 64 MiB per command. This resolves the release's own runtime
requirements (requirements/common.txt + cuda.txt of its sdist) for CPython 3.12 on
manylinux x86_64 with uv (metadata only, nothing downloaded), pinned to the versions the
machine already has (benchmarks/device/device_packages.txt), subtracts what it has, and sizes each
missing wheel from the index's JSON (PEP 691/700), writing:

  benchmarks/device/device-wheels-vllm<V>.txt   NAME==VERSION per line, "core" first, then the
                                         large packages vLLM imports only on other paths

  python benchmarks/device/device_wheels.py --vllm 0.20.0          # list + sizes (JSON on stdout)
  bash benchmarks/device/wheels_for_device.sh 0.20.0 [core|all]   # then download them into .whl/
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import urllib.request
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from vllm_matrix.infra import index, proc
from vllm_matrix.stages import source

HERE = Path(__file__).parent
PRESENT = HERE / "device_packages.txt"

# Declared by vLLM 0.20.0 but imported at module top level by no module that a dense
# model's LLM() loads on Hopper (checked by grep of the sdist: flashinfer's 4 top-level
# importers are the FlashInfer attention backends and the MNNVL communicator; tilelang,
# quack, cutlass (DSL), fastsafetensors, tvm_ffi, cuda.tile, z3 have none). They stay
# behind unless the run shows otherwise; everything else travels ("core").
LAZY = {
    "flashinfer-python": "FlashInfer attention/MoE backends (Hopper's default is FLASH_ATTN)",
    "flashinfer-cubin": "FlashInfer's prebuilt kernels",
    "nvidia-cudnn-frontend": "a FlashInfer dependency",
    "apache-tvm-ffi": "FlashInfer/TileLang FFI",
    "torch-c-dlpack-ext": "a tvm-ffi dependency",
    "tilelang": "TileLang kernels (imported inside functions)",
    "z3-solver": "a TileLang dependency",
    "cuda-tile": "a TileLang dependency",
    "nvidia-cutlass-dsl": "FA4 (CuTe DSL), imported inside functions",
    "nvidia-cutlass-dsl-libs-base": "FA4 (CuTe DSL)",
    "nvidia-cutlass-dsl-libs-core": "FA4 (CuTe DSL)",
    "nvidia-cutlass-dsl-libs-cu12": "FA4 (CuTe DSL)",
    "quack-kernels": "FA4 (QuACK), imported inside functions",
    "fastsafetensors": "the fastsafetensors load format (not the default)",
    "xgrammar": "structured outputs only (LazyLoader: vllm/v1/structured_output/utils.py:31)",
    "numba": "the n-gram speculative decoder only (vllm/v1/spec_decode/ngram_proposer.py); "
    "its pin numba==0.65.0 needs numpy<2.5 and the machine has numpy 2.5.2",
}
# Pins whose versions the machine must keep (its torch stack); a resolution that moves
# one of them is refused rather than shipped.
KEEP = (
    "torch",
    "torchaudio",
    "torchvision",
    "triton",
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
)


def present() -> dict[str, str | None]:
    """The GPU machine's packages: name -> version where one was read, else None."""
    out: dict[str, str | None] = {}
    for line in PRESENT.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, ver = line.partition("==")
            out[canonicalize_name(name)] = ver or None
    return out


def requirements(tree: Path) -> list[str]:
    def read(f: Path) -> list[str]:
        lines: list[str] = []
        for raw in f.read_text().splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line.startswith("-r "):
                lines += read(f.parent / line.split()[1])
            elif line and not line.startswith("#"):
                lines.append(line)
        return lines

    return read(tree / "requirements" / "cuda.txt")


def resolve(
    reqs: list[str], pins: dict[str, str | None], pin_all: bool, conflicts: dict[str, str]
) -> dict[str, str]:
    """uv's resolution for cp312 manylinux x86_64. With pin_all, every version the machine
    has is a constraint; one that a requirement's metadata refuses (uv names it) is dropped
    and kept in `conflicts` with uv's reason, and the resolution is tried again."""
    keep = {n: v for n, v in pins.items() if v and (pin_all or n in KEEP)}
    with tempfile.TemporaryDirectory() as d:
        r, c, o = Path(d, "reqs.txt"), Path(d, "pins.txt"), Path(d, "out.txt")
        r.write_text("\n".join(reqs) + "\n")
        for _ in range(len(keep) + 1):
            c.write_text("".join(f"{n}=={v}\n" for n, v in keep.items()))
            done = proc.run(
                [
                    sys.executable,
                    "-m",
                    "uv",
                    "pip",
                    "compile",
                    str(r),
                    "-c",
                    str(c),
                    "--python-version",
                    "3.12",
                    "--python-platform",
                    "x86_64-manylinux_2_28",
                    "--no-build",
                    "--no-header",
                    "--no-annotate",
                    "--quiet",
                    "-o",
                    str(o),
                ],
                check=False,
            )
            if done.returncode == 0:
                break
            named = {
                canonicalize_name(m) for m in re.findall(r"you require ([\w.-]+)==", done.output)
            }
            drop = [n for n in named if n in keep and n not in KEEP]
            if not drop:
                raise SystemExit(f"uv pip compile failed:\n{done.output}")
            for n in drop:
                why = next(ln.strip() for ln in done.output.splitlines() if "Because" in ln)
                conflicts[n] = f"the machine's {n}=={keep.pop(n)}: {why}"
        got = {}
        for line in o.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                n, v = line.split(";")[0].strip().split("==")
                got[canonicalize_name(n)] = v
        return got


def tags() -> list[Tag]:
    plats = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)]
    plats += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    return [*cpython_tags((3, 12), platforms=plats), *compatible_tags((3, 12), "cp312", plats)]


def wheel(name: str, version: str, order: dict[Tag, int]) -> tuple[str, int | None]:
    """The wheel pip download would pick for cp312 manylinux x86_64, and its size."""
    req = urllib.request.Request(f"{index.index_url()}/{name}/", headers={"Accept": index.PEP691})
    with urllib.request.urlopen(req, timeout=index.TIMEOUT) as resp:
        doc = json.loads(resp.read())
    best: tuple[int, str, int | None] | None = None
    for f in doc.get("files", []):
        fn = f["filename"]
        if not fn.endswith(".whl"):
            continue
        try:
            _, ver, _, wtags = parse_wheel_filename(fn)
        except InvalidWheelFilename:
            continue
        if str(ver) != version and ver.public != version:
            continue
        rank = min((order[t] for t in wtags if t in order), default=None)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, fn, f.get("size"))
    if best is None:
        return "(no cp312 manylinux x86_64 wheel)", None
    return best[1], best[2]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--vllm", default="0.20.0")
    p.add_argument(
        "--out", help="the list file (default benchmarks/device/device-wheels-vllm<V>.txt)"
    )
    a = p.parse_args()
    tree = source.get_tree(a.vllm)
    have = present()
    reqs = requirements(tree.root)
    # core: the requirements but the lazy ones, every version the machine has pinned (what
    # it has must do); all: everything, only the torch stack pinned.
    core_reqs = [r for r in reqs if canonicalize_name(re.split(r"[ <>=!~;\[]", r)[0]) not in LAZY]
    conflicts: dict[str, str] = {}
    core = resolve(core_reqs, have, True, conflicts)
    full = resolve(reqs, have, False, {})
    moved = [n for n in KEEP if have.get(n) and full.get(n) != have[n]]
    if moved:
        print(f"error: the resolution moves the machine's {moved}", file=sys.stderr)
        return 1
    got = core | {n: v for n, v in full.items() if n not in core}
    order = {t: i for i, t in enumerate(tags())}
    rows = []
    for n, v in sorted(got.items()):
        if n in have and (have[n] is None or have[n] == v):
            continue
        why = "missing" if n not in have else f"the machine has {have[n]}"
        fn, size = wheel(n, v, order)
        rows.append(
            {
                "name": n,
                "version": v,
                "wheel": fn,
                "size": size,
                "why": why,
                "group": "conflict" if n in conflicts else "core" if n in core else "lazy",
                "lazy_because": LAZY.get(n),
            }
        )
    unchecked = sorted(n for n in got if n in have and have[n] is None)

    def total(g: str) -> int:
        return sum(r["size"] or 0 for r in rows if r["group"] == g)

    out = Path(a.out) if a.out else HERE / f"device-wheels-vllm{a.vllm}.txt"
    lines = [
        f"# vLLM {a.vllm}'s runtime packages (requirements/common.txt + cuda.txt) that the GPU",
        "# machine lacks or has at another version, resolved for cp312 manylinux x86_64 with",
        "# its torch stack pinned. Made by benchmarks/device/device_wheels.py; read by",
        "# benchmarks/device/wheels_for_device.sh. Sizes from the index's JSON.",
        *(
            f"# {g}: {sum(r['group'] == g for r in rows)} wheels, {total(g) / 2**20:.1f} MiB"
            for g in ("core", "lazy")
        ),
        f"# conflict: {sum(r['group'] == 'conflict' for r in rows)} wheels, "
        f"{total('conflict') / 2**20:.1f} MiB (travels only if the machine's version fails)",
        f"# present there at a version not read (check with pip show there): {' '.join(unchecked)}",
        *(f"# kept at the machine's version although {c}" for c in conflicts.values()),
    ]
    for g in ("core", "lazy", "conflict"):
        lines.append(f"[{g}]")
        for r in rows:
            if r["group"] == g:
                mib = f"{r['size'] / 2**20:7.2f} MiB" if r["size"] else "    ? MiB"
                note = f"; {r['lazy_because']}" if r["lazy_because"] else ""
                pin = f"{r['name']}=={r['version']}"
                lines.append(f"{pin:<44} # {mib} {r['why']}{note}")
    out.write_text("\n".join(lines) + "\n")
    print(
        json.dumps(
            {
                "list": out.name,
                **{f"{g}_bytes": total(g) for g in ("core", "lazy", "conflict")},
                "rows": rows,
                "version_unchecked": unchecked,
                "conflicts": conflicts,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
