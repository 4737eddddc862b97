"""vllm_matrix.workers: code run in another interpreter, by path. Each file imports the
standard library and only what its docstring's ``May import:`` names, from the few packages
those interpreters have; none imports vllm_matrix, and nothing of vllm_matrix imports one
of them (they are found by path, in ``vllm_matrix.workers``)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from vllm_matrix import workers
from vllm_matrix.infra import proc
from vllm_matrix.stages.model import modelcheck, modelstage
from vllm_matrix.workers import model_worker

SRC = Path(__file__).resolve().parents[2] / "src"
WORKERS = sorted(p for p in workers.HERE.glob("*.py") if p.name != "__init__.py")
# What a worker's interpreter may offer beyond the standard library: torch (every cell
# env), vllm and its tokenizers (the env that serves), packaging and setuptools (vLLM's
# build requirements, in the cell's full env).
BEYOND_STDLIB = {"torch", "vllm", "tokenizers", "packaging", "setuptools"}


def _imports(path: Path) -> set[str]:
    """Top-level names of every import in the file, nested ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: a relative import cannot run by path"
            names.add((node.module or "").split(".")[0])
    return names


def _declared(path: Path) -> set[str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    m = re.search(r"^May import: (.*?)(?:\n\n|\Z)", doc, re.M | re.S)
    assert m, f"{path.name}: its docstring says what may be imported ('May import: ...')"
    assert re.search(r"^Run by: ", doc, re.M), f"{path.name}: the docstring names its interpreter"
    return {w for w in re.findall(r"[a-z_]+", m.group(1)) if w in BEYOND_STDLIB}


def test_there_are_workers() -> None:
    assert {p.name for p in WORKERS} >= {
        "gpu_worker.py",
        "smoke_worker.py",
        "import_worker.py",
        "partial_driver.py",
        "model_worker.py",
    }


@pytest.mark.parametrize("path", WORKERS, ids=lambda p: p.name)
def test_a_worker_imports_the_standard_library_and_what_it_declares(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) | _declared(path) | {"__future__"}
    assert _imports(path) - allowed == set()


def test_the_package_init_is_standard_library_only() -> None:
    init = workers.HERE / "__init__.py"
    assert _imports(init) <= set(sys.stdlib_module_names) | {"__future__"}


def test_each_worker_file_is_named_in_the_package() -> None:
    """The stages find a worker through a constant of ``vllm_matrix.workers``."""
    named = {v for v in vars(workers).values() if isinstance(v, Path)}
    assert set(WORKERS) <= named
    assert all(p.is_file() for p in named if p != workers.HERE)


def test_no_module_imports_a_worker() -> None:
    """Workers run by path in their own interpreter: none is imported by the package."""
    found = []
    stems = {p.stem for p in WORKERS}
    for path in sorted((SRC / "vllm_matrix").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "vllm_matrix.workers":
                found += [f"{path.name}: {a.name}" for a in node.names if a.name in stems]
            elif isinstance(node, ast.ImportFrom | ast.Import):
                mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                mods += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                found += [f"{path.name}: {m}" for m in mods if m.startswith("vllm_matrix.workers.")]
    assert found == []


def test_the_model_worker_reads_the_workload_the_stage_writes(tmp_path: Path) -> None:
    w = modelcheck.load()
    got = model_worker._load_workload(modelstage.write_workload(w, tmp_path / "w.json"))
    assert (got.prompts, got.max_tokens, got.throughput_requests) == (
        w.prompts,
        w.max_tokens,
        w.throughput_requests,
    )
    assert model_worker.RUN_SCHEMA == modelstage.RUN_SCHEMA
    assert model_worker.EXIT_NO_VLLM == modelstage.EXIT_NO_VLLM


def test_the_model_worker_runs_by_path_and_says_what_is_missing(tmp_path: Path) -> None:
    """Run as the stage runs it, by path, in an interpreter whose torch and vllm cannot
    import: this one without its site-packages (-S), where the standard library is all."""
    wl = modelstage.write_workload(modelcheck.load(), tmp_path / "w.json")
    argv = [sys.executable, "-S", workers.MODEL_WORKER, tmp_path, tmp_path / "o", "--workload", wl]
    done = proc.run(argv, check=False, env={"PYTHONPATH": ""}, timeout=120)
    assert done.returncode == model_worker.EXIT_NO_VLLM
    assert "missing module: " in done.output and "vllm_matrix" not in done.output
