"""Checks on a built wheel: what its shared objects hold, and whether they load.

``audit_wheel``: for every ``.so``: size, SASS arches (``cuobjdump --list-elf``), PTX
(``--list-ptx``), NEEDED libraries and RUNPATH (``readelf -d``); FAIL when a CUDA object
has neither SASS that runs on a target arch nor PTX a driver can JIT for it; the version
label (file name, dist-info directory, METADATA) must agree.

``smoke``: install the wheel with ``pip install --no-deps --target`` beside the cell's
full torch env, load each compiled extension and list what it registers (pybind
functions and ``torch.ops`` namespaces), then try ``import vllm`` and name exactly
which of vLLM's requirements are missing. Without a GPU driver the extensions load
through a ``libcuda.so.1`` link to the toolkit's stub (measured: that is all they need
to load); no kernel is run without a GPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_matrix import workers
from vllm_matrix.infra import proc, results
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.errors import MatrixError, ToolError
from vllm_matrix.infra.results import Finding, StageResult
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.toolkit import Toolkit

# ------------------------------------------------------------------ parsing tool output

_ELF_LINE = re.compile(r"^ELF file\s+\d+:\s+(\S+)", re.M)
_PTX_LINE = re.compile(r"^PTX file\s+\d+:\s+(\S+)", re.M)
_SM = re.compile(r"\.sm_(\d+)([af]?)\.(?:cubin|ptx|elf\.bin)$")
_NEEDED = re.compile(r"\(NEEDED\)\s+Shared library:\s+\[([^\]]+)\]")
_RPATH = re.compile(r"\((RUNPATH|RPATH)\)\s+Library r(?:un)?path:\s+\[([^\]]*)\]")
NO_DEVICE_CODE = "does not contain device code"


def _arch_of(sm: str, suffix: str) -> str:
    return Arch.parse(f"sm_{sm}{suffix}").name


def _listed_arches(line: re.Pattern[str], text: str) -> tuple[str, ...]:
    found = {_arch_of(m.group(1), m.group(2)) for n in line.findall(text) if (m := _SM.search(n))}
    return tuple(sorted(found, key=Arch.parse))


def parse_list_elf(text: str) -> tuple[str, ...]:
    """Arches of the cubins ``cuobjdump --list-elf`` lists ("8.0", "9.0a"), sorted, unique."""
    return _listed_arches(_ELF_LINE, text)


def parse_list_ptx(text: str) -> tuple[str, ...]:
    """Virtual arches of the PTX ``cuobjdump --list-ptx`` lists (named ``*.sm_NN.ptx``)."""
    return _listed_arches(_PTX_LINE, text)


def count_entries(text: str, kind: str = "ELF") -> int:
    return len((_ELF_LINE if kind == "ELF" else _PTX_LINE).findall(text))


def parse_readelf(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(NEEDED sonames, RUNPATH/RPATH entries) from ``readelf -d``."""
    needed = tuple(_NEEDED.findall(text))
    paths: list[str] = []
    for _, value in _RPATH.findall(text):
        paths += [p for p in value.split(":") if p]
    return needed, tuple(paths)


def arch_coverage(
    name: str, archs: Sequence[str], sass: tuple[str, ...], ptx: tuple[str, ...], arch_list: str
) -> tuple[dict[str, str], list[Finding]]:
    """Per target arch, how ``name`` runs it ("sass:90", "ptx:80", "none"), and a FAIL
    finding for each arch it has neither SASS nor PTX for (``arch_list``: where to add it)."""
    got: dict[str, str] = {}
    findings: list[Finding] = []
    for target in archs:
        how, by = coverage(target, sass, ptx)
        got[target] = f"{how}:{by}" if how else "none"
        if how is None:
            findings.append(
                Finding(
                    "sass",
                    "fail",
                    f"{name} has no SASS or PTX for {target} "
                    f"(SASS {', '.join(sass) or 'none'}; PTX {', '.join(ptx) or 'none'})",
                    f"add {target} to {arch_list} and rebuild",
                    (name,),
                )
            )
    return got, findings


