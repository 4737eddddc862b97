"""A ModelOpt FP8 ``hf_quant_config.json`` checked with the release's own parser.

vLLM's ``model_executor/layers/quantization/modelopt.py`` cannot be imported without
vLLM's runtime (it imports torch, vllm.config, the fused-MoE layers and, through them,
the compiled ops). So the parser is taken from the release's *source*: the ``from_config``
classmethod ModelOptFp8Config uses (its own, or ModelOptQuantConfigBase's from 0.11 on),
``QuantizationConfig.get_from_keys`` (base_config.py) and the module's ``QUANT_ALGOS``
list are extracted with ``ast`` and executed as written, against a stand-in ``cls`` that
records what the parser would construct. Which FP8 ``quant_algo`` values the FP8 config
accepts, and the linear method each selects, are read statically from
``ModelOptFp8Config.__init__`` (its ``if self.quant_method == ...`` chain). So the report's
ModelOpt FP8 column rests on the release's own code, not on a copy of its rules.

``fp8_column`` is that column for a cell (the preflight stage's and the Blackwell table's):
the parser's answer, then the FP8 GEMM the release dispatches for each arch (fp8gemm.py),
deepened by audits of compiled results.
"""

from __future__ import annotations

import ast
import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vllm_matrix.infra.arch import Arch
from vllm_matrix.infra.config import Cell
from vllm_matrix.infra.errors import MatrixError
from vllm_matrix.infra.results import Finding
from vllm_matrix.knowledge import toolchains
from vllm_matrix.stages import preflight
from vllm_matrix.stages.facts import SourceFacts
from vllm_matrix.stages.preflight import fp8gemm
from vllm_matrix.stages.probe.configure import build_model

QUANT_DIR = Path("vllm") / "model_executor" / "layers" / "quantization"

# The config a ModelOpt FP8 export writes (per-tensor weight and activation scales).
EXAMPLE = {
    "producer": {"name": "modelopt", "version": "0.29.0"},
    "quantization": {
        "quant_algo": "FP8",
        "kv_cache_quant_algo": None,
        "exclude_modules": ["lm_head"],
    },
}


@dataclass(frozen=True)
class Check:
    accepted: bool
    quant_algo: str | None
    linear_method: str | None
    message: str
    how: str  # what of the release ran, and what was read statically
    parsed: dict[str, Any] = field(default_factory=dict)
    # file:line and what the reader could not read; the check then says nothing either way
    unreadable: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "quant_algo": self.quant_algo,
            "linear_method": self.linear_method,
            "message": self.message,
            "how": self.how,
            "parsed": self.parsed,
            "unreadable": self.unreadable,
        }


class _Recorded:
    """What the parser returns instead of a real config object."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


def _classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def _function_source(text: str, fn: ast.FunctionDef) -> str:
    """The function's own source, decorators dropped, dedented to module level."""
    lines = text.splitlines()
    body = "\n".join(lines[fn.lineno - 1 : fn.end_lineno])
    return textwrap.dedent(body)


def _find_from_config(
    tree: ast.Module, classes: dict[str, ast.ClassDef]
) -> tuple[str, ast.FunctionDef] | None:
    """``from_config`` as ModelOptFp8Config resolves it: its own, else a base's in this file."""
    seen: list[str] = []
    todo = ["ModelOptFp8Config"]
    while todo:
        name = todo.pop(0)
        cls = classes.get(name)
        if cls is None or name in seen:
            continue
        seen.append(name)
        fn = _method(cls, "from_config")
        if fn is not None:
            return name, fn
        todo += [b.id for b in cls.bases if isinstance(b, ast.Name)]
    return None


