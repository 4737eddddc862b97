"""probe resources: how many units at once."""

from __future__ import annotations

from pathlib import Path

from vllm_matrix.stages import probe


def test_job_limit_uses_memavailable(tmp_path: Path) -> None:
    mi = tmp_path / "meminfo"
    mi.write_text("MemTotal: 25000000 kB\nMemAvailable:    5242880 kB\n")
    assert probe.job_limit(2.0, 8, mi) == 2  # 5 GiB / 2 GiB
    assert probe.job_limit(5.0, 8, mi) == 1
    assert probe.job_limit(1.0, 3, mi) == 3
    mi.write_text("MemAvailable: 100 kB\n")
    assert probe.job_limit(2.0, 4, mi) == 1  # never zero
