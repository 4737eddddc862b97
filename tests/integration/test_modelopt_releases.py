"""modelopt.check on real vLLM sdists: the release's own ModelOpt parser, run on a
ModelOpt FP8 export's hf_quant_config.json and on configs it must refuse."""

from __future__ import annotations

import copy

import pytest

from vllm_matrix.sources import sdist as source
from vllm_matrix.stages.preflight import modelopt

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_index")]


def _with(algo: str) -> dict[str, object]:
    cfg = copy.deepcopy(modelopt.EXAMPLE)
    cfg["quantization"]["quant_algo"] = algo  # type: ignore[index]
    return cfg


# 0.34.0 builds QUANT_ALGOS as [*LINEAR_ALGOS, "MIXED_PRECISION"] (modelopt.py:167)
@pytest.mark.parametrize("version", ["0.6.6", "0.8.5", "0.10.2", "0.20.0", "0.34.0"])
def test_a_modelopt_fp8_export_is_accepted(version: str) -> None:
    c = modelopt.check(source.sdist_tree(version).root, modelopt.EXAMPLE)
    assert c.accepted and c.quant_algo == "FP8" and c.linear_method == "ModelOptFp8LinearMethod"
    assert "executed from the release's modelopt.py" in c.how
    bad = modelopt.check(source.sdist_tree(version).root, _with("INT4_AWQ"))
    assert not bad.accepted and "rejects it" in bad.message


def test_0_20_reads_lower_case_algos_and_picks_the_block_method() -> None:
    root = source.sdist_tree("0.20.0").root
    c = modelopt.check(root, _with("fp8_pb_wo"))
    assert c.accepted and c.linear_method == "ModelOptFp8PbWoLinearMethod"
    # NVFP4 passes the parser's QUANT_ALGOS but is not an FP8 algo of ModelOptFp8Config.
    nv = modelopt.check(root, _with("NVFP4"))
    assert not nv.accepted and "not an FP8 algo" in nv.message
    missing = modelopt.check(root, {"quantization": {}})
    assert not missing.accepted and "Missing 'quant_algo'" in missing.message
