"""The smoke stage's load check: loads each compiled extension of an installed wheel by
file and lists what it registers (pybind functions, submodules, ``torch.ops`` namespaces).

    python3 smoke_worker.py SITE EXT_RELPATH...

Extensions are loaded by file (``import vllm._C`` would run vllm/__init__.py, which needs
vLLM's Python deps). Prints one line, ``SMOKE-JSON {...}``; the verdict is ``audit.smoke``'s.

Run by: the cell's full torch env's python (``stages/audit.py``, ``smoke``), with the
wheel installed under SITE.
May import: the standard library, torch.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from typing import Any

site, exts = sys.argv[1], sys.argv[2:]
out: dict[str, Any] = {"extensions": {}, "ops": {}}
import torch  # noqa: E402 (after the arguments, as the stage's script always did)

out["torch"] = torch.__version__
out["cuda_available"] = bool(torch.cuda.is_available())
for rel in exts:
    mod = rel.split("/")[-1].split(".")[0]
    full = ".".join([*rel.split("/")[:-1], mod])
    entry: dict[str, Any] = {"file": rel}
    try:
        loader = importlib.machinery.ExtensionFileLoader(full, site + "/" + rel)
        spec = importlib.util.spec_from_file_location(full, site + "/" + rel, loader=loader)
        assert spec is not None
        m = importlib.util.module_from_spec(spec)
        loader.exec_module(m)
        subs: dict[str, list[str]] = {}
        funcs: list[str] = []
        for k in sorted(dir(m)):
            if k.startswith("__"):
                continue
            v = getattr(m, k)
            if isinstance(v, types.ModuleType):
                subs[k] = sorted(x for x in dir(v) if not x.startswith("__"))
            elif callable(v):
                funcs.append(k)
        entry.update(
            loaded=True,
            submodules=subs,
            functions=funcs,
            n_functions=len(funcs) + sum(len(s) for s in subs.values()),
        )
    except Exception as exc:
        entry.update(loaded=False, error=f"{type(exc).__name__}: {exc}")
    out["extensions"][full] = entry
names = torch._C._dispatch_get_all_op_names()
for full in out["extensions"]:
    ns = full.split(".")[-1]
    ops = sorted(n.split("::", 1)[1] for n in names if n.startswith(ns + "::"))
    out["ops"][ns] = ops
print("SMOKE-JSON " + json.dumps(out))