def _fp8_branches(cls: ast.ClassDef | None) -> dict[str, str]:
    """quant_algo -> linear method class, from ``if self.quant_method == "X": self.
    LinearMethodCls = Y`` in ModelOptFp8Config.__init__ (0.11+); {} where there is none."""
    out: dict[str, str] = {}
    init = _method(cls, "__init__") if cls is not None else None
    if init is None:
        return out
    for node in ast.walk(init):
        if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
            continue
        t = node.test
        if not (
            isinstance(t.left, ast.Attribute)
            and t.left.attr == "quant_method"
            and len(t.comparators) == 1
            and isinstance(t.comparators[0], ast.Constant)
            and isinstance(t.comparators[0].value, str)
        ):
            continue
        for stmt in node.body:
            if (
                isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Name)
                and any(isinstance(x, ast.Attribute) for x in stmt.targets)
            ):
                out[t.comparators[0].value] = stmt.value.id
    return out


class Unreadable(Exception):
    """A construct of the release's source that the reader cannot evaluate."""

    def __init__(self, line: int | None, what: str) -> None:
        super().__init__(what)
        self.line = line
        self.what = what


def _value(node: ast.expr, names: dict[str, Any]) -> Any:
    """A literal, as ``ast.literal_eval`` reads it, plus what module-level lists are built
    from: names bound earlier in the module to such values, ``*name`` inside a list/tuple
    (0.34.0: ``QUANT_ALGOS = [*LINEAR_ALGOS, "MIXED_PRECISION"]``) and ``a + b``."""
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        out: list[Any] = []
        for e in node.elts:
            if isinstance(e, ast.Starred):
                inner = _value(e.value, names)  # a dict unpacks to its keys, as in Python
                if not isinstance(inner, (list, tuple, set, frozenset, dict)):
                    raise Unreadable(e.lineno, f"*{ast.unparse(e.value)} is not a list")
                out += list(inner)
            else:
                out.append(_value(e, names))
        return tuple(out) if isinstance(node, ast.Tuple) else out
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _value(node.left, names), _value(node.right, names)
        if isinstance(left, list) and isinstance(right, list):
            return left + right
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise Unreadable(
            getattr(node, "lineno", None),
            f"{ast.unparse(node)[:120]!r} ({type(node).__name__}) is not a value the reader "
            "can evaluate",
        ) from None


def _quant_algos(tree: ast.Module) -> list[str] | None:
    """The module's QUANT_ALGOS; Unreadable when it is built in a way the reader cannot
    follow. Names bound before it at module level to literal values are known."""
    names: dict[str, Any] = {}
    for n in tree.body:
        if isinstance(n, ast.Assign) and len(n.targets) == 1:
            target = n.targets[0]
        elif isinstance(n, ast.AnnAssign) and n.value is not None:  # X: dict[...] = {...}
            target = n.target
        else:
            continue
        if not isinstance(target, ast.Name) or n.value is None:
            continue
        if target.id == "QUANT_ALGOS":
            value = _value(n.value, names)
            if not isinstance(value, (list, tuple, set)):
                raise Unreadable(n.lineno, f"QUANT_ALGOS is a {type(value).__name__}, not a list")
            return [str(v) for v in value]
        try:
            names[target.id] = _value(n.value, names)
        except Unreadable:
            names.pop(target.id, None)  # not a literal: a later use of it is Unreadable
    return None


def check(root: Path, config: dict[str, Any]) -> Check:
    """Run the release at ``root``'s ModelOpt parser on ``config`` (hf_quant_config.json).

    What the reader cannot read or run of the release's source (a construct it does not
    know, a file moved, syntax newer than this Python) is a Check with ``unreadable`` set,
    naming file:line: the answer is then unknown, never an exception."""
    path = root / QUANT_DIR / "modelopt.py"
    if not path.is_file():
        return Check(False, None, None, "this vLLM has no modelopt.py", "file missing")
    rel = (QUANT_DIR / "modelopt.py").as_posix()
    try:
        return _check(root, path, config)
    except Unreadable as exc:
        where = f"{rel}:{exc.line}" if exc.line else rel
        return _unreadable(where, exc.what)
    except SyntaxError as exc:
        name = Path(exc.filename or rel).name
        f = (QUANT_DIR / name).as_posix() if name != "<unknown>" else rel
        return _unreadable(f"{f}:{exc.lineno}", f"cannot be parsed by this Python: {exc.msg}")
    except OSError as exc:
        return _unreadable(rel, f"a file the parser needs cannot be read: {exc}")
    except Exception as exc:  # the release's own code did something the stand-in lacks
        return _unreadable(rel, f"its parser could not be run here: {type(exc).__name__}: {exc}")


