"""modelopt.check on a small fixture tree laid out like vLLM 0.20's (the real releases:
tests/integration/test_modelopt_releases.py)."""

from __future__ import annotations

from pathlib import Path

from vllm_matrix.stages.preflight import modelopt

MODELOPT = """
import torch
from vllm.logger import init_logger

QUANT_ALGOS = ["FP8", "FP8_PB_WO", "NVFP4"]


class ModelOptQuantConfigBase(QuantizationConfig):
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelOptQuantConfigBase":
        quant_config = cls.get_from_keys(config, ["quantization"])
        quant_method = str(quant_config.get("quant_algo", "")).upper()
        if quant_method not in QUANT_ALGOS:
            raise ValueError(f"ModelOpt currently only supports: {QUANT_ALGOS}")
        return cls._from_config(quant_method=quant_method, exclude_modules=[],
                                original_config=config)


class ModelOptFp8Config(ModelOptQuantConfigBase):
    def __init__(self, quant_method: str) -> None:
        if self.quant_method == "FP8":
            self.LinearMethodCls = ModelOptFp8LinearMethod
        elif self.quant_method == "FP8_PB_WO":
            self.LinearMethodCls = ModelOptFp8PbWoLinearMethod
"""

BASE = """
class QuantizationConfig:
    @staticmethod
    def get_from_keys(config: dict[str, Any], keys: list[str]) -> Any:
        for key in keys:
            if key in config:
                return config[key]
        raise ValueError(f"Cannot find any of {keys} in the model's quantization config.")
"""


def _tree(tmp_path: Path) -> Path:
    q = tmp_path / modelopt.QUANT_DIR
    q.mkdir(parents=True)
    (q / "modelopt.py").write_text(MODELOPT)
    (q / "base_config.py").write_text(BASE)
    return tmp_path


def test_the_releases_parser_runs_without_importing_it(tmp_path: Path) -> None:
    root = _tree(tmp_path)  # the fixture imports torch and vllm: never imported here
    c = modelopt.check(root, modelopt.EXAMPLE)
    assert c.accepted and c.linear_method == "ModelOptFp8LinearMethod"
    assert c.parsed == {"quant_method": "FP8", "exclude_modules": []}
    assert "ModelOptQuantConfigBase.from_config executed" in c.how
    c = modelopt.check(root, {"quantization": {"quant_algo": "fp8_pb_wo"}})
    assert c.linear_method == "ModelOptFp8PbWoLinearMethod"


def test_what_the_parser_or_the_fp8_config_refuses(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    c = modelopt.check(root, {"quantization": {"quant_algo": "W4A8_AWQ"}})
    assert not c.accepted and "rejects it: ModelOpt currently only supports" in c.message
    c = modelopt.check(root, {"quant_algo": "FP8"})  # no "quantization" key
    assert not c.accepted and "Cannot find any of ['quantization']" in c.message
    c = modelopt.check(root, {"quantization": {"quant_algo": "NVFP4"}})
    assert not c.accepted and "not an FP8 algo of ModelOptFp8Config (FP8, FP8_PB_WO)" in c.message
    assert not modelopt.check(tmp_path / "none", modelopt.EXAMPLE).accepted


def _with_algos(tmp_path: Path, algos: str) -> Path:
    root = _tree(tmp_path)
    path = root / modelopt.QUANT_DIR / "modelopt.py"
    path.write_text(MODELOPT.replace('QUANT_ALGOS = ["FP8", "FP8_PB_WO", "NVFP4"]', algos))
    return root


def test_quant_algos_built_from_a_table_as_0_34_writes_it(tmp_path: Path) -> None:
    """vLLM 0.34.0 modelopt.py:150-167: an annotated dict, then [*LINEAR_ALGOS, ...]."""
    algos = (
        "LINEAR_ALGOS: dict[str, tuple[str, str]] = {\n"
        '    "FP8": ("modelopt", "fp8_config"),\n'
        '    "NVFP4": ("modelopt_fp4", "nvfp4_config"),\n'
        "}\n"
        'QUANT_ALGOS = [*LINEAR_ALGOS, "MIXED_PRECISION"]'
    )
    c = modelopt.check(_with_algos(tmp_path, algos), modelopt.EXAMPLE)
    assert c.accepted and c.unreadable is None
    assert "QUANT_ALGOS ['FP8', 'NVFP4', 'MIXED_PRECISION']" in c.how


def test_list_sums_and_tuples_of_known_names(tmp_path: Path) -> None:
    algos = 'A = ("FP8",)\nB = ["NVFP4"]\nQUANT_ALGOS = [*A] + B'
    c = modelopt.check(_with_algos(tmp_path, algos), modelopt.EXAMPLE)
    assert c.accepted and "['FP8', 'NVFP4']" in c.how


def test_a_construct_it_cannot_evaluate_names_file_and_line(tmp_path: Path) -> None:
    algos = "QUANT_ALGOS = sorted(load_algos())"
    c = modelopt.check(_with_algos(tmp_path, algos), modelopt.EXAMPLE)
    line = MODELOPT.splitlines().index('QUANT_ALGOS = ["FP8", "FP8_PB_WO", "NVFP4"]') + 1
    assert not c.accepted and c.unreadable is not None
    assert c.unreadable.startswith(f"{modelopt.QUANT_DIR.as_posix()}/modelopt.py:{line}: ")
    assert "sorted(load_algos())" in c.unreadable and c.message.startswith("unknown: ")


def test_a_name_bound_to_something_not_literal_is_unreadable(tmp_path: Path) -> None:
    algos = "A = make()\nQUANT_ALGOS = [*A, 'FP8']"
    c = modelopt.check(_with_algos(tmp_path, algos), modelopt.EXAMPLE)
    assert c.unreadable is not None and "'A' (Name)" in c.unreadable


def test_syntax_this_python_cannot_parse_is_unreadable(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / modelopt.QUANT_DIR / "base_config.py").write_text("def f(:\n    pass\n")
    c = modelopt.check(root, modelopt.EXAMPLE)
    assert c.unreadable is not None
    assert c.unreadable.startswith(f"{modelopt.QUANT_DIR.as_posix()}/base_config.py:1: ")
