from __future__ import annotations

from pathlib import Path

from vllm_matrix.infra import host


def test_host_facts(tmp_path: Path) -> None:
    assert host.cpu_count() >= 1
    assert host.read_meminfo(tmp_path / "absent") == ""
    assert host.mem_available_gib("MemTotal: 1 kB\n") is None
    assert host.mem_available_gib("MemAvailable:   8388608 kB\n") == 8.0
