"""Where a cell's inputs come from: the vLLM tree (a release sdist from the index, a local
tree, a git checkout: ``sdist``), the offline sources of vLLM's FetchContent dependencies
(``externals``), facts read from torch wheels on the index (``torchwheel``) and each
release's torch pin (``releases``).

May import: infra, knowledge, cmake, gpu. Below the stages (every stage may use a source);
the upward imports it still has (the facts reader, the toolkit's wheel unzip) are listed,
one by one, in pyproject's import-linter contract.
"""
