from __future__ import annotations

import socket
from functools import cache

import pytest


@cache
def index_reachable() -> str | None:
    """None if the package index answers, else why not (integration tests skip on it)."""
    from vllm_matrix import index

    try:
        url = index.index_url()
        host = url.split("/")[2].split(":")[0]
        socket.getaddrinfo(host, 443)
        index.project_files("vllm")
    except Exception as exc:  # any failure means: cannot test against the real index here
        return f"package index not reachable: {exc}"
    return None


@pytest.fixture
def need_index() -> None:
    why = index_reachable()
    if why:
        pytest.skip(why)