def coverage(
    target: str, sass: tuple[str, ...], ptx: tuple[str, ...]
) -> tuple[str | None, str | None]:
    """How ``target`` runs this object: ("sass", arch) exact, ("sass-compatible", arch)
    (same major, lower minor: binary compatible), ("ptx", arch) (JIT by the driver from
    PTX of the same or an older virtual arch), or (None, None).

    Arch-specific targets ("9.0a") run only on their exact SASS; family targets
    ("12.0f") on SASS of the same major not newer than them.
    """
    t = Arch.parse(target)
    if target in sass:
        return "sass", target
    plain = t.base.name
    if t.suffix != "a" and plain in sass:
        return "sass", plain
    compatible = [s for s in map(Arch.parse, sass) if t.runs_sass_of(s)]
    if compatible:
        return "sass-compatible", max(compatible).name
    older = [p for p in map(Arch.parse, ptx) if t.jits_ptx_of(p)]
    if older:
        return "ptx", max(older).name
    return None, None


# ------------------------------------------------------------------ wheel metadata


@dataclass(frozen=True)
class WheelInfo:
    filename_version: str
    dist_info: str
    metadata_version: str | None
    requires: tuple[str, ...]


def wheel_info(wheel: Path) -> WheelInfo:
    parts = wheel.name[:-4].split("-")
    with zipfile.ZipFile(wheel) as zf:
        infos = sorted(
            {n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")}
        )
        if len(infos) != 1:
            raise MatrixError(
                f"{wheel.name}: {len(infos)} .dist-info directories ({', '.join(infos)})",
                fix="rebuild the wheel",
            )
        meta = zf.read(f"{infos[0]}/METADATA").decode("utf-8", errors="replace")
    head = meta.partition("\n\n")[0]
    mv = re.search(r"(?m)^Version: (.*)$", head)
    requires = tuple(re.findall(r"(?m)^Requires-Dist: (.*)$", head))
    return WheelInfo(parts[1], infos[0], mv.group(1).strip() if mv else None, requires)


# ------------------------------------------------------------------ the audit


@dataclass(frozen=True)
class SharedObject:
    path: str  # inside the wheel
    size: int
    sass: tuple[str, ...]
    ptx: tuple[str, ...]
    cubins: int
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    device_code: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size,
            "sass": list(self.sass),
            "ptx": list(self.ptx),
            "cubins": self.cubins,
            "needed": list(self.needed),
            "runpath": list(self.runpath),
            "device_code": self.device_code,
        }


def cuobjdump_of(tk: Toolkit | None) -> str | None:
    if tk is not None and (tk.root / "bin" / "cuobjdump").exists():
        return str(tk.root / "bin" / "cuobjdump")
    return shutil.which("cuobjdump")


def inspect_so(path: Path, name: str, cuobjdump: str | None) -> SharedObject:
    elf = proc.run([cuobjdump, "--list-elf", path], check=False) if cuobjdump else None
    ptx = proc.run([cuobjdump, "--list-ptx", path], check=False) if cuobjdump else None
    elf_text = elf.output if elf else ""
    ptx_text = ptx.output if ptx else ""
    no_code = NO_DEVICE_CODE in elf_text and NO_DEVICE_CODE in ptx_text
    if elf is not None and elf.returncode != 0 and not no_code:
        raise MatrixError(
            f"cuobjdump --list-elf failed on {name}: {elf_text.strip()[-300:]}",
            fix="check the toolkit's cuobjdump runs",
        )
    needed, runpath = parse_readelf(proc.run(["readelf", "-d", "-W", path]).output)
    return SharedObject(
        name,
        path.stat().st_size,
        parse_list_elf(elf_text),
        parse_list_ptx(ptx_text),
        count_entries(elf_text, "ELF"),
        needed,
        runpath,
        bool(elf_text) and not no_code,
    )


