"""The build stage's own error."""

from __future__ import annotations

from vllm_matrix.infra.errors import MatrixError


class BuildError(MatrixError):
    """The build stage could not be set up (the compile itself failing is a FAIL result)."""