def _unreadable(where: str, what: str) -> Check:
    msg = f"unknown: {where}: {what}"
    return Check(False, None, None, msg, "not read", unreadable=f"{where}: {what}")


def _check(root: Path, path: Path, config: dict[str, Any]) -> Check:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, "modelopt.py")
    classes = _classes(tree)
    found = _find_from_config(tree, classes)
    if found is None:
        return Check(False, None, None, "no from_config for ModelOptFp8Config", "static")
    owner, fn = found
    base_text = (root / QUANT_DIR / "base_config.py").read_text(encoding="utf-8")
    base_tree = ast.parse(base_text, "base_config.py")
    qc = _classes(base_tree).get("QuantizationConfig")
    gfk = _method(qc, "get_from_keys") if qc is not None else None
    ns: dict[str, Any] = {"Any": Any, "Dict": dict, "List": list, "Optional": Any}
    algos = _quant_algos(tree)
    if algos is not None:
        ns["QUANT_ALGOS"] = algos
        ns["KV_CACHE_QUANT_ALGOS"] = ["FP8"]
    if gfk is not None:
        exec(compile(_function_source(base_text, gfk), "base_config.py", "exec"), ns)
    exec(compile(_function_source(text, fn), str(path.name), "exec"), ns)
    from_config = ns["from_config"]

    stand_in = type(
        "ModelOptFp8Config",
        (_Recorded,),
        {
            "get_from_keys": staticmethod(ns.get("get_from_keys", _get_from_keys)),
            "_from_config": classmethod(lambda cls, **kw: _Recorded(**kw)),
        },
    )
    how = (
        f"{owner}.from_config executed from the release's modelopt.py:{fn.lineno} "
        f"(QUANT_ALGOS {algos}); FP8 branches read from ModelOptFp8Config.__init__"
    )
    try:
        made = from_config(stand_in, config)
    except (ValueError, KeyError, TypeError) as exc:
        return Check(False, None, None, f"the release's parser rejects it: {exc}", how)
    parsed = dict(made.kwargs) or {"args": list(made.args)}
    parsed.pop("original_config", None)
    # 0.11+: the parser hands quant_method on by name; older ones construct
    # ModelOptFp8Config(is_checkpoint_fp8_serialized, ...) from the config's quant_algo.
    given = config.get("quantization", config)
    algo = (
        parsed.get("quant_method")
        or str(given.get("quant_algo", "") if isinstance(given, dict) else "").upper()
    )
    branches = _fp8_branches(classes.get("ModelOptFp8Config"))
    if branches and algo not in branches:
        msg = f"quant_algo {algo} is not an FP8 algo of ModelOptFp8Config ({', '.join(branches)})"
        return Check(False, algo, None, msg, how, _jsonable(parsed))
    linear = branches.get(str(algo)) if branches else "ModelOptFp8LinearMethod"
    msg = f"accepted: quant_algo {algo} -> {linear}"
    return Check(True, algo, linear, msg, how, _jsonable(parsed))


def _get_from_keys(config: dict[str, Any], keys: list[str]) -> Any:
    for key in keys:
        if key in config:
            return config[key]
    raise ValueError(f"Cannot find any of {keys} in the model's quantization config.")


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(json.dumps(d, default=str)))


__all__ = ["EXAMPLE", "Check", "Unreadable", "check"]


# ------------------------------------------------------------ the ModelOpt FP8 column


@dataclass(frozen=True)
class ModeloptFp8:
    """The ModelOpt FP8 answer for a cell: the column, what it rests on, the release's
    config check, the FP8 GEMM per arch, and a finding when the parser could not be read."""

    column: str
    evidence: str
    config: dict[str, Any]
    answers: tuple[fp8gemm.Answer, ...]
    unreadable: Finding | None