def audit_wheel(wheel: Path, tk: Toolkit | None, archs: tuple[str, ...]) -> StageResult:
    """Audit ``wheel`` for the target ``archs`` (as in a Cell: "8.0", "9.0a")."""
    findings: list[Finding] = []
    info = wheel_info(wheel)
    label_ok = info.dist_info.endswith(f"-{info.filename_version}.dist-info") and (
        info.metadata_version == info.filename_version
    )
    if not label_ok:
        findings.append(
            Finding(
                "version-label",
                "fail",
                f"version disagrees: file name {info.filename_version}, "
                f"{info.dist_info}, METADATA {info.metadata_version}",
                "relabel the wheel (build.relabel_wheel) or rebuild it",
            )
        )
    tool = cuobjdump_of(tk)
    if tool is None:
        findings.append(
            Finding(
                "cuobjdump",
                "warn",
                "no cuobjdump: the SASS/PTX arches were not checked",
                "use a toolkit with bin/cuobjdump (PyPI has it only from CUDA 13.2)",
            )
        )
    objects: list[SharedObject] = []
    with (
        tempfile.TemporaryDirectory(prefix="vllm-matrix-audit-") as tmp,
        zipfile.ZipFile(wheel) as zf,
    ):
        for member in zf.namelist():
            if not re.search(r"\.so(\.\d+)*$", member):
                continue
            out = Path(tmp) / str(len(objects)) / Path(member).name
            out.parent.mkdir()
            with zf.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            objects.append(inspect_so(out, member, tool))
    cuda = [o for o in objects if o.device_code]
    if not objects:
        findings.append(Finding("so", "fail", "the wheel holds no .so", "rebuild it"))
    elif tool is not None and not cuda:
        findings.append(
            Finding(
                "device-code",
                "fail",
                "no .so in the wheel holds device code",
                "check TORCH_CUDA_ARCH_LIST and that the CUDA build ran",
            )
        )
    per_arch: dict[str, dict[str, str]] = {}
    for o in cuda:
        got, missing = arch_coverage(
            o.path, archs, o.sass, o.ptx, "TORCH_CUDA_ARCH_LIST (the cell's arch)"
        )
        findings += missing
        for target, how_by in got.items():
            how, _, by = how_by.partition(":")
            if how == "ptx":
                findings.append(
                    Finding(
                        "sass",
                        "warn",
                        f"{o.path} runs on {target} only by JIT from compute_{by} PTX "
                        "(slow first load)",
                        f"build SASS for {target}",
                        (o.path,),
                    )
                )
        foreign = [r for r in o.runpath if r.startswith("/")]
        if foreign:
            # torch's CMake bakes the build machine's torch/lib and CUDA dirs in: harmless
            # where they don't exist, but a user's same path would take precedence over
            # the system's libraries.
            findings.append(
                Finding(
                    "runpath",
                    "info",
                    f"{o.path} RUNPATH holds build-machine paths: {':'.join(foreign)}",
                    "libraries are found through the loaded torch; the entries can be "
                    "stripped (patchelf --remove-rpath) if they matter",
                )
            )
        if re.search(r"(^|/)_C(_stable_libtorch)?\.", o.path):  # the FP8 GEMM's home
            findings += sm90a_findings(o.path, archs, o.sass)
        extra = [s for s in o.sass if s not in archs]
        if extra:
            findings.append(
                Finding("sass", "info", f"{o.path} also has SASS for {', '.join(extra)}")
            )
        per_arch[o.path] = got
    status = results.status_of(findings)
    parts = [
        f"{Path(o.path).name} {o.size / 2**20:.1f} MiB "
        f"SASS {'+'.join(o.sass) or '-'} PTX {'+'.join(o.ptx) or '-'}"
        for o in objects
    ]
    summary = f"{len(objects)} .so ({len(cuda)} with device code): " + "; ".join(parts)
    details = {
        "wheel": str(wheel),
        "version": info.filename_version,
        "targets": list(archs),
        "cuobjdump": tool,
        "objects": [o.to_json() for o in objects],
        "coverage": per_arch,
    }
    return StageResult("audit", status, 0.0, summary, tuple(findings), details)


# ------------------------------------------------------------------ FP8 GEMM SASS

_CODE_FOR = re.compile(r"^\s*code for sm_(\d+)([af]?)\s*$")
_INSN = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")
# Objects that hold the FP8 GEMM (cutlass_scaled_mm): vLLM's scaled_mm sources.
FP8_GEMM_OBJECT = re.compile(r"scaled_mm[^/]*\.cu\.o$")


