"""npu:rknn mixed precision (issue 18): the outlier digits CNN of
tests/integration/test_mixed_precision.py, built by rknn-toolkit2 2.5.0 and checked in its
simulator. Pure int8 runs near chance; the retry keeps the few nodes around the outlier in
float16 through the toolkit's hybrid quantisation (custom_quantize_layers in the
.quantization.cfg) and passes on the held-out images."""

from __future__ import annotations

import json

import pytest

from convertkit.toolchain_steps.rknn import hybrid_layers, with_float16_layers
from tests.integration.platforms.test_rknn import rknn_toolchain  # noqa: F401 (fixture)
from tests.integration.test_mixed_precision import (  # noqa: F401 (fixture)
    outlier,
    pure_fails_and_mixed_passes,
)

TARGET = "npu:rknn"


def test_int8_broken_by_an_outlier_passes_with_a_few_nodes_in_float16(
        rknn_toolchain: None, cli, outlier, tmp_path) -> None:  # noqa: F811
    artifact, kept = pure_fails_and_mixed_passes(cli, outlier, TARGET, tmp_path, "fp16")
    record = artifact["mixed_precision"]
    folder = tmp_path / "mixed" / "npu-rknn"
    override = json.loads((tmp_path / "mixed" / record["override_file"]).read_text())
    assert [node["name"] for node in override["kept"]] == kept
    rknn = override["override"]["rknn"]
    assert rknn["onnx_nodes"] == kept
    layers = rknn["custom_quantize_layers"]
    assert layers and set(layers.values()) == {"float16"}
    # The cfg the model was built from, kept beside it, lists the same layers as float16.
    cfg = (folder / rknn["cfg"]).read_text()
    section = cfg.split("quantize_parameters:")[0]
    assert all(f"    {layer}: float16" in section for layer in layers)
    assert (folder / "model.rknn").is_file()
    assert any("kept in float16 by hybrid quantisation" in note for note in artifact["notes"])


CFG = """custom_quantize_layers: {}
quantize_parameters:
    x:
        dtype: float32
    conv2d:
        dtype: int8
    conv2d_1:
        dtype: int8
    linear_mm:
        dtype: int8
    relu_4-rs:
        dtype: int8
    output_mm:
        dtype: int8
    output:
        dtype: int8
"""


@pytest.mark.parametrize(("tensors", "layers", "unmatched"), [
    (["conv2d"], ["conv2d"], []),  # not conv2d_1: another tensor
    (["linear", "relu_4"], ["linear_mm", "relu_4-rs"], []),  # a Gemm lowered to a matmul
    (["output"], ["output_mm", "output"], []),
    (["div"], [], ["div"]),  # folded into a neighbouring layer
])
def test_onnx_tensors_map_to_the_cfg_layers_that_compute_them(tensors, layers,
                                                              unmatched) -> None:
    found, missing = hybrid_layers(CFG, tensors)
    assert sorted(found) == sorted(layers) and missing == unmatched


def test_kept_layers_replace_the_empty_custom_section() -> None:
    edited = with_float16_layers(CFG, ["conv2d", "relu_4-rs"])
    assert edited.startswith("custom_quantize_layers:\n    conv2d: float16\n"
                             "    relu_4-rs: float16\nquantize_parameters:\n    x:\n")
    assert edited.count("quantize_parameters:") == 1
