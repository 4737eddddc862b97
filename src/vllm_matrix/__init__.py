"""vllm-matrix: answer "will this vLLM combination build?" fast, then build it.

Layers, top to bottom (pyproject's import-linter contracts): cli -> commands -> pipeline ->
stages | report -> sources -> gpu | cmake -> knowledge -> infra; a package imports only
those below it. workers holds the files run by path in other interpreters and imports
nothing of the package.
"""

__version__ = "0.1.0"
