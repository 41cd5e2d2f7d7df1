"""convertkit/ir/shapes.py: fixing dynamic input dimensions from -i specs."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from convertkit.errors import UsageError
from convertkit.ir.shapes import fix_input_shapes
from convertkit.spec import InputSpec


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value.type.tensor_type.shape.dim]


def _two_input_model() -> onnx.ModelProto:
    """x [batch, 3, h] -> Relu -> Transpose -> y; m [n] -> Neg -> z."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h"]),
              helper.make_tensor_value_info("m", TensorProto.FLOAT, ["n"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "h", 3]),
               helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n"])]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1]),
             helper.make_node("Neg", ["m"], ["z"])]
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def test_fix_input_shapes_sets_the_dynamic_dims_and_returns_the_changes():
    model = _two_input_model()

    changes = fix_input_shapes(model, [InputSpec("x", (2, 3, 5))])

    assert changes == ["x: batch->2, h->5"]
    x = model.graph.input[0]
    assert _dims(x) == [2, 3, 5]
    assert all(not d.dim_param for d in x.type.tensor_type.shape.dim)


def test_fix_input_shapes_reinfers_downstream_shapes():
    model = _two_input_model()
    value_info = {v.name: v for v in model.graph.value_info}
    assert _dims(value_info["r"]) == ["batch", 3, "h"]

    fix_input_shapes(model, [InputSpec("x", (2, 3, 5))])

    value_info = {v.name: v for v in model.graph.value_info}
    outputs = {v.name: v for v in model.graph.output}
    assert _dims(value_info["r"]) == [2, 3, 5]
    assert _dims(outputs["y"]) == [2, 5, 3]
    onnx.checker.check_model(model, full_check=True)


def test_fix_input_shapes_leaves_inputs_without_a_spec_alone():
    model = _two_input_model()

    fix_input_shapes(model, [InputSpec("x", (1, 3, 4))])

    inputs = {v.name: v for v in model.graph.input}
    outputs = {v.name: v for v in model.graph.output}
    assert _dims(inputs["m"]) == ["n"]
    assert _dims(outputs["z"]) == ["n"]


def test_fix_input_shapes_fixes_an_unnamed_dynamic_dim():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    changes = fix_input_shapes(model, [InputSpec("x", (7, 4))])

    assert changes == ["x: ?->7"]
    assert _dims(model.graph.input[0]) == [7, 4]
    assert _dims(model.graph.output[0]) == [7, 4]


def test_fix_input_shapes_with_nothing_dynamic_changes_nothing():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = model.SerializeToString()

    changes = fix_input_shapes(model, [InputSpec("x", (1, 4))])

    assert changes == []
    assert model.SerializeToString() == before


@pytest.mark.parametrize(
    "spec",
    [
        InputSpec("x", ("batch", 3, 5)),  # still dynamic
        InputSpec("x", (2, 3)),  # rank 2 for a rank-3 input
        InputSpec("x", (2, 3, 5, 1)),  # rank 4 for a rank-3 input
    ],
)
def test_fix_input_shapes_rejects_a_spec_that_is_not_a_concrete_shape(spec):
    model = _two_input_model()
    before = model.SerializeToString()

    with pytest.raises(UsageError) as caught:
        fix_input_shapes(model, [spec])

    assert caught.value.exit_code == 2
    assert caught.value.code == "bad-input-spec"
    assert "input x" in caught.value.message
    assert "rank 3" in caught.value.message
    assert caught.value.hint == "pass -i x:NxNxN with numbers"
    assert model.SerializeToString() == before


def test_fix_input_shapes_rejects_a_spec_that_contradicts_a_fixed_dim():
    model = _two_input_model()

    with pytest.raises(UsageError) as caught:
        fix_input_shapes(model, [InputSpec("x", (2, 4, 5))])

    assert caught.value.code == "bad-input-spec"
