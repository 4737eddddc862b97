"""Every committed release (knowledge/data/vllm_pins.toml: 0.4.1 … 0.34.0) preflighted as
`release X --depth preflight --arch A` does it, through the runner, from the cached sdists:
no cell ends in ERROR and no fact is left unread. The index's newer releases are
`nox -s currency`'s (the same function over the index's list)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vllm_matrix.commands import currency
from vllm_matrix.gpu import info as gpuinfo
from vllm_matrix.infra import results
from vllm_matrix.infra.results import ERROR
from vllm_matrix.knowledge import pins, toolchains
from vllm_matrix.pipeline.context import Workspace
from vllm_matrix.stages import preflight

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]


@pytest.mark.parametrize("arch", ["12.0", "9.0"])
def test_every_release_preflights_without_error(tmp_path: Path, arch: str) -> None:
    versions = pins.releases()
    assert len(versions) >= 76 and versions[0] == "0.4.1" and "0.34.0" in versions
    know, ws = toolchains.load(), Workspace(tmp_path)
    real = preflight.detect_host()
    host = preflight.Host(None, real.system_cuda, real.conda_prefix)
    mach = results.machine(gpuinfo.names())
    t0 = time.monotonic()
    done = [currency.preflight_release(v, arch, know, ws, host, mach) for v in versions]
    took = time.monotonic() - t0
    errors = [(p.vllm, i.message) for p, items in done for i in items if p.verdict == ERROR]
    gaps = [i.message for _, items in done for i in items if i.kind == "gap"]
    print(f"\n{len(done)} releases at sm{arch.replace('.', '')}: {len(errors)} ERROR, {took:.1f}s")
    assert not errors
    assert not gaps
    assert {p.verdict for p, _ in done} <= {"PREFLIGHT-OK", "PREDICTED-FAIL", "SKIPPED"}
