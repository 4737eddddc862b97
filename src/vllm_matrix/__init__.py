"""vllm-matrix: answer "will this vLLM combination build?" fast, then build it."""

__version__ = "0.1.0"