class MmaCensus:
    """Counts, per SASS arch, the matrix instructions in ``cuobjdump --dump-sass``
    output fed line by line (a large object's dump is never held whole)."""

    def __init__(self) -> None:
        self.arch: str | None = None
        self.counts: dict[str, dict[str, int]] = {}
        # every instruction line per arch: a "code for sm_NN" section with none is a dump
        # cuobjdump could not disassemble (it needs nvdisasm beside it and says nothing when
        # that is missing), and its zero MMA count must not read as "no MMA".
        self.instructions: dict[str, int] = {}

    def feed(self, line: str) -> None:
        m = _CODE_FOR.match(line)
        if m:
            self.arch = _arch_of(m.group(1), m.group(2))
            self.counts.setdefault(self.arch, {})
            self.instructions.setdefault(self.arch, 0)
            return
        if self.arch is None:
            return
        i = _INSN.search(line)
        if i:
            self.instructions[self.arch] += 1
            if i.group(1).endswith("MMA"):
                per = self.counts[self.arch]
                per[i.group(1)] = per.get(i.group(1), 0) + 1

    def undisassembled(self) -> list[str]:
        """The arches whose sections held no instruction at all."""
        return sorted(a for a, n in self.instructions.items() if n == 0)


def mma_census(text: str) -> dict[str, dict[str, int]]:
    """arch -> {MMA opcode: count} of a whole ``cuobjdump --dump-sass`` text."""
    c = MmaCensus()
    for line in text.splitlines():
        c.feed(line)
    return c.counts


def sass_census(path: Path, cuobjdump: str) -> dict[str, dict[str, int]]:
    """arch -> {MMA opcode: count} of one object; a ToolError when cuobjdump listed code
    sections it did not disassemble (an MMA count of zero would then be a false "none")."""
    c = MmaCensus()
    proc.run([cuobjdump, "--dump-sass", path], check=False, capture=False, on_line=c.feed)
    blank = c.undisassembled()
    if blank:  # an object may hold an arch's cubin with no kernel in it (host code only)
        blank = sorted(set(blank) & text_section_arches(path, cuobjdump))
    if blank:
        raise ToolError(
            f"cuobjdump --dump-sass printed no instructions for {', '.join(blank)} in "
            f"{path.name}: it disassembles through nvdisasm, which is missing or failed "
            f"beside {cuobjdump}",
            fix="use a toolkit whose bin/ has both cuobjdump and nvdisasm "
            "(PyPI: nvidia-cuda-cuobjdump and nvidia-nvdisasm of one CUDA release)",
        )
    return c.counts


_TEXT_LINE = re.compile(r"^SASS text section\s+\d+\s*:\s+(\S+)", re.M)


def text_section_arches(path: Path, cuobjdump: str) -> set[str]:
    """The arches of ``path`` whose cubins hold at least one kernel: ``cuobjdump
    --list-text`` names every SASS text section "x-<kernel>.sm_<NN>[af].elf.bin" and, unlike
    --dump-sass, needs no nvdisasm. A cubin without one (vLLM 0.20.0's
    nvfp4_scaled_mm_entry.cu for 9.0a: host code only) dumps as a bare "code for sm_90a"
    header, as a dump without nvdisasm does (measured with cuobjdump 12.4 and 13.0)."""
    return set(
        _listed_arches(_TEXT_LINE, proc.run([cuobjdump, "--list-text", path], check=False).output)
    )


