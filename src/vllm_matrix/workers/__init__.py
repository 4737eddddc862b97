"""Code that runs in another interpreter: a cell's torch env, the env that has vLLM, vLLM's
own setup.py. Each is a real file here, run by path (``python3 <file> ARGS``; never
``-m``, never source held in a string), because that interpreter does not have this
package. Each file's docstring says which interpreter runs it and what it may import
(``May import:``); tests/unit/test_workers.py holds every file to it, parsed with ``ast``:
the standard library and the named packages of that interpreter (torch; vllm where it is
the model worker), never vllm_matrix.

This ``__init__`` is what the stages import to find the files: the standard library only.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

GPU_WORKER = HERE / "gpu_worker.py"  # the gpu stage: FP8 ops on this machine's GPU
SMOKE_WORKER = HERE / "smoke_worker.py"  # the smoke stage: the extensions load
IMPORT_WORKER = HERE / "import_worker.py"  # the smoke stage: import vllm, its requirements
PARTIAL_DRIVER = HERE / "partial_driver.py"  # the build stage: setup.py cut to --targets
MODEL_WORKER = HERE / "model_worker.py"  # the model stage: one model through vLLM

__all__ = ["GPU_WORKER", "HERE", "IMPORT_WORKER", "MODEL_WORKER", "PARTIAL_DRIVER", "SMOKE_WORKER"]
