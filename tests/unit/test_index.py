from __future__ import annotations

import pytest
from packaging.version import Version

from vllm_matrix.infra import index
from vllm_matrix.infra.errors import NotAvailable
from vllm_matrix.sources import torchwheel


def _a(name: str, sha: str) -> str:
    return f'<a href="/whl/cu128/{name.replace("+", "%2B")}#sha256={sha}">{name}</a><br/>'


HTML = (
    "<!DOCTYPE html><html><body><h1>Links for torch</h1>\n"
    + _a("torch-2.7.1+cu128-cp312-cp312-manylinux_2_28_x86_64.whl", "aa11")
    + _a("torch-2.7.1+cu128-cp312-cp312-win_amd64.whl", "bb22")
    + _a("torch-2.7.0+cu128-cp311-cp311-manylinux_2_28_x86_64.whl", "cc33")
    + "</body></html>"
).encode()


def test_pep503_html_index_of_a_torch_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    # PyTorch's per-CUDA indexes answer HTML, not PEP 691 JSON
    monkeypatch.setattr(index, "_get", lambda url, accept=None: HTML)
    index.project_files.cache_clear()
    torchwheel.linux_wheels.cache_clear()
    base = "http://127.0.0.1:9/whl/cu128"
    files = index.project_files("torch", base)
    assert [str(f.version) for f in files] == ["2.7.1+cu128", "2.7.1+cu128", "2.7.0+cu128"]
    assert files[0].sha256 == "aa11" and files[0].url.startswith("http://127.0.0.1:9/whl/cu128/")
    wheels = torchwheel.linux_wheels("2.7.1+cu128", base)
    assert len(wheels) == 1 and wheels[0].version == Version("2.7.1+cu128")
    index.project_files.cache_clear()
    torchwheel.linux_wheels.cache_clear()


def test_variant_without_index_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_MATRIX_TORCH_INDEX_CU128", raising=False)
    with pytest.raises(NotAvailable, match="none is configured"):
        torchwheel.read_facts("2.7.1+cu128")


def test_pip_cert_from_pip_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # uv does not read pip's configuration: the CA bundle pip uses is handed on to it
    out = "global.cert='/etc/ssl/certs/ca.crt'\nglobal.index-url='https://idx.example/simple'\n"
    monkeypatch.delenv("PIP_CERT", raising=False)
    monkeypatch.setattr(index.proc, "output_of", lambda argv, **kw: out)
    index.pip_config.cache_clear()
    try:
        assert index.pip_cert() == "/etc/ssl/certs/ca.crt"
        assert index.pip_config()["index-url"] == {"global": "https://idx.example/simple"}
        monkeypatch.setenv("PIP_CERT", "/x/ca.pem")
        assert index.pip_cert() == "/x/ca.pem"
    finally:
        index.pip_config.cache_clear()
