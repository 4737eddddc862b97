"""source.py against a loopback PEP 691 index serving a tiny fake sdist."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vllm_matrix.infra import index
from vllm_matrix.infra.errors import SourceError
from vllm_matrix.sources import sdist as source


def make_sdist(version: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in {
            "CMakeLists.txt": 'set(TORCH_SUPPORTED_VERSION_CUDA "2.6.0")\n',
            "setup.py": "",
            "PKG-INFO": f"Name: vllm\nVersion: {version}\n",
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(f"vllm-{version}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Index:
    def __init__(self) -> None:
        self.files = {"vllm-1.0.0.tar.gz": make_sdist("1.0.0")}
        self.hash_override: dict[str, str] = {}
        self.downloads = 0


@pytest.fixture
def fake_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    idx = Index()

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/simple/vllm/":
                files = [
                    {
                        "filename": n,
                        "url": f"/files/{n}",
                        "hashes": {
                            "sha256": idx.hash_override.get(n, hashlib.sha256(d).hexdigest())
                        },
                    }
                    for n, d in idx.files.items()
                ] + [
                    {
                        "filename": "vllm-2.0.0-py3-none-any.whl",
                        "url": "/files/w.whl",
                        "hashes": {"sha256": "0" * 64},
                    }
                ]
                body = json.dumps(
                    {"meta": {"api-version": "1.1"}, "name": "vllm", "files": files}
                ).encode()
            elif self.path.startswith("/files/") and self.path[7:] in idx.files:
                idx.downloads += 1
                body = idx.files[self.path[7:]]
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    monkeypatch.setenv("VLLM_MATRIX_INDEX_URL", f"http://127.0.0.1:{srv.server_port}/simple")
    monkeypatch.setenv("VLLM_MATRIX_CACHE", str(tmp_path / "cache"))
    index.index_url.cache_clear()
    index.project_files.cache_clear()
    yield idx
    srv.shutdown()
    index.index_url.cache_clear()
    index.project_files.cache_clear()


def test_fetch_verify_unpack_and_reuse(fake_index: Index, tmp_path: Path) -> None:
    t = source.get_tree("1.0.0")
    assert (t.root / "CMakeLists.txt").is_file() and t.version == "1.0.0"
    assert t.origin.startswith("sdist vllm-1.0.0.tar.gz sha256:")
    index.project_files.cache_clear()
    again = source.get_tree("1.0.0")  # pinned: no index request, no second download
    assert again.root == t.root and fake_index.downloads == 1


def test_sha_mismatch_is_refused_and_nothing_cached(fake_index: Index, tmp_path: Path) -> None:
    fake_index.hash_override["vllm-1.0.0.tar.gz"] = "f" * 64
    with pytest.raises(SourceError, match="does not match the index") as ei:
        source.get_tree("1.0.0")
    assert ei.value.fix
    assert not [p for p in (tmp_path / "cache").rglob("f" * 64 + "*") if p.suffix != ".lock"]
    assert not (tmp_path / "cache" / "pins").exists()
    assert not (tmp_path / "cache" / "src").exists()


def test_wheel_only_and_unknown_versions(fake_index: Index) -> None:
    with pytest.raises(SourceError, match="no sdist on the index") as ei:
        source.get_tree("2.0.0")
    assert "git:" in (ei.value.fix or "")
    with pytest.raises(SourceError, match="not on the index"):
        source.get_tree("1.0.5")
    with pytest.raises(SourceError, match="not a vLLM version"):
        source.get_tree("latest")


def test_concurrent_fetches_share_one_result(fake_index: Index) -> None:
    with ThreadPoolExecutor(4) as ex:
        roots = set(ex.map(lambda _: source.get_tree("1.0.0").root, range(4)))
    assert len(roots) == 1
    assert not [p for p in next(iter(roots)).parent.iterdir() if p.name.endswith(".partial")]


def test_corrupt_cached_archive_is_detected(fake_index: Index, tmp_path: Path) -> None:
    archive = source.fetch_sdist("1.0.0")
    archive.write_bytes(b"garbage")
    with pytest.raises(SourceError, match="corrupt"):
        source.get_tree("1.0.0")
    assert source.get_tree("1.0.0").root.is_dir()  # the rerun downloads afresh


def test_local_tree(tmp_path: Path) -> None:
    (tmp_path / "CMakeLists.txt").write_text("")
    (tmp_path / "setup.py").write_text("")
    (tmp_path / "PKG-INFO").write_text("Version: 0.9.9\n")
    t = source.get_tree(f"path:{tmp_path}")
    assert t.version == "0.9.9" and t.origin == f"path {tmp_path}"
    with pytest.raises(SourceError, match="not a vLLM source tree"):
        source.get_tree(f"path:{tmp_path / 'nope'}")


def test_git_spec_needs_a_ref() -> None:
    with pytest.raises(SourceError, match="bad git source"):
        source.get_tree("git:https://example.invalid/vllm")
