"""Facts read from a vLLM source tree: pins, external sources, CUDA arch lists.

Nothing of the tree is executed: its CMake is run by the CMake evaluator of
``vllm_matrix.cmake`` (``survey``: every nvcc branch, for CUDA), Python files are parsed
with ``ast``, TOML with ``tomllib``. Each fact carries ``file:line`` evidence relative to
the tree root so a reader can check it.

The torch pin is read from every place vLLM has kept it over the releases and the
first one found (in the order of ``TORCH_PIN_SOURCES``) wins; the others are kept
as evidence. Across every release 0.4.1 … 0.33.0 with an sdist they agree with each
other and with the torch== pin in the published wheel's metadata.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from packaging.markers import InvalidMarker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from vllm_matrix.cmake.survey import FLOOR, Survey, survey
from vllm_matrix.infra.errors import SourceError

T = TypeVar("T")

# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ArchRule:
    """One ``CUDA_SUPPORTED_ARCHS`` assignment in CMakeLists.txt."""

    min_nvcc: str | None  # from "CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL x"
    archs: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class External:
    """A FetchContent dependency the CUDA build downloads."""

    name: str
    repo: str | None
    ref: str
    env_var: str | None  # the *_SRC_DIR environment variable that replaces the download
    evidence: str


@dataclass(frozen=True)
class ModelOptFacts:
    supported: bool
    fp8_min_capability: int | None
    evidence: str | None


@dataclass(frozen=True)
class Gap:
    """A fact the readers could not read: where, what, and what rests on it.

    A release may write something the readers do not know (a new Python construct, a
    value that is not a version, a file moved): that is a finding of the release's
    preflight, never an ERROR of the whole cell."""

    evidence: str  # file:line (relative to the tree root), or the file
    what: str  # what could not be read, and why
    rests: str  # what of the verdict rests on it


@dataclass(frozen=True)
class TorchPin:
    """One place in the tree that pins the CUDA torch version."""

    version: str
    evidence: str


@dataclass(frozen=True)
class SourceFacts:
    vllm: str
    torch: str | None
    torch_evidence: str | None
    cutlass: str | None
    external: tuple[External, ...]
    cuda_archs: tuple[ArchRule, ...]
    python: tuple[str, ...]
    requires_python: str | None
    cmake: str | None
    modelopt: ModelOptFacts
    # Every torch pin found, in source order of preference; more than one distinct
    # version means the tree contradicts itself (none of the releases does).
    torch_pins: tuple[TorchPin, ...] = ()
    python_evidence: str | None = None
    requires_python_evidence: str | None = None
    cmake_evidence: str | None = None
    gaps: tuple[Gap, ...] = ()

    def archs_for(self, nvcc: str) -> tuple[str, ...]:
        """CUDA_SUPPORTED_ARCHS this tree uses when compiled with ``nvcc``.

        The rules are tried in file order, as CMake evaluates an if/elseif/else chain.
        """
        want = _version(nvcc)
        for rule in self.cuda_archs:
            if rule.min_nvcc is None:
                return rule.archs
            floor = _version(rule.min_nvcc)
            if want is not None and floor is not None and floor <= want:
                return rule.archs
        return ()

    def torch_conflicts(self) -> tuple[TorchPin, ...]:
        """Pins in the tree that disagree with the chosen one."""
        if self.torch is None:
            return ()
        return tuple(p for p in self.torch_pins if not _same_version(p.version, self.torch))

    def to_json(self) -> dict[str, object]:
        return {
            "vllm": self.vllm,
            "torch": self.torch,
            "cutlass": self.cutlass,
            "external": {e.name: e.ref for e in self.external},
            "cuda_archs": [
                {"min_nvcc": r.min_nvcc, "archs": list(r.archs), "line": r.line}
                for r in self.cuda_archs
            ],
            "python": list(self.python),
            "requires_python": self.requires_python,
            "cmake": self.cmake,
            "modelopt": {
                "supported": self.modelopt.supported,
                "fp8_min_capability": self.modelopt.fp8_min_capability,
                "evidence": self.modelopt.evidence,
            },
            "evidence": {
                "torch": self.torch_evidence,
                "torch_pins": [{"version": p.version, "at": p.evidence} for p in self.torch_pins],
                "external": {
                    e.name: {"repo": e.repo, "ref": e.ref, "env_var": e.env_var, "at": e.evidence}
                    for e in self.external
                },
                "cuda_archs": [f"CMakeLists.txt:{r.line}" for r in self.cuda_archs],
                "python": self.python_evidence,
                "requires_python": self.requires_python_evidence,
                "cmake": self.cmake_evidence,
            },
            "gaps": [{"at": g.evidence, "what": g.what, "rests": g.rests} for g in self.gaps],
        }


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _same_version(a: str, b: str) -> bool:
    va, vb = _version(a), _version(b)
    return va == vb if va is not None and vb is not None else a == b


# --------------------------------------------------------------- CMake facts
# Read from the CMake evaluator's survey (cmake/survey.py): the tree's CMake run for CUDA at
# every nvcc its conditions tell apart, so a fact is what CMake itself would set.

_ARCH_TEXT = re.compile(r"^\d+\.\d+[af]?(\+PTX)?$")


def _arch_rules(sv: Survey, gaps: list[Gap]) -> tuple[ArchRule, ...]:
    """Each ``set(CUDA_SUPPORTED_ARCHS ...)`` with the lowest nvcc that reaches it."""
    rules = []
    for assign, nvcc in sv.branches("CUDA_SUPPORTED_ARCHS"):
        archs = tuple(a.strip() for v in assign.values for a in v.split(";") if a.strip())
        odd = [a for a in archs if not _ARCH_TEXT.match(a)]
        if odd:
            gaps.append(
                Gap(
                    assign.where,
                    f"CUDA_SUPPORTED_ARCHS entries {', '.join(odd)} are not arches "
                    "(a spelling the reader does not know)",
                    "the arch rule",
                )
            )
            archs = tuple(a for a in archs if a not in odd)
        rules.append(ArchRule(None if nvcc == FLOOR else nvcc, archs, assign.line))
    return tuple(rules)


def _single_value(sv: Survey, var: str) -> tuple[str, int] | None:
    assign = sv.first(var)
    if assign is None or not assign.values:
        return None
    return assign.values[0].strip(), assign.line


def _cmake_minimum(sv: Survey, gaps: list[Gap]) -> tuple[str, int] | None:
    if sv.minimum is None:
        return None
    text, where = sv.minimum
    ver = text.split("...")[0]
    if _version(ver) is None:
        gaps.append(
            Gap(
                where,
                f"cmake_minimum_required VERSION {ver!r} is not a version",
                "the cmake minimum",
            )
        )
        return None
    return ver, int(where.rsplit(":", 1)[1])


def _python_versions(sv: Survey) -> tuple[tuple[str, ...], int | None]:
    assign = sv.first("PYTHON_SUPPORTED_VERSIONS")
    if assign is None:
        return (), None
    return tuple(p for v in assign.values for p in v.split(";") if p.strip()), assign.line


def _externals(sv: Survey) -> tuple[External, ...]:
    """The FetchContent downloads, CMakeLists.txt's first, then by file."""
    out: dict[str, External] = {}
    for fetch in sorted(sv.fetches, key=lambda f: (f.file != "CMakeLists.txt", f.file)):
        if fetch.name in out:
            continue
        key = "GIT_TAG" if "GIT_TAG" in fetch.values else "URL"
        repo = fetch.values.get("GIT_REPOSITORY")
        out[fetch.name] = External(
            name=fetch.name,
            repo=repo if repo and "${" not in repo else None,
            ref=fetch.values[key],
            env_var=sv.overrides.get(fetch.name),
            evidence=fetch.where[key],
        )
    return tuple(out.values())


