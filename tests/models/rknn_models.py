"""Small ONNX graphs for the RKNN tests: a two-input model (an image and a vector, one
4-D and one 2-D output) and a one-node model of an operator RKNN lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def two_input_model(path: Path, seed: int = 0) -> Path:
    """x (1x3x16x16 image) and v (1x16 vector): y = flatten(gap(relu(conv(x)))) + v @ m
    (1x8) and sq = relu(conv(x))**2 (1x8x16x16, NCHW), seeded random weights, opset 17."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
                                "w"),
        numpy_helper.from_array((rng.standard_normal((16, 8)) * 0.3).astype(np.float32), "m"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["v", "m"], ["vm"]),
        helper.make_node("Add", ["f", "vm"], ["y"]),
        helper.make_node("Mul", ["r", "r"], ["sq"]),
    ]
    graph = helper.make_graph(
        nodes, "two_inputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("sq", TensorProto.FLOAT, [1, 8, 16, 16])],
        weights)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def one_op_model(path: Path, op_type: str = "Det",
                 output_dims: tuple[int, ...] = (1,)) -> Path:
    """Relu, then one ``op_type`` node taking a 1x4x4 float tensor and giving ``y`` of
    ``output_dims`` (Det: one determinant per matrix), opset 17."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op_type, ["r"], ["y"])]
    graph = helper.make_graph(
        nodes, f"with_{op_type.lower()}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_dims))])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
