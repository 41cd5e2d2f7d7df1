"""convertkit/ir/optimize.py: onnxslim and shape inference on the hub model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import convertkit.ir.optimize as optimize_module
from convertkit.errors import ConversionError
from convertkit.ir.optimize import OptimizationRecord, optimize


def _constant_subexpression() -> onnx.ModelProto:
    """y = x * sqrt(a + b), with a and b initializers: the Add and Sqrt fold away."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    a = numpy_helper.from_array(np.full(3, 2.0, dtype=np.float32), "a")
    b = numpy_helper.from_array(np.arange(3, dtype=np.float32), "b")
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]),
             helper.make_node("Sqrt", ["ab"], ["s"]),
             helper.make_node("Mul", ["x", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [a, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ir3_model() -> onnx.ModelProto:
    """IR 3 style: the weight is an initializer and also listed among the graph inputs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    w_input = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    w = numpy_helper.from_array(
        np.arange(8, dtype=np.float32).reshape(4, 2) - 3.5, "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x, w_input], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_optimize_folds_a_constant_subexpression():
    source = _constant_subexpression()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    expected = _run(source, x)

    optimized, record = optimize(source)

    assert [n.op_type for n in optimized.graph.node] == ["Mul"]
    assert record.nodes_before == 3
    assert record.nodes_after == 1
    assert record.passes == tuple(name for name, _ in optimize_module.PASSES)
    assert record.to_dict() == {"passes": list(record.passes), "nodes_before": 3,
                                "nodes_after": 1}
    onnx.checker.check_model(optimized, full_check=True)
    np.testing.assert_allclose(_run(optimized, x), expected, rtol=1e-6, atol=1e-6)


def test_optimize_leaves_the_callers_model_unchanged():
    source = _constant_subexpression()
    before = source.SerializeToString()

    optimize(source)

    assert source.SerializeToString() == before


def test_an_ir3_model_comes_out_valid():
    source = _ir3_model()
    onnx.checker.check_model(source, full_check=True)
    x = np.array([[1.0, -2.0, 3.0, 0.5]], dtype=np.float32)
    expected = _run(source, x)

    optimized, record = optimize(source)

    onnx.checker.check_model(optimized, full_check=True)
    assert optimized.ir_version >= 4
    assert [v.name for v in optimized.graph.input] == ["x"]
    assert record.nodes_after == 2
    np.testing.assert_allclose(_run(optimized, x), expected, rtol=1e-6, atol=1e-6)


def test_a_failing_pass_is_an_optimization_failed_error(monkeypatch):
    def broken(model: onnx.ModelProto) -> onnx.ModelProto:
        raise ValueError("cannot fold this\nsecond line of detail")

    monkeypatch.setattr(optimize_module, "PASSES",
                        [*optimize_module.PASSES, ("broken pass", broken)])

    with pytest.raises(ConversionError) as caught:
        optimize(_constant_subexpression())

    assert caught.value.exit_code == 3
    assert caught.value.code == "optimization-failed"
    assert caught.value.message == ("graph optimisation 'broken pass' failed: "
                                    "ValueError: cannot fold this")
    assert "--no-optimize" in caught.value.hint


def test_a_pass_failing_without_a_message_still_names_the_error(monkeypatch):
    def broken(model: onnx.ModelProto) -> onnx.ModelProto:
        raise RuntimeError

    monkeypatch.setattr(optimize_module, "PASSES", [("silent pass", broken)])

    with pytest.raises(ConversionError) as caught:
        optimize(_constant_subexpression())

    assert caught.value.message.startswith("graph optimisation 'silent pass' failed: "
                                           "RuntimeError")


def test_optimization_record_is_plain_data():
    record = OptimizationRecord(("a", "b"), 10, 7)

    assert record.to_dict() == {"passes": ["a", "b"], "nodes_before": 10, "nodes_after": 7}
