"""One advice: what to change so that vLLM builds for the target, smallest change first.

Every command that advises (a preflight verdict's fix in compat.md, the map's tooltips,
``newest``, ``blackwell``, ``doctor``, ``pixi-snippet``) calls :func:`advise` (through an
:class:`Adviser`, which caches), so the same question gets the same answer everywhere.

An answer is a short list of concrete combinations, vLLM × torch build × CUDA toolkit, each
judged by every preflight rule (the release's own CMake gates and pins, the API scan of
its csrc/, the toolchain facts) and ordered by how much of what the user has it changes:

1. keep the toolchain, change vLLM (the newest release the toolchain builds);
2. keep vLLM, change the toolchain (its pinned torch in a build with code for the arch
   first, then newer torch builds; the oldest nvcc of that build's CUDA major that
   targets the arch);
3. on that toolchain, the newest vLLM pinned to its torch (what upstream ships), else
   the newest preflight lets through;
4. the newest release whose own pinned torch serves the arch.

Each carries the depth of its evidence: "preflight" (rules only), or the verdict of a
compile of the same cell recorded in a result file (this machine's results/ or
reports/device/, the GPU machine's), with that machine named.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from vllm_matrix.infra import results
from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.config import Cell, split_torch
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import ERROR, PREDICTED_FAIL, Finding, Status
from vllm_matrix.knowledge import toolchains
from vllm_matrix.knowledge.toolchains import Knowledge, TorchFacts
from vllm_matrix.sources import releases as releases_mod
from vllm_matrix.stages import preflight

MAX_OPTIONS = 3
# The host compiler is this machine's matter (an older gcc fixes it), and whether the
# toolkit can be had here only decides how deep the evidence goes: neither is advice.
NEUTRAL_HOST = preflight.Host(None, {}, None)


@dataclass(frozen=True)
class Have:
    """What the user has (or asks about)."""

    torch: str  # "2.6.0" (the index's default build) or "2.7.1+cu128"
    cuda: str
    arch: tuple[str, ...]
    python: str = "3.12"
    vllm: str | None = None
    driver_cuda: str | None = None  # the target's driver runs CUDA up to this


@dataclass(frozen=True)
class Option:
    vllm: str
    torch: str  # the build's label, "2.7.0+cu128"
    cuda: str
    changes: tuple[str, ...]  # "torch 2.6.0+cu124 → 2.7.0+cu128", ...; () = nothing changes
    evidence: str  # "preflight" or "PASS at probe on <machine>"
    notes: tuple[str, ...] = ()

    def combo(self) -> str:
        return f"vLLM {self.vllm} × torch {self.torch} × CUDA {self.cuda}"

    def text(self) -> str:
        what = ", ".join(self.changes) if self.changes else "nothing to change"
        extra = "; ".join(self.notes)
        return f"{self.combo()} ({what}{'; ' + extra if extra else ''}; evidence: {self.evidence})"

    def to_json(self) -> dict[str, Any]:
        return {
            "vllm": self.vllm,
            "torch": self.torch,
            "cuda": self.cuda,
            "changes": list(self.changes),
            "evidence": self.evidence,
            "notes": list(self.notes),
            "text": self.text(),
        }


@dataclass(frozen=True)
class Advice:
    have: Have
    ok_as_is: bool
    options: tuple[Option, ...]
    tried: str = ""  # when there is no option: what was looked at

    def text(self) -> str:
        """The fix, one line: every option, smallest change first."""
        if self.ok_as_is:
            return "nothing to change (preflight)"
        if not self.options:
            return f"no known combination serves it ({self.tried})"
        return "; or ".join(o.text() for o in self.options)

    def to_json(self) -> results.AdviceDoc:
        h = self.have
        return {
            "have": {
                "vllm": h.vllm,
                "torch": h.torch,
                "cuda": h.cuda,
                "arch": list(h.arch),
                "python": h.python,
            },
            "ok_as_is": self.ok_as_is,
            "options": [o.to_json() for o in self.options],
            "tried": self.tried,
            "text": self.text(),
        }


# ------------------------------------------------------------ evidence from compiles


@dataclass(frozen=True)
class Compiled:
    verdict: str
    depth: str
    machine: str
    file: str

    def text(self) -> str:
        return f"{self.verdict} at {self.depth} on {self.machine} ({self.file})"


def _key(vllm: str, torch: str, cuda: str, arch: Iterable[str], know: Knowledge) -> str:
    tf = know.torch_facts(torch)
    label = tf.label if tf else torch
    archs = "+".join(sorted(Arch.parse(a).base.name for a in arch))
    return f"{vllm}|{label}|{cuda}|{archs}"


compiled_key = _key


def compiled_results(dirs: Iterable[Path], know: Knowledge) -> dict[str, Compiled]:
    """Cells compiled (probe or deeper) in the result files under ``dirs``, keyed by
    vLLM × torch build × CUDA × arch, the deepest first seen kept."""
    out: dict[str, Compiled] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.json")):
            try:
                doc = results.read(p)
                c, v = doc["cell"], doc["verdict"]
            except (ValueError, KeyError, OSError, results.ResultFormatError):
                continue
            if v.get("depth", "").split(" ")[0] not in results.COMPILED:
                continue
            k = _key(c["vllm"], c["torch"], c["cuda"], c["arch"], know)
            mach = results.machine_label(doc.get("machine") or {})
            where = f"{p.parent.name}/{p.name}"
            out.setdefault(k, Compiled(v["verdict"], v["depth"], mach, where))
    return out


def result_dirs(root: Path) -> tuple[Path, ...]:
    """Where a workspace keeps compiled evidence: its results/ and reports/device/."""
    return (root / "results", root / "reports" / "device")


# ------------------------------------------------------------------------ the adviser


@dataclass
class Adviser:
    """Caches preflight verdicts and walks, so many questions (a map) cost little."""

    know: Knowledge = field(default_factory=toolchains.load)
    pinned: dict[str, str] = field(default_factory=releases_mod.pinned)
    compiled: dict[str, Compiled] = field(default_factory=dict)
    # vLLM version -> (SourceFacts, tree, scan, gates); default: the map's release facts
    # (this machine's cache, the committed snapshot, else the sdist)
    facts: Callable[[str], Any] | None = None
    _status: dict[
        tuple[str, str, str, tuple[str, ...], str], tuple[Status, tuple[Finding, ...]]
    ] = field(default_factory=dict)
    _newest: dict[tuple[str, str, tuple[str, ...], str], str | None] = field(default_factory=dict)
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def _cached(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def releases(self) -> list[str]:
        return sorted(
            (v for v in self.pinned if not Version(v).is_prerelease), key=Version, reverse=True
        )

    def release(self, vllm: str) -> Any:
        """The release's facts (``.facts``, ``.tree``, ``.scan``, ``.gates``)."""
        return self._facts(vllm)

    def _facts(self, vllm: str) -> Any:
        if self.facts is not None:
            return self.facts(vllm)
        from vllm_matrix.pipeline import mapping  # the cached per-release facts

        return mapping.release_facts(vllm, self.know)

    def findings(
        self, vllm: str, torch: str, cuda: str, arch: tuple[str, ...], python: str
    ) -> tuple[Status, tuple[Finding, ...]]:
        k = (vllm, torch, cuda, arch, python)
        if k not in self._status:
            try:
                rf = self._facts(vllm)
            except MatrixError as exc:  # the release's source cannot be read here
                err = Finding("source", "error", exc.message, exc.fix or "")
                self._status[k] = (ERROR, (err,))
                return self._status[k]
            cell = Cell(vllm, torch, cuda, self.know.provider_for(cuda), python, arch)
            found = preflight.check(
                cell,
                rf.facts,
                self.know,
                None,  # scan and gates are the release's facts: no sdist needed
                NEUTRAL_HOST,
                self.pinned,
                scan=rf.scan,
                kernel_gates=rf.gates,
            )
            found = [f for f in found if f.rule != "toolkit-obtainable"]
            self._status[k] = (preflight.status_of(found), tuple(found))
        return self._status[k]

    def ok(self, vllm: str, torch: str, cuda: str, arch: tuple[str, ...], python: str) -> bool:
        return self.findings(vllm, torch, cuda, arch, python)[0] not in (PREDICTED_FAIL, ERROR)

    def serves(self, torch: str, cuda: str, arch: tuple[str, ...]) -> bool:
        """Whether the toolchain alone can serve the arch (else no release can)."""
        tf = self.know.torch_facts(torch)
        nv = self.know.nvcc_for(cuda)
        if tf is None or nv is None:
            return True  # unknown facts: let the rules say
        same_major = Version(tf.cuda).major == Version(cuda).major
        return same_major and all(tf.runs_on(a) and nv.can_target(a) for a in arch)

    def newest_ok(self, torch: str, cuda: str, arch: tuple[str, ...], python: str) -> str | None:
        """The newest release no rule predicts to fail with this toolchain."""
        k = (torch, cuda, arch, python)
        if k not in self._newest:
            found = None
            if self.serves(torch, cuda, arch):
                found = next(
                    (v for v in self.releases() if self.ok(v, torch, cuda, arch, python)), None
                )
            self._newest[k] = found
        return self._newest[k]

    def newest_on(self, torch: str, cuda: str, arch: tuple[str, ...], python: str) -> str | None:
        key = ("on", torch, cuda, arch, python)
        out: str | None = self._cached(key, lambda: self._newest_on(torch, cuda, arch, python))
        return out

    def _newest_on(self, torch: str, cuda: str, arch: tuple[str, ...], python: str) -> str | None:
        """For a toolchain the user would change to anyway: the newest release pinned to
        that torch version that preflight lets through (the combination upstream ships),
        else the newest release preflight lets through."""
        tv = Version(split_torch(torch)[0])
        if self.serves(torch, cuda, arch):
            for v in self.releases():
                p = self.pinned.get(v)
                if p and Version(p) == tv and self.ok(v, torch, cuda, arch, python):
                    return v
        return self.newest_ok(torch, cuda, arch, python)

    def evidence(self, vllm: str, torch: str, cuda: str, arch: tuple[str, ...]) -> str:
        c = self.compiled.get(_key(vllm, torch, cuda, arch, self.know))
        return c.text() if c else "preflight"

    def _label(self, torch: str) -> str:
        tf = self.know.torch_facts(torch)
        return tf.label if tf else torch

    def toolchains(self, have: Have, first_torch: str | None = None) -> list[tuple[str, str]]:
        key = ("chains", have.torch, have.cuda, have.arch, first_torch, have.driver_cuda)
        out: list[tuple[str, str]] = self._cached(key, lambda: self._toolchains(have, first_torch))
        return out

    def _toolchains(self, have: Have, first_torch: str | None) -> list[tuple[str, str]]:
        """(torch build, nvcc) pairs that serve the arch, smallest change from ``have``
        first: the user's torch build, then ``first_torch``'s builds (a release's pin),
        then newer torch versions, oldest first; within a build, the user's nvcc if it
        serves, else the oldest nvcc of the build's CUDA major that targets the arch."""
        tv = Version(split_torch(have.torch)[0])
        builds: list[TorchFacts] = [
            f for f in self.know.torch.values() if all(f.runs_on(a) for a in have.arch)
        ]
        own = self.know.torch_facts(have.torch)

        want = Version(have.cuda)

        def rank(f: TorchFacts) -> tuple[int, Version, bool, bool, Version]:
            # within a torch version: the user's CUDA major first, then the nearest CUDA
            # at or above the user's (a newer toolkit is an install; an older one a swap)
            c = Version(f.cuda)
            near = (c.major != want.major, c < want, c)
            if own is not None and f.label == own.label:
                return (0, Version(f.version), *near)
            if first_torch and Version(f.version) == Version(first_torch):
                return (1, Version(f.version), *near)
            newer = Version(f.version) >= tv
            return (2 if newer else 3, Version(f.version), *near)

        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for f in sorted(builds, key=rank):
            if f.label in seen:
                continue
            seen.add(f.label)
            spec = f.version if f.default else f.label
            nvccs = sorted(
                (
                    v
                    for v, n in self.know.nvcc.items()
                    if Version(v).major == Version(f.cuda).major
                    and all(n.can_target(a) for a in have.arch)
                ),
                key=Version,
            )
            if have.cuda in nvccs:
                nvccs.remove(have.cuda)
                nvccs.insert(0, have.cuda)
            if have.driver_cuda:  # a build the target's driver cannot run is no option
                cap = Version(have.driver_cuda)
                nvccs = [v for v in nvccs if Version(v) <= cap] if Version(f.cuda) <= cap else []
            if nvccs:
                out.append((spec, nvccs[0]))
        return out

    def _changes(self, have: Have, vllm: str, torch: str, cuda: str) -> tuple[str, ...]:
        out = []
        if have.vllm and Version(vllm) != Version(have.vllm):
            out.append(f"vLLM {have.vllm} → {vllm}")
        if self._label(torch) != self._label(have.torch):
            out.append(f"torch {self._label(have.torch)} → {self._label(torch)}")
        if cuda != have.cuda:
            out.append(f"CUDA {have.cuda} → {cuda}")
        return tuple(out)

    def _option(self, have: Have, vllm: str, torch: str, cuda: str) -> Option:
        notes = []
        pin = self.pinned.get(vllm)
        if pin and Version(pin) != Version(split_torch(torch)[0]):
            notes.append(f"off vLLM {vllm}'s pin torch {pin}")
        tf = self.know.torch_facts(torch)
        if tf and tf.basis != toolchains.MEASURED:
            notes.append(f"torch {tf.label} facts documented, not measured here")
        return Option(
            vllm,
            self._label(torch),
            cuda,
            self._changes(have, vllm, torch, cuda),
            self.evidence(vllm, torch, cuda, have.arch),
            tuple(notes),
        )

    def advise(self, have: Have) -> Advice:
        if have.vllm and self.ok(have.vllm, have.torch, have.cuda, have.arch, have.python):
            return Advice(have, True, ())
        opts: list[Option] = []

        def add(vllm: str | None, torch: str, cuda: str) -> None:
            if vllm is None:
                return
            o = self._option(have, vllm, torch, cuda)
            if all(o.combo() != x.combo() for x in opts):
                opts.append(o)

        # 1. the toolchain as it is, another vLLM
        add(self.newest_ok(have.torch, have.cuda, have.arch, have.python), have.torch, have.cuda)
        pin = self.pinned.get(have.vllm) if have.vllm else None
        chains = self.toolchains(have, pin)
        # 2. the vLLM as it is, another toolchain
        if have.vllm:
            for torch, cuda in chains:
                if self.ok(have.vllm, torch, cuda, have.arch, have.python):
                    add(have.vllm, torch, cuda)
                    add(self.newest_on(torch, cuda, have.arch, have.python), torch, cuda)  # 3.
                    break
        # 3. (no vLLM given) the smallest toolchain change with any release on it
        if not have.vllm or len(opts) < 2:
            for torch, cuda in chains:
                if self._label(torch) == self._label(have.torch) and cuda == have.cuda:
                    continue  # option 1 already asked the toolchain as it is
                v = self.newest_on(torch, cuda, have.arch, have.python)
                if v:
                    add(v, torch, cuda)
                    break
        # 4. the newest release on its own pinned torch
        top = self.newest_on_pin(have.arch, have.python, have.driver_cuda)
        if top:
            add(*top)
        opts.sort(key=lambda o: len(o.changes))
        tried = (
            f"torch {self._label(have.torch)} × CUDA {have.cuda} and every known torch build "
            f"with code for {', '.join(Arch.parse(a).sm for a in have.arch)}"
        )
        return Advice(have, False, tuple(opts[:MAX_OPTIONS]), "" if opts else tried)

    def newest_on_pin(
        self, arch: tuple[str, ...], python: str, driver_cuda: str | None = None
    ) -> tuple[str, str, str] | None:
        key = ("on-pin", arch, python, driver_cuda)
        out: tuple[str, str, str] | None = self._cached(
            key, lambda: self._newest_on_pin(arch, python, driver_cuda)
        )
        return out

    def _newest_on_pin(
        self, arch: tuple[str, ...], python: str, driver_cuda: str | None
    ) -> tuple[str, str, str] | None:
        """The newest release that builds for ``arch`` with (a build of) its own pinned
        torch and the oldest nvcc that serves it."""
        for v in self.releases():
            pin = self.pinned.get(v)
            if not pin:
                continue
            tf = self.know.torch_facts(pin)
            mine = Have(pin, tf.cuda if tf else "0.0", arch, python, driver_cuda=driver_cuda)
            for torch, cuda in self.toolchains(mine):
                if Version(split_torch(torch)[0]) != Version(pin):
                    break  # ranked: the pin's builds come first
                if self.ok(v, torch, cuda, arch, python):
                    return v, torch, cuda
        return None


def adviser_for(root: Path | None = None, **kw: Any) -> Adviser:
    """An adviser that counts the compiles recorded under ``root`` (results/, reports/device/)."""
    know = kw.pop("know", None) or toolchains.load()
    compiled = compiled_results(result_dirs(root), know) if root is not None else {}
    return Adviser(know=know, compiled=compiled, **kw)


def to_text(d: dict[str, Any]) -> str:
    """The stored advice (``Advice.to_json``) as its one line."""
    return str(d.get("text", ""))


def dumps(a: Advice) -> str:
    return json.dumps(a.to_json(), indent=1)


__all__ = [
    "Advice",
    "Adviser",
    "Have",
    "Option",
    "adviser_for",
    "compiled_results",
    "result_dirs",
]
