"""A partial build made installable: vLLM's package + the built extensions + a dist-info,
labelled partial, with the flash-attn stand-in named where no FA extension was built."""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

from vllm_matrix.stages.compile import installable


def _tree(tmp: Path) -> tuple[Path, Path]:
    src = tmp / "src"
    fa = src / "vllm" / "vllm_flash_attn"
    fa.mkdir(parents=True)
    (fa / "__init__.py").write_text('raise ImportError("needs _vllm_fa2_C or _vllm_fa3_C")\n')
    (src / "vllm" / "__init__.py").write_text("")
    cfg = src / "vllm" / "configs"
    cfg.mkdir()
    (cfg / "E=8,N=14336,device_name=H100.json").write_text("{}")  # a comma in a name
    built = tmp / "partial" / "vllm"
    built.mkdir(parents=True)
    (built / "_C.abi3.so").write_bytes(b"\x7fELF")
    (built / "_C_stable_libtorch.abi3.so").write_bytes(b"\x7fELF")
    return src, tmp / "partial"


def test_assembled_dir_is_vllm_partial_with_standin(tmp_path: Path) -> None:
    src, built = _tree(tmp_path)
    targets = ["_C", "_C_stable_libtorch"]
    dest = tmp_path / installable.name_of("0.20.0", targets)
    doc = installable.assemble(src, built, dest, "0.20.0", targets)
    assert dest.name == "vllm-0.20.0-partial-_C+_C_stable_libtorch"
    assert doc["extensions"] == ["vllm/_C.abi3.so", "vllm/_C_stable_libtorch.abi3.so"]
    assert doc["attention"] == "attention: Triton; flash-attn not built"
    init = (dest / "vllm" / "vllm_flash_attn" / "__init__.py").read_text()
    assert init.startswith(installable.STANDIN_HEADER) and "raise ImportError" not in init
    # importlib.metadata reads it (vLLM's version lookup), files with commas included.
    dist = md.PathDistribution(dest / "vllm-0.20.0+partial.dist-info")
    assert dist.version == "0.20.0+partial" and "PARTIAL" in dist.metadata["Summary"]
    assert any("E=8,N=14336" in str(f) for f in dist.files or [])
    assert json.loads((dest / installable.MARKER).read_text())["partial"] is True


def test_no_standin_when_flash_attn_was_built(tmp_path: Path) -> None:
    src, built = _tree(tmp_path)
    (built / "vllm" / "vllm_flash_attn").mkdir()
    (built / "vllm" / "vllm_flash_attn" / "_vllm_fa3_C.abi3.so").write_bytes(b"\x7fELF")
    doc = installable.assemble(src, built, tmp_path / "out", "0.20.0", ["_C", "_vllm_fa3_C"])
    assert doc["standins"] == [] and doc["attention"] == "flash-attn built"
    assert "raise ImportError" in (tmp_path / "out/vllm/vllm_flash_attn/__init__.py").read_text()


def test_a_passed_partial_build_hands_on_its_installable_and_sources(tmp_path: Path) -> None:
    """handoff.handed_on: the build's details, then sources, estimate, installable,
    standins (the order results hold); a failed build assembles nothing."""
    from vllm_matrix.infra.results import FAIL, PASS, StageResult
    from vllm_matrix.sources.externals import ExternalDir
    from vllm_matrix.stages.compile import handoff

    _tree(tmp_path)
    targets = ["_C"]
    given = handoff.BuildSources(
        {"cutlass": ExternalDir("cutlass", "v4", tmp_path / "cut", "cache", "CUTLASS_SRC_DIR")},
        {"vllm_flash_attn": (tmp_path / "st", "VLLM_FLASH_ATTN_SRC_DIR")},
    )
    assert given.env() == {
        "CUTLASS_SRC_DIR": str(tmp_path / "cut"),
        "VLLM_FLASH_ATTN_SRC_DIR": str(tmp_path / "st"),
    }
    built = StageResult("build", PASS, 1.0, "built", details={"partial": {"extensions": []}})
    out = handoff.handed_on(built, given, {"cores": 2}, "0.20.0", targets, tmp_path)
    assert list(out.details) == ["partial", "sources", "estimate", "installable", "standins"]
    assert out.details["installable"]["path"] == str(
        tmp_path / installable.name_of("0.20.0", targets)
    )
    assert out.details["sources"]["cutlass"] == {
        "pin": "v4",
        "path": str(tmp_path / "cut"),
        "origin": "cache",
    }
    failed = StageResult("build", FAIL, 1.0, "no", details={"partial": {"extensions": []}})
    assert (
        "installable"
        not in handoff.handed_on(failed, given, {}, "0.20.0", targets, tmp_path).details
    )


def test_the_model_stage_without_an_installable_is_not_run(tmp_path: Path) -> None:
    from vllm_matrix.stages.model import modelstage

    r = modelstage.serve_installable(None, tmp_path / "model", python="python3")
    assert r.status == "skip" and "no installable partial build" in r.summary
    assert not (tmp_path / "model").exists()
