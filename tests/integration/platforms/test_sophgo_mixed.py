"""npu:sophgo mixed precision (issue 18): int8 with a few ops kept in float through
model_deploy's --quantize_table, built by tpu-mlir 1.30 and checked in its cmodel
simulator.

tpu-mlir calibrates int8 activations by KL divergence, which clips the digits CNN's
1000x outlier channel (tests/integration/test_mixed_precision.py) to a threshold near the
other channels' range: pure int8 of that model passes on Sophgo (97.6% against 98.4%).
The outlier here is the same construction, SOPHGO_OUTLIER_SCALE times larger, which the
clipped threshold no longer saves and which still fits fp16 (its largest activation is
about 4e4, fp16's largest value 65504).

The toolchain tests are marked `sophgo` (and `slow`): they install tpu-mlir the way a user
does (~6.5 GB, a few minutes the first time). The name-mapping tests need nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from convertkit.errors import ConversionError
from convertkit.platforms import BuildOptions
from convertkit.platforms.npu.sophgo import SophgoPlatform, op_candidates
from convertkit.spec import Precision, TargetSpec
from convertkit.toolchain_steps.sophgo import kept_ops, mlir_op_names, quantize_table
from tests.conftest import CliResult, run_cli
from tests.integration.platforms.test_sophgo import sophgo_toolchain  # noqa: F401 (fixture)
from tests.integration.test_mixed_precision import (  # noqa: F401 (fixture)
    OUTLIER_CHANNEL,
    OUTLIER_SCALE,
    outlier,
    pure_fails_and_mixed_passes,
)
from tests.models.digits import Trained

TARGET = "npu:sophgo@bm1684x"
SOPHGO_OUTLIER_SCALE = 3e4
# The cmodel simulator runs about a second per image on a loaded 2-core machine, and the
# mixed-precision convert simulates the 250 calibration images once per search build and
# the 250 held-out ones twice: some 15 minutes, beyond run_cli's 10 and near convertkit's
# own 30-minute --timeout. These only stop a hung run.
CONVERT_LIMIT_S = 3600


def _slow_cli(*args: str, out: Path | None = None) -> CliResult:
    return run_cli(*args, "--timeout", str(CONVERT_LIMIT_S), out=out,
                   timeout_s=CONVERT_LIMIT_S + 300)


@pytest.fixture(scope="module")
def sophgo_outlier(outlier) -> tuple[Trained, Path]:  # noqa: F811
    """The outlier model with its outlier channel SOPHGO_OUTLIER_SCALE times larger (and
    the next convolution's matching weights as much smaller): the same fp32 function."""
    trained, weights = outlier
    factor = SOPHGO_OUTLIER_SCALE / OUTLIER_SCALE
    state = torch.load(weights)
    state["body.0.weight"][OUTLIER_CHANNEL] *= factor
    state["body.0.bias"][OUTLIER_CHANNEL] *= factor
    state["body.2.weight"][:, OUTLIER_CHANNEL] /= factor
    stronger = weights.with_name("sophgo_outlier.pt")
    torch.save(state, stronger)
    return trained, stronger


def _table(path: Path) -> dict[str, str]:
    """A quantize table's ``op mode`` lines."""
    rows = [line.split() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    assert all(len(row) == 2 for row in rows), rows
    table = dict(rows)
    assert len(table) == len(rows)  # each op once
    return table


@pytest.mark.slow
@pytest.mark.sophgo
def test_int8_broken_by_an_outlier_passes_with_a_few_ops_in_f16(
        sophgo_toolchain: None, sophgo_outlier, tmp_path) -> None:  # noqa: F811
    artifact, kept = pure_fails_and_mixed_passes(_slow_cli, sophgo_outlier, TARGET, tmp_path,
                                                 "fp16")
    record = artifact["mixed_precision"]
    folder = tmp_path / "mixed" / "npu-sophgo-bm1684x"
    override = json.loads((tmp_path / "mixed" / record["override_file"]).read_text())
    assert [node["name"] for node in override["kept"]] == kept
    tpu_mlir = override["override"]["tpu-mlir"]
    # Every kept node is computed by a tpu-mlir op of the top MLIR, named after the
    # node's output tensor and type, or after the Relu fused into it.
    model = onnx.load(str(tmp_path / "mixed" / "onnx" / "model.onnx"))
    candidates = op_candidates(model, kept)
    assert list(tpu_mlir["onnx_nodes"]) == kept
    assert all(tpu_mlir["onnx_nodes"][node] in candidates[node] for node in kept)
    assert tpu_mlir["ops"] == {op: "F16" for op in tpu_mlir["onnx_nodes"].values()}
    # The table model_deploy took, kept beside the model, lists exactly those ops.
    assert tpu_mlir["quantize_table"] == "quantize_table.txt"
    assert _table(folder / "quantize_table.txt") == tpu_mlir["ops"]
    assert json.loads((folder / "sophgo.json").read_text())["quantize_table"] == \
        "quantize_table.txt"
    assert (folder / "model.bmodel").is_file()
    assert any("kept in F16 by model_deploy --quantize_table" in note
               for note in artifact["notes"])


def _conv_relu_conv(path: Path) -> Path:
    """Conv ``conv`` -> Relu ``relu`` -> Conv ``conv_out`` (output y), named nodes."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv_out")]
    graph = helper.make_graph(
        nodes, "ccr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
         numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              str(path))
    return path


@pytest.mark.parametrize(("chip", "mode"), [("bm1684", "F32"), ("cv181x", "BF16")])
@pytest.mark.slow
@pytest.mark.sophgo
def test_each_chip_keeps_ops_in_its_best_float_mode(sophgo_toolchain: None,  # noqa: F811
                                                    tmp_path: Path, chip: str,
                                                    mode: str) -> None:
    model = _conv_relu_conv(tmp_path / "model.onnx")
    target = TargetSpec.parse(f"npu:sophgo@{chip}")
    options = BuildOptions(precision=Precision.INT8, keep_fp32=("conv", "conv_out"))

    artifact = SophgoPlatform().build(model, target, tmp_path / "out", options)

    # The Relu is fused into the first convolution, which takes its name.
    ops = {"conv": "r_Relu", "conv_out": "y_Conv"}
    assert artifact.override["tpu-mlir"]["onnx_nodes"] == ops
    assert _table(tmp_path / "out" / "quantize_table.txt") == {
        "r_Relu": mode, "y_Conv": mode}
    assert artifact.path.is_file() and artifact.precision == Precision.INT8


@pytest.mark.parametrize(("chip", "kept_in"), [
    (None, "fp16"), ("bm1684x", "fp16"), ("bm1688", "fp16"), ("bm1690", "fp16"),
    ("bm1684", "fp32"), ("cv181x", "bf16")])
def test_the_kept_precision_is_the_chips_best_float(chip: str | None, kept_in: str) -> None:
    target = TargetSpec.parse("npu:sophgo" + (f"@{chip}" if chip else ""))
    assert SophgoPlatform().kept_precision_for(target) == kept_in


def test_kept_nodes_map_to_their_op_or_the_relu_fused_into_it(tmp_path: Path) -> None:
    model = onnx.load(str(_conv_relu_conv(tmp_path / "model.onnx")))

    candidates = op_candidates(model, ["conv", "relu", "conv_out"])

    assert candidates == {"conv": ["c_Conv", "r_Relu"], "relu": ["r_Relu"],
                          "conv_out": ["y_Conv"]}


# The top MLIR model_transform writes for Conv -> Relu -> Conv (abridged): the first
# convolution took the fused Relu's name; weights and the input are named too.
MLIR = """#loc = loc(unknown)
module @model attributes {module.state = "TOP_F32"} {
  func.func @main(%arg0: tensor<1x3x16x16xf32> loc(unknown)) -> tensor<1x4x16x16xf32> {
    %0 = "top.Input"(%arg0) : (tensor<1x3x16x16xf32>) -> tensor<1x3x16x16xf32> loc(#loc1)
    %3 = "top.Conv"(%0, %1, %2) {do_relu = true} : (...) -> tensor<1x8x16x16xf32> loc(#loc3)
    %5 = "top.Conv"(%3, %4, %2) {do_relu = false} : (...) -> tensor<1x4x16x16xf32> loc(#loc5)
    return %5 : tensor<1x4x16x16xf32> loc(#loc)
  } loc(#loc)
} loc(#loc)
#loc1 = loc("x")
#loc2 = loc("w1")
#loc3 = loc("r_Relu")
#loc4 = loc("w2")
#loc5 = loc("y_Conv")
#loc6 = loc(fused["split_Split", "split_1_Split"])
"""


def test_the_table_names_the_ops_the_top_mlir_holds() -> None:
    names = mlir_op_names(MLIR)
    keep = {"conv": ["c_Conv", "r_Relu"], "relu": ["r_Relu"], "gone": ["g_Reshape"]}

    ops = kept_ops(names, keep)
    table = quantize_table(ops, "F16")

    assert {"x", "w1", "r_Relu", "y_Conv", "split_Split", "split_1_Split"} <= names
    assert "c_Conv" not in names
    assert ops == {"conv": "r_Relu", "relu": "r_Relu", "gone": None}
    assert [line for line in table.splitlines() if not line.startswith("#")] == [
        "r_Relu F16"]


@pytest.mark.parametrize("name", ["r_Relu F32", "r_Relu\nother_Conv F32", "#r_Relu", "\x1b[2J"])
def test_an_op_name_that_would_add_or_hide_table_lines_is_refused(name: str) -> None:
    with pytest.raises(ConversionError, match="cannot be written into a quantize table"):
        quantize_table({"conv": name}, "F16")
