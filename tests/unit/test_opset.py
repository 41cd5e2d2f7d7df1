"""convertkit/ir/opset.py: opset conversion up and down, inexpressible ops named first."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.errors import ConversionError
from convertkit.ir.info import default_opset
from convertkit.ir.opset import convert_opset, inexpressible_ops, newest_known_opset


def _conv_relu_add(opset: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "bias"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "bias"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _layer_norm(opset: int = 17) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    scale = numpy_helper.from_array(np.ones(4, dtype=np.float32), "scale")
    nodes = [helper.make_node("LayerNormalization", ["x", "scale"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _image() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_inexpressible_ops_names_an_op_defined_after_the_target():
    assert inexpressible_ops(_layer_norm(), 13) == [
        "LayerNormalization: first defined in opset 17"]


def test_inexpressible_ops_is_empty_where_every_op_exists():
    assert inexpressible_ops(_conv_relu_add(17), 13) == []
    assert inexpressible_ops(_layer_norm(), 17) == []


def test_inexpressible_ops_looks_inside_subgraphs():
    norm = helper.make_node("LayerNormalization", ["x", "scale"], ["t"])
    then_branch = helper.make_graph(
        [norm], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 4])])
    else_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 4])])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch,
                          else_branch=else_branch)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.ones(4, dtype=np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    assert inexpressible_ops(model, 13) == ["LayerNormalization: first defined in opset 17"]


def test_inexpressible_ops_names_an_unknown_op_and_skips_custom_domains():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("Frobnicate", ["x"], ["f"]),
             helper.make_node("FusedThing", ["f"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])

    assert inexpressible_ops(model, 17) == ["Frobnicate: not an ONNX operator"]


def test_convert_opset_up_gives_a_valid_model_with_the_same_numbers():
    source = _conv_relu_add(13)

    converted = convert_opset(source, 17)

    onnx.checker.check_model(converted, full_check=True)
    assert default_opset(converted) == 17
    assert [n.op_type for n in converted.graph.node] == ["Conv", "Relu", "Add"]
    np.testing.assert_allclose(_run(converted, _image()), _run(source, _image()),
                               rtol=1e-6, atol=1e-6)


def test_convert_opset_down_gives_a_valid_model_with_the_same_numbers():
    source = _conv_relu_add(17)

    converted = convert_opset(source, 14)

    onnx.checker.check_model(converted, full_check=True)
    assert default_opset(converted) == 14
    np.testing.assert_allclose(_run(converted, _image()), _run(source, _image()),
                               rtol=1e-6, atol=1e-6)


def test_convert_opset_down_past_a_type_only_bump():
    # onnx's converter has no Relu/Add 14 -> 13 adapter: those versions only added types.
    source = _conv_relu_add(17)

    converted = convert_opset(source, 13)

    onnx.checker.check_model(converted, full_check=True)
    assert default_opset(converted) == 13
    np.testing.assert_allclose(_run(converted, _image()), _run(source, _image()),
                               rtol=1e-6, atol=1e-6)


def test_convert_opset_to_the_same_opset_returns_the_model():
    source = _conv_relu_add(17)

    assert convert_opset(source, 17) is source


def test_convert_opset_newer_than_onnx_knows_is_a_conversion_error():
    too_new = newest_known_opset() + 1

    with pytest.raises(ConversionError) as caught:
        convert_opset(_conv_relu_add(17), too_new)

    assert caught.value.exit_code == 3
    assert caught.value.code == "opset-too-new"
    assert str(too_new) in caught.value.message
    assert f"--opset {newest_known_opset()}" in caught.value.hint


def test_convert_opset_blocked_by_an_op_names_it():
    with pytest.raises(ConversionError) as caught:
        convert_opset(_layer_norm(17), 13)

    assert caught.value.exit_code == 3
    assert caught.value.code == "opset-conversion-failed"
    assert caught.value.message == ("cannot convert from opset 17 to 13: "
                                    "LayerNormalization: first defined in opset 17")


def test_convert_opset_reports_the_converters_complaint():
    # ReduceMean-18 takes axes as an input; 17 needs them as an attribute, which the
    # converter cannot make from a graph input.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"])], "g",
                              [x, axes], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    with pytest.raises(ConversionError) as caught:
        convert_opset(model, 17)

    assert caught.value.exit_code == 3
    assert caught.value.code == "opset-conversion-failed"
    assert caught.value.message.startswith("cannot convert from opset 18 to 17: ")
    assert "No initializer or constant input" in caught.value.message
    assert "ReduceMean" in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [None, 1], ids=["default-axis", "axis-1"])
def test_convert_opset_down_keeps_softmax_results_or_refuses(op_type, axis):
    attributes = {} if axis is None else {"axis": axis}
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3])
    graph = helper.make_graph([helper.make_node(op_type, ["x"], ["y"], **attributes)], "g",
                              [x], [y])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    feed = np.arange(6, dtype=np.float32).reshape(1, 2, 3)

    try:
        converted = convert_opset(source, 11)
    except ConversionError as refused:  # refusing, naming the op, is also correct
        assert op_type in refused.message
        return

    np.testing.assert_allclose(_run(converted, feed), _run(source, feed), rtol=1e-6, atol=1e-6)


def test_convert_opset_down_turns_reduce_axes_inputs_back_into_attributes():
    # A dynamo export at opset 20: onnx's converter has no Reshape 19 -> 18 adapter, and
    # ReduceMean takes its axes as an input from 18 on, as an attribute before.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(
            np.array([2, 3], dtype=np.int64))),
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(
            np.array([1, 3], dtype=np.int64))),
        helper.make_node("Reshape", ["m", "shape"], ["y"]),
    ]
    source = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                               opset_imports=[helper.make_opsetid("", 20)])

    converted = convert_opset(source, 17)

    onnx.checker.check_model(converted, full_check=True)
    reduce = next(n for n in converted.graph.node if n.op_type == "ReduceMean")
    assert list(reduce.input) == ["x"]
    assert helper.get_attribute_value(reduce.attribute[-1]) == [2, 3]
    np.testing.assert_allclose(_run(converted, _image()), _run(source, _image()), rtol=1e-6)