def sm90a_findings(name: str, archs: tuple[str, ...], sass: tuple[str, ...]) -> list[Finding]:
    """The FP8 GEMM's Hopper fast path needs sm_90a: CUTLASS 3.x's wgmma kernels
    (vLLM's scaled_mm_c3x_sm90) are compiled for 9.0a only, and their bodies are guarded
    by __CUDA_ARCH_FEAT_SM90_ALL, so a plain sm_90 compile leaves them empty. A build for
    9.0 without the ``a`` runs cutlass_scaled_mm on the sm_89 (CUTLASS 2.x, mma.sync)
    path: the gpu stage measures it below half of cuBLASLt's speed.

    ``name``: an object or .so holding the FP8 GEMM; ``sass``: its SASS arches."""
    wants_hopper = any(Arch.parse(a).major == 9 for a in archs)
    if not (wants_hopper and "9.0" in sass and "9.0a" not in sass):
        return []
    return [
        Finding(
            "sm90a",
            "fail",
            f"{name} has sm_90 SASS without sm_90a: the FP8 GEMM's wgmma kernels "
            "(CUTLASS 3.x) are not in it; cutlass_scaled_mm falls back to a slower path",
            "build for 9.0a (TORCH_CUDA_ARCH_LIST='9.0a' / --arch 9.0a), not 9.0",
            (name,),
        )
    ]


def wgmma_findings(
    censuses: Iterable[tuple[str, Mapping[str, Mapping[str, int]]]],
) -> list[Finding]:
    """The FP8 GEMM objects of a build, judged together: ``censuses`` holds each object's
    name and its SASS arch -> MMA opcodes (``sass_census``). Where any of them has sm_90
    SASS, at least one must hold wgmma (``*GMMA``). Judged over the set, not per object:
    an entry or dispatch unit (vLLM 0.20.0's scaled_mm_entry.cu, scaled_mm_c3x_sm90.cu)
    holds no MMA at all in a correct build (GPU machine, 2026-12-01: 3 of 12 objects),
    while a plain sm_90 compile of the kernel unit itself holds none either."""
    hopper = [
        (name, arch, ops)
        for name, census in censuses
        for arch, ops in census.items()
        if Arch.parse(arch).number == 90
    ]
    if not hopper or any(op.endswith("GMMA") for _, _, ops in hopper for op in ops):
        return []
    names = sorted({name for name, _, _ in hopper})
    archs = sorted({arch for _, arch, _ in hopper})
    seen = sorted({op for _, _, ops in hopper for op in ops})
    return [
        Finding(
            "sm90a",
            "fail",
            f"none of the {len(names)} FP8 GEMM objects with {'/'.join(archs)} SASS holds a "
            f"wgmma (GMMA) instruction ({', '.join(seen) or 'no MMA at all'}): the Hopper FP8 "
            "GEMM kernels are empty or on a slow path",
            "build for 9.0a (-gencode arch=compute_90a,code=sm_90a)",
            tuple(names),
        )
    ]


# ------------------------------------------------------------------ smoke

# The load check and the ``import vllm`` check run inside the cell's env python, each a file
# of vllm_matrix.workers run by path; each prints one ``SMOKE-JSON`` line.


def _json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("SMOKE-JSON "):
            data: dict[str, Any] = json.loads(line[len("SMOKE-JSON ") :])
            return data
    return None


def real_driver() -> bool:
    """Whether this machine has an NVIDIA driver (then the stub must not shadow it)."""
    return Path("/proc/driver/nvidia/version").exists()


def driver_stub_dir(tk: Toolkit, where: Path) -> Path | None:
    """A directory holding ``libcuda.so.1 -> <toolkit>/lib64/stubs/libcuda.so``."""
    stub = tk.root / "lib64" / "stubs" / "libcuda.so"
    if not stub.exists():
        return None
    where.mkdir(parents=True, exist_ok=True)
    link = where / "libcuda.so.1"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(stub)
    return where


def stub_driver_env(tk: Toolkit, where: Path) -> tuple[dict[str, str], Path | None]:
    """On a machine without an NVIDIA driver: the environment that lets extensions linking
    ``libcuda.so.1`` load (``LD_LIBRARY_PATH`` led by a dir holding the toolkit's stub;
    empty where the toolkit has none) and that dir. Callers ask ``real_driver()`` first."""
    stub = driver_stub_dir(tk, where)
    if stub is None:
        return {}, None
    old = os.environ.get("LD_LIBRARY_PATH")
    return {"LD_LIBRARY_PATH": str(stub) + (f":{old}" if old else "")}, stub


