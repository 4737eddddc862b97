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
from typing import TypedDict

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from vllm_matrix.infra import index, proc
from vllm_matrix.sources import sdist as source

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
    def read(listing: Path) -> list[str]:
        lines: list[str] = []
        for raw in listing.read_text().splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line.startswith("-r "):
                lines += read(listing.parent / line.split()[1])
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
    keep = {name: ver for name, ver in pins.items() if ver and (pin_all or name in KEEP)}
    with tempfile.TemporaryDirectory() as scratch:
        reqs_txt, pins_txt = Path(scratch, "reqs.txt"), Path(scratch, "pins.txt")
        out_txt = Path(scratch, "out.txt")
        reqs_txt.write_text("\n".join(reqs) + "\n")
        for _ in range(len(keep) + 1):
            pins_txt.write_text("".join(f"{name}=={ver}\n" for name, ver in keep.items()))
            done = proc.run(
                [
                    sys.executable,
                    "-m",
                    "uv",
                    "pip",
                    "compile",
                    str(reqs_txt),
                    "-c",
                    str(pins_txt),
                    "--python-version",
                    "3.12",
                    "--python-platform",
                    "x86_64-manylinux_2_28",
                    "--no-build",
                    "--no-header",
                    "--no-annotate",
                    "--quiet",
                    "-o",
                    str(out_txt),
                ],
                check=False,
            )
            if done.returncode == 0:
                break
            required = re.findall(r"you require ([\w.-]+)==", done.output)
            named = {canonicalize_name(name) for name in required}
            drop = [name for name in named if name in keep and name not in KEEP]
            if not drop:
                raise SystemExit(f"uv pip compile failed:\n{done.output}")
            for name in drop:
                why = next(ln.strip() for ln in done.output.splitlines() if "Because" in ln)
                conflicts[name] = f"the machine's {name}=={keep.pop(name)}: {why}"
        resolved: dict[str, str] = {}
        for line in out_txt.read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                listed, ver = line.split(";")[0].strip().split("==")
                resolved[canonicalize_name(listed)] = ver
        return resolved


def tags() -> list[Tag]:
    plats = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)]
    plats += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    return [*cpython_tags((3, 12), platforms=plats), *compatible_tags((3, 12), "cp312", plats)]


def wheel(name: str, version: str, order: dict[Tag, int]) -> tuple[str, int | None]:
    """The wheel pip download would pick for cp312 manylinux x86_64, and its size."""
    req = urllib.request.Request(f"{index.index_url()}/{name}/", headers={"Accept": index.PEP691})
    with urllib.request.urlopen(req, timeout=index.TIMEOUT) as resp:
        doc = json.loads(resp.read())
    best: tuple[int, str, int | None] | None = None
    for entry in doc.get("files", []):
        filename = entry["filename"]
        if not filename.endswith(".whl"):
            continue
        try:
            _, ver, _, wheel_tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            continue
        if str(ver) != version and ver.public != version:
            continue
        rank = min((order[tag] for tag in wheel_tags if tag in order), default=None)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, filename, entry.get("size"))
    if best is None:
        return "(no cp312 manylinux x86_64 wheel)", None
    return best[1], best[2]


class Row(TypedDict):
    name: str
    version: str
    wheel: str
    size: int | None
    why: str
    group: str
    lazy_because: str | None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--vllm", default="0.20.0")
    parser.add_argument(
        "--out", help="the list file (default benchmarks/device/device-wheels-vllm<V>.txt)"
    )
    args = parser.parse_args(argv)
    tree = source.get_tree(args.vllm)
    have = present()
    reqs = requirements(tree.root)
    # core: the requirements but the lazy ones, every version the machine has pinned (what
    # it has must do); all: everything, only the torch stack pinned.
    core_reqs = [
        req for req in reqs if canonicalize_name(re.split(r"[ <>=!~;\[]", req)[0]) not in LAZY
    ]
    conflicts: dict[str, str] = {}
    core = resolve(core_reqs, have, True, conflicts)
    full = resolve(reqs, have, False, {})
    moved = [name for name in KEEP if have.get(name) and full.get(name) != have[name]]
    if moved:
        print(f"error: the resolution moves the machine's {moved}", file=sys.stderr)
        return 1
    resolved = core | {name: ver for name, ver in full.items() if name not in core}
    order = {tag: rank for rank, tag in enumerate(tags())}
    rows: list[Row] = []
    for name, ver in sorted(resolved.items()):
        if name in have and (have[name] is None or have[name] == ver):
            continue
        why = "missing" if name not in have else f"the machine has {have[name]}"
        filename, size = wheel(name, ver, order)
        rows.append(
            {
                "name": name,
                "version": ver,
                "wheel": filename,
                "size": size,
                "why": why,
                "group": "conflict" if name in conflicts else "core" if name in core else "lazy",
                "lazy_because": LAZY.get(name),
            }
        )
    unchecked = sorted(name for name in resolved if name in have and have[name] is None)

    def count(group: str) -> int:
        return sum(1 for row in rows if row["group"] == group)

    def total(group: str) -> int:
        return sum(row["size"] or 0 for row in rows if row["group"] == group)

    out = Path(args.out) if args.out else HERE / f"device-wheels-vllm{args.vllm}.txt"
    lines = [
        f"# vLLM {args.vllm}'s runtime packages (requirements/common.txt + cuda.txt) that the GPU",
        "# machine lacks or has at another version, resolved for cp312 manylinux x86_64 with",
        "# its torch stack pinned. Made by benchmarks/device/device_wheels.py; read by",
        "# benchmarks/device/wheels_for_device.sh. Sizes from the index's JSON.",
        *(
            f"# {group}: {count(group)} wheels, {total(group) / 2**20:.1f} MiB"
            for group in ("core", "lazy")
        ),
        f"# conflict: {count('conflict')} wheels, "
        f"{total('conflict') / 2**20:.1f} MiB (travels only if the machine's version fails)",
        f"# present there at a version not read (check with pip show there): {' '.join(unchecked)}",
        *(f"# kept at the machine's version although {why}" for why in conflicts.values()),
    ]
    for group in ("core", "lazy", "conflict"):
        lines.append(f"[{group}]")
        for row in rows:
            if row["group"] == group:
                size = row["size"]
                mib = f"{size / 2**20:7.2f} MiB" if size else "    ? MiB"
                note = f"; {row['lazy_because']}" if row["lazy_because"] else ""
                pin = f"{row['name']}=={row['version']}"
                lines.append(f"{pin:<44} # {mib} {row['why']}{note}")
    out.write_text("\n".join(lines) + "\n")
    print(
        json.dumps(
            {
                "list": out.name,
                **{f"{group}_bytes": total(group) for group in ("core", "lazy", "conflict")},
                "rows": rows,
                "version_unchecked": unchecked,
                "conflicts": conflicts,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
