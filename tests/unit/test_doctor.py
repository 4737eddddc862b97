from __future__ import annotations

from pathlib import Path

import pytest
from test_advice import PINS, K, fake_facts

from vllm_matrix.commands import doctor
from vllm_matrix.pipeline import advice
from vllm_matrix.stages import preflight
from vllm_matrix.stages.env import TorchEnv
from vllm_matrix.stages.toolkit import Toolkit


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Toolkit, TorchEnv]:
    root = tmp_path / "cuda"
    (root / "include").mkdir(parents=True)
    (root / "lib64").mkdir()
    tk = Toolkit(
        "debian",
        "12.4",
        "12.4.131",
        root,
        root / "bin" / "nvcc",
        ("8.0", "9.0"),
        13,
        ("assembled",),
    )
    site = tmp_path / "env" / "lib" / "site-packages"
    (site / "torch" / "lib").mkdir(parents=True)
    (site / "torch" / "lib" / "libtorch_python.so").write_bytes(b"\0sm_80 sm_90\0")
    cfg = site / "torch" / "share" / "cmake" / "Torch"
    cfg.mkdir(parents=True)
    (cfg / "TorchConfig.cmake").write_text('set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")\n')
    tv = TorchEnv(
        "3.12",
        "2.6.0",
        "headers",
        tmp_path / "env",
        tmp_path / "env/bin/python",
        site,
        "2.6.0+cu124",
        "12.4",
    )
    monkeypatch.setattr(preflight, "detect_host", lambda: preflight.Host(14, {}, None))
    # the one advice over fixture releases (nothing read from the index)
    rf = fake_facts(tmp_path)
    fixed = advice.Adviser(know=K, pinned=PINS, facts=rf.__getitem__)
    monkeypatch.setattr(advice, "adviser_for", lambda *a, **k: fixed)
    return tk, tv


def test_report_names_everything_and_each_problem_has_a_fix(
    parts: tuple[Toolkit, TorchEnv],
) -> None:
    tk, tv = parts
    r = doctor._report("cell x", tk, tv, ("9.0", "12.0"))
    assert r.torch["arch list"] == ["sm_80", "sm_90", "no PTX"]
    assert r.torch["C++ ABI"] == "_GLIBCXX_USE_CXX11_ABI=0"
    msgs = " | ".join(p["message"] for p in r.problems)
    assert "host gcc 14 is newer than nvcc 12.4 accepts (≤ 13)" in msgs
    assert "cannot target sm_120" in msgs
    assert "nvToolsExt is missing" in msgs  # toolkit has no nvtx, env has no pip nvtx
    assert all(p["fix"] for p in r.problems)
    text = r.render()
    assert "TORCH_CUDA_ARCH_LIST=9.0;12.0" in text and "why:" in text
    assert set(r.to_json()) == {
        "title",
        "toolkit",
        "host",
        "torch",
        "tools",
        "fixups",
        "problems",
        "advice",
    }
    # torch 2.6.0+cu124's own arch list (sm_80, sm_90 here) has nothing for sm_120
    torch_p = next(p for p in r.problems if p["message"].startswith("torch 2.6.0+cu124 has no"))
    assert "sm_120" in torch_p["message"]
    # fixes carry versions: vLLM × torch build × CUDA, from the one advice
    assert "× torch 2.7.0+cu128 × CUDA 12.8" in torch_p["fix"]
    assert r.advice and "CUDA 12.4 → 12.8" in r.advice[0]