def smoke(wheel: Path, tv_full: TorchEnv, tk: Toolkit, work: Path) -> StageResult:
    """Install ``wheel`` beside ``tv_full`` (``--no-deps --target``) and load it."""
    findings: list[Finding] = []
    base = work / "smoke"
    site = base / "site"
    log = base / "smoke.log"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    proc.run(
        [
            tv_full.python_exe,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--no-compile",
            "--target",
            site,
            wheel,
        ],
        log=log,
        env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        timeout=600,
    )
    with zipfile.ZipFile(wheel) as zf:
        exts = sorted(n for n in zf.namelist() if re.search(r"\.(?:cpython-[^/]*|abi3)\.so$", n))
    env = {"PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    not_run: list[str] = []
    if real_driver():
        driver = "real NVIDIA driver"
    else:
        stub_env, stub = stub_driver_env(tk, base / "driver-stub")
        driver = f"stub libcuda.so.1 -> {tk.root / 'lib64/stubs/libcuda.so'}" if stub else "none"
        env |= stub_env
        not_run.append(
            "no GPU driver on this machine: extensions were loaded against the toolkit's "
            "libcuda stub; no kernel was run (the stub fails every driver call)"
        )
    loaded = proc.run(
        [tv_full.python_exe, workers.SMOKE_WORKER, site, *exts],
        log=log,
        env=env,
        check=False,
        timeout=600,
    )
    data = _json_line(loaded.output)
    if data is None:
        findings.append(
            Finding(
                "load",
                "fail",
                f"the load script failed (exit {loaded.returncode}): "
                + (loaded.output.strip().splitlines() or ["no output"])[-1][:300],
                f"read {log}",
                (str(log),),
            )
        )
        data = {}
    ext_data: dict[str, Any] = data.get("extensions", {})
    for name, e in ext_data.items():
        if not e.get("loaded"):
            findings.append(
                Finding(
                    "load",
                    "fail",
                    f"{name} does not load: {e.get('error')}",
                    "a missing soname means the wheel needs a library the env lacks "
                    "(see the audit's NEEDED); an undefined symbol, a torch ABI mismatch",
                    (e.get("file", ""),),
                )
            )
    if data.get("cuda_available") and not real_driver():
        not_run.append("torch reports CUDA available through the stub (unexpected)")
    if data and not data.get("cuda_available"):
        if real_driver():
            not_run.append("torch.cuda.is_available() is False although a driver is present")
        findings.append(Finding("kernel", "info", "no kernel run: no usable GPU here"))
    imp = proc.run(
        [tv_full.python_exe, workers.IMPORT_WORKER],
        log=log,
        env=env,
        check=False,
        timeout=600,
    )
    imp_data = _json_line(imp.output) or {"ok": False, "error": "import script failed"}
    if not imp_data.get("ok"):
        missing = imp_data.get("requires_missing", [])
        findings.append(
            Finding(
                "import-vllm",
                "warn",
                f"`import vllm` fails: {imp_data.get('error')}"
                + (f"; {len(missing)} of vLLM's requirements are not installed" if missing else ""),
                "install the wheel with its dependencies (pip install <wheel>) in a "
                "serving env; the build env holds only torch and build tools",
                tuple(missing),
            )
        )
    ops = data.get("ops", {})
    ok = [n for n, e in ext_data.items() if e.get("loaded")]
    status = results.status_of(findings)
    counts = ", ".join(
        f"{n} ({ext_data[n].get('n_functions', 0)} functions, "
        f"{len(ops.get(n.split('.')[-1], []))} torch ops)"
        for n in ok
    )
    summary = f"{len(ok)}/{len(ext_data)} extensions load" + (f": {counts}" if counts else "")
    summary += "; import vllm " + ("ok" if imp_data.get("ok") else "fails (deps not installed)")
    details = {
        "site": str(site),
        "driver": driver,
        "torch": data.get("torch"),
        "cuda_available": data.get("cuda_available"),
        "extensions": ext_data,
        "ops": ops,
        "import_vllm": imp_data,
        "not_run": not_run,
    }
    return StageResult("smoke", status, 0.0, summary, tuple(findings), details, str(log))
