"""convertkit/ir/validate.py: the full ONNX check and shape inference at the hub's entry."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from convertkit.errors import ConversionError, UsageError
from convertkit.ir.validate import validate_and_infer


def _save(model: onnx.ModelProto, path):
    onnx.save_model(model, str(path))
    return path


def _two_op_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, None])
    nodes = [
        helper.make_node("Relu", ["x"], ["hidden"]),
        helper.make_node("Transpose", ["hidden"], ["y"], perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_validate_and_infer_writes_a_shape_inferred_model(tmp_path):
    source = _save(_two_op_model(), tmp_path / "source.onnx")
    hub = tmp_path / "hub" / "model.onnx"

    written = validate_and_infer(source, hub)

    assert written == [hub]
    inferred = onnx.load(str(hub))
    value_info = {v.name: v for v in inferred.graph.value_info}
    hidden_dims = [d.dim_param or d.dim_value for d in
                   value_info["hidden"].type.tensor_type.shape.dim]
    output_dims = [d.dim_param or d.dim_value for d in
                   inferred.graph.output[0].type.tensor_type.shape.dim]
    assert hidden_dims == ["batch", 3, 8]
    assert output_dims == ["batch", 8, 3]


def test_validate_and_infer_rejects_a_node_reading_an_undefined_input(tmp_path):
    model = _two_op_model()
    model.graph.node[1].input[0] = "nowhere"
    source = _save(model, tmp_path / "source.onnx")
    hub = tmp_path / "hub.onnx"

    with pytest.raises(ConversionError) as caught:
        validate_and_infer(source, hub)

    assert caught.value.exit_code == 3
    assert caught.value.code == "invalid-onnx"
    assert "nowhere" in caught.value.message
    assert not hub.exists()


def test_validate_and_infer_rejects_mismatched_types(tmp_path):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = _save(model, tmp_path / "source.onnx")

    with pytest.raises(ConversionError) as caught:
        validate_and_infer(source, tmp_path / "hub.onnx")

    assert caught.value.code == "invalid-onnx"


def test_validate_and_infer_on_a_corrupt_file_is_a_usage_error(tmp_path):
    source = tmp_path / "source.onnx"
    source.write_bytes(_two_op_model().SerializeToString()[:-7])

    with pytest.raises(UsageError) as caught:
        validate_and_infer(source, tmp_path / "hub.onnx")

    assert caught.value.exit_code == 2