def fp8_column(
    cell: Cell,
    facts: SourceFacts,
    root: Path,
    audit_dirs: Sequence[Path] = (),
    previous: Mapping[str, Any] | None = None,
    know: toolchains.Knowledge | None = None,
) -> ModeloptFp8:
    """The one ModelOpt FP8 answer (the preflight stage's, the Blackwell table's): the
    release's own parser run on a ModelOpt FP8 config (what of it cannot be read is a
    warning naming file:line, and the column says "unknown"), then the FP8 GEMM the release
    dispatches for each arch (stages/preflight/fp8gemm.py), deepened by audits: the cell's
    ``previous`` result and the result files in ``audit_dirs``."""
    know = know or toolchains.load()
    column, evidence = preflight.modelopt_column(cell, facts)
    cfg = check(root, EXAMPLE)
    answers: list[fp8gemm.Answer] = []
    unreadable = None
    if cfg.unreadable is not None:
        where, _, what = cfg.unreadable.partition(": ")
        unreadable = preflight.unreadable(
            f"vLLM {facts.vllm}", where, what, "the ModelOpt FP8 column (its config parser)"
        )
        column = f"unknown: {where} could not be read"
    elif not facts.modelopt.supported:
        pass
    elif not cfg.accepted:
        column = f"no: {cfg.message}"
    elif not column.startswith("no"):
        answers = [_fp8_answer(cell, audit_dirs, previous, root, a, know) for a in cell.arch]
        column = "; ".join(
            (f"{Arch.parse(a.arch).sm}: " if len(answers) > 1 else "") + a.column for a in answers
        )
        evidence = "; ".join([evidence, *(e for a in answers for e in a.evidence)])
    return ModeloptFp8(
        column,
        f"{evidence}; hf_quant_config.json FP8: {cfg.message} ({cfg.how})",
        cfg.to_json(),
        tuple(answers),
        unreadable,
    )


def _fp8_answer(
    cell: Cell,
    audit_dirs: Sequence[Path],
    previous: Mapping[str, Any] | None,
    root: Path,
    arch: str,
    know: toolchains.Knowledge,
) -> fp8gemm.Answer:
    """The arch's FP8 GEMM from the source (CMake evaluated for an nvcc that reaches the
    arch), deepened by any audit of the same release and arch: this cell's previous run,
    or a result from another machine (in ``audit_dirs``)."""
    nvcc, why = fp8gemm.nvcc_for_scan(cell.cuda, arch, know)
    try:
        model = build_model(root, nvcc, (arch,), python=cell.python)
    except MatrixError as exc:
        return fp8gemm.Answer(arch, None, f"unknown: CMake not evaluated ({exc.message})", ())
    ans = fp8gemm.answer(root, arch, nvcc, model)
    if why:
        ans = replace(ans, evidence=(*ans.evidence, f"CMake evaluated with nvcc {nvcc}: {why}"))
    for objects, machine in _audits(cell, audit_dirs, previous, arch):
        ans = fp8gemm.confirm(ans, objects, machine)
        if ans.depth == fp8gemm.AUDITED:
            break
    return ans


def _audits(
    cell: Cell, audit_dirs: Sequence[Path], previous: Mapping[str, Any] | None, arch: str
) -> list[tuple[list[dict[str, Any]], str]]:
    """Audit stages' FP8 GEMM objects of results for this vLLM whose arches include
    ``arch``'s capability, with the machine they were compiled on."""
    number = Arch.parse(arch).number
    docs: list[Mapping[str, Any]] = [previous] if previous else []
    for d in audit_dirs:
        docs += [x for p in sorted(d.glob("*.json")) if (x := _read_json(p)) is not None]
    out = []
    for doc in docs:
        c, m = doc.get("cell", {}), doc.get("machine") or {}
        if c.get("vllm") != cell.vllm or number not in {
            Arch.parse(a).number for a in c.get("arch", [])
        }:
            continue
        for s in doc.get("stages", []):
            objs = s.get("details", {}).get("fp8_gemm_objects") if s["stage"] == "audit" else None
            if objs:
                machine = f"{m.get('gpu') or 'no GPU'}, {m.get('cpus', '?')} cores ({c.get('id')})"
                out.append((list(objs), machine))
    return out


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