# ---------------------------------------------------------------- torch pins


def _req_pin(line: str) -> str | None:
    """``X`` when the requirement line is ``torch==X`` for Linux x86_64, else None."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    try:
        req = Requirement(line)
    except (InvalidRequirement, InvalidMarker):
        return None
    if req.name.lower() != "torch":
        return None
    env = {"platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux"}
    if req.marker is not None and not req.marker.evaluate(env):
        return None
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "==="):
        return specs[0].version
    return None


def _pins_in_requirements(root: Path, rel: str) -> list[TorchPin]:
    path = root / rel
    if not path.is_file():
        return []
    pins = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        pin = _req_pin(line)
        if pin:
            pins.append(TorchPin(pin, f"{rel}:{n}"))
    return pins


def _line_of(text: str, needle: str) -> int:
    idx = text.find(needle)
    return text.count("\n", 0, idx) + 1 if idx >= 0 else 1


def _pins_in_pyproject(root: Path, gaps: list[Gap]) -> list[TorchPin]:
    path = root / "pyproject.toml"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        gaps.append(Gap("pyproject.toml", f"not TOML this reader knows: {exc}", "the torch pin"))
        return []
    reqs = doc.get("build-system", {}).get("requires", [])
    pins = []
    for r in reqs if isinstance(reqs, list) else []:
        pin = _req_pin(str(r))
        if pin:
            pins.append(TorchPin(pin, f"pyproject.toml:{_line_of(text, str(r))}"))
    return pins


# The CUDA torch pin, in the order vLLM itself treats as authoritative: CMake warns
# when torch differs from TORCH_SUPPORTED_VERSION_CUDA; the build requirements moved
# requirements-build.txt (0.6.2) -> requirements/build.txt (0.8) ->
# requirements/build/cuda.txt (0.20); 0.4.x-0.6.1 have only pyproject's build-system
# and requirements-cuda.txt.
_REQUIREMENT_FILES_BUILD = (
    "requirements/build/cuda.txt",
    "requirements/build.txt",
    "requirements-build.txt",
)
_REQUIREMENT_FILES_RUN = ("requirements/cuda.txt", "requirements-cuda.txt")


def _torch_pins(root: Path, sv: Survey, gaps: list[Gap]) -> list[TorchPin]:
    found: list[TorchPin] = []
    v = _single_value(sv, "TORCH_SUPPORTED_VERSION_CUDA")
    if v:
        found.append(TorchPin(v[0], f"CMakeLists.txt:{v[1]}"))
    for rel in _REQUIREMENT_FILES_BUILD:
        found += _pins_in_requirements(root, rel)
    found += _pins_in_pyproject(root, gaps)
    for rel in _REQUIREMENT_FILES_RUN:
        found += _pins_in_requirements(root, rel)
    pins = []
    for p in found:  # a value that is not a version ("${X}", a new spelling) is not a pin
        if _version(p.version) is None:
            gaps.append(
                Gap(p.evidence, f"torch pin {p.version!r} is not a version", "the torch pin")
            )
        else:
            pins.append(p)
    return pins


# ------------------------------------------------------------- requires-python


_RP_RESTS = "the requires-python rule"


def _requires_python(root: Path, gaps: list[Gap]) -> tuple[str | None, str | None]:
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8", errors="replace")
        try:
            rp = tomllib.loads(text).get("project", {}).get("requires-python")
        except tomllib.TOMLDecodeError as exc:
            gaps.append(Gap("pyproject.toml", f"not TOML this reader knows: {exc}", _RP_RESTS))
            rp = None
        if isinstance(rp, str):
            return rp, f"pyproject.toml:{_line_of(text, 'requires-python')}"
    setup = root / "setup.py"
    if setup.is_file():
        text = setup.read_text(encoding="utf-8", errors="replace")
        m = re.search(r"python_requires\s*=\s*([\"'])(.*?)\1", text)
        if m:
            return m.group(2), f"setup.py:{text.count(chr(10), 0, m.start()) + 1}"
    pkg = root / "PKG-INFO"
    if pkg.is_file():
        for n, line in enumerate(pkg.read_text(errors="replace").splitlines(), 1):
            if line.lower().startswith("requires-python:"):
                return line.split(":", 1)[1].strip(), f"PKG-INFO:{n}"
    return None, None


# ---------------------------------------------------------------- ModelOpt

_QUANT = Path("vllm/model_executor/layers/quantization")


def _parse_py(
    path: Path, gaps: list[Gap] | None = None, rests: str = "", rel: str | None = None
) -> ast.Module | None:
    """The file's syntax tree; None (and a Gap, where ``gaps`` is given) when this Python
    cannot parse it -- e.g. syntax newer than the Python the tool runs on."""
    try:
        return ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError) as exc:
        if gaps is not None:
            line = getattr(exc, "lineno", None)
            where = (rel or path.name) + (f":{line}" if line else "")
            gaps.append(Gap(where, f"cannot be parsed: {type(exc).__name__}: {exc}", rests))
        return None


_MO_RESTS = "the ModelOpt FP8 column"


def _modelopt_registered(root: Path, gaps: list[Gap]) -> str | None:
    """Where ``"modelopt": ModelOptFp8Config`` maps the method name, if anywhere."""
    init = root / _QUANT / "__init__.py"
    rel = f"{_QUANT.as_posix()}/__init__.py"
    tree = _parse_py(init, gaps, _MO_RESTS, rel) if init.is_file() else None
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(k, ast.Constant)
                    and k.value == "modelopt"
                    and isinstance(v, ast.Name)
                    and v.id == "ModelOptFp8Config"
                ):
                    return f"{_QUANT.as_posix()}/__init__.py:{k.lineno}"
    return None


def _min_capability(root: Path, gaps: list[Gap]) -> tuple[int | None, str | None]:
    candidates = [root / _QUANT / "modelopt.py"]
    qdir = root / _QUANT
    if qdir.is_dir():
        candidates += sorted(p for p in qdir.rglob("*.py") if p not in candidates)
    for path in candidates:
        if not path.is_file() or "ModelOptFp8Config" not in path.read_text(errors="replace"):
            continue
        rel = path.relative_to(root).as_posix()
        tree = _parse_py(path, gaps, "the ModelOpt FP8 minimum capability", rel)
        if tree is None:
            continue
        classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        cls = classes.get("ModelOptFp8Config")
        if cls is None:
            continue
        # Own method first, then a base class defined in the same module.
        chain = [cls] + [
            classes[b.id] for b in cls.bases if isinstance(b, ast.Name) and b.id in classes
        ]
        for c in chain:
            for fn in c.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "get_min_capability":
                    for node in ast.walk(fn):
                        if (
                            isinstance(node, ast.Return)
                            and isinstance(node.value, ast.Constant)
                            and isinstance(node.value.value, int)
                        ):
                            rel = path.relative_to(root).as_posix()
                            return node.value.value, f"{rel}:{node.lineno}"
        return None, None
    return None, None


def _modelopt(root: Path, gaps: list[Gap]) -> ModelOptFacts:
    reg = _modelopt_registered(root, gaps)
    if reg is None:
        return ModelOptFacts(False, None, None)
    cap, ev = _min_capability(root, gaps)
    return ModelOptFacts(True, cap, ev or reg)


# -------------------------------------------------------------------- entry


def read_facts(tree: Path, version: str) -> SourceFacts:
    """Read the build facts of the vLLM source tree at ``tree``."""
    if not (tree / "CMakeLists.txt").is_file():
        raise SourceError(
            f"{tree} has no CMakeLists.txt: not a vLLM source tree with CUDA kernels",
            fix="point at the top of an unpacked vLLM sdist or checkout (0.4.1 or later)",
        )
    try:
        sv = survey(tree)
    except Exception as exc:  # every CMake fact rests on it: the tool cannot go on
        raise SourceError(
            f"CMakeLists.txt of vLLM {version} cannot be read: {type(exc).__name__}: {exc}",
            fix="a reader of vllm-matrix does not know this CMake: report it with the release",
        ) from exc
    gaps: list[Gap] = []

    def guard(rests: str, where: str, fn: Callable[[], T], default: T) -> T:
        """One reader: what it cannot read becomes a Gap naming the file, never an ERROR."""
        try:
            return fn()
        except Exception as exc:
            line = getattr(exc, "lineno", None)
            gaps.append(
                Gap(
                    where + (f":{line}" if line else ""),
                    f"{type(exc).__name__}: {exc}",
                    rests,
                )
            )
            return default

    no_pins: list[TorchPin] = []
    no_ext: tuple[External, ...] = ()
    no_py: tuple[tuple[str, ...], int | None] = ((), None)
    no_rp: tuple[str | None, str | None] = (None, None)
    no_archs: tuple[ArchRule, ...] = ()
    no_cmake: tuple[str, int] | None = None
    pins = guard("the torch pin", "CMakeLists.txt", lambda: _torch_pins(tree, sv, gaps), no_pins)
    externals = guard(
        "the external sources (FetchContent)",
        "cmake/external_projects",
        lambda: _externals(sv),
        no_ext,
    )
    cutlass = next((e.ref for e in externals if e.name == "cutlass"), None)
    python, python_line = guard(
        "the Python rule", "CMakeLists.txt", lambda: _python_versions(sv), no_py
    )
    cmake = guard("the cmake minimum", "CMakeLists.txt", lambda: _cmake_minimum(sv, gaps), no_cmake)
    requires_python, rp_ev = guard(
        _RP_RESTS, "pyproject.toml", lambda: _requires_python(tree, gaps), no_rp
    )
    archs = guard("the CUDA arch rules", "CMakeLists.txt", lambda: _arch_rules(sv, gaps), no_archs)
    modelopt = guard(
        _MO_RESTS,
        _QUANT.as_posix(),
        lambda: _modelopt(tree, gaps),
        ModelOptFacts(False, None, None),
    )
    return SourceFacts(
        vllm=version,
        torch=pins[0].version if pins else None,
        torch_evidence=pins[0].evidence if pins else None,
        cutlass=cutlass,
        external=externals,
        cuda_archs=archs,
        python=python,
        requires_python=requires_python,
        cmake=cmake[0] if cmake else None,
        modelopt=modelopt,
        torch_pins=tuple(pins),
        python_evidence=f"CMakeLists.txt:{python_line}" if python_line else None,
        requires_python_evidence=rp_ev,
        cmake_evidence=f"CMakeLists.txt:{cmake[1]}" if cmake else None,
        gaps=tuple(gaps),
    )
