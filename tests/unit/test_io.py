"""convertkit/ir/io.py: loading and saving ONNX files."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.errors import UsageError
from convertkit.ir.io import load_model, needs_external_data, save_model, stored_bytes, tensor_bytes


def _relu_model(with_weight: bool = False) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "w"], ["y"])]
    weight = numpy_helper.from_array(np.ones((1, 4), dtype=np.float32), "w")
    if not with_weight:
        nodes = [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [weight] if with_weight else [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_save_then_load_round_trip(tmp_path):
    path = tmp_path / "sub" / "model.onnx"

    written = save_model(_relu_model(with_weight=True), path)
    loaded = load_model(path)

    assert written == [path]
    assert [n.op_type for n in loaded.graph.node] == ["Relu", "Add"]
    assert stored_bytes(path) == path.stat().st_size


def test_load_model_rejects_a_truncated_file(tmp_path):
    blob = _relu_model(with_weight=True).SerializeToString()
    path = tmp_path / "model.onnx"
    path.write_bytes(blob[: len(blob) // 2])

    with pytest.raises(UsageError) as caught:
        load_model(path)

    assert caught.value.exit_code == 2
    assert caught.value.code == "corrupt-onnx"
    assert str(path) in caught.value.message


@pytest.mark.parametrize("blob", [b"\x00\xff garbage, not protobuf" * 8, b"", b"\n\x00"])
def test_load_model_rejects_garbage(tmp_path, blob):
    path = tmp_path / "model.onnx"
    path.write_bytes(blob)

    with pytest.raises(UsageError) as caught:
        load_model(path)

    assert caught.value.code == "corrupt-onnx"


def test_load_model_on_a_missing_file_does_not_blame_external_data(tmp_path):
    path = tmp_path / "absent.onnx"

    with pytest.raises(UsageError) as caught:
        load_model(path)

    assert caught.value.code != "missing-external-data"


def test_load_model_reports_missing_external_data(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save_model(_relu_model(with_weight=True), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    (tmp_path / "model.onnx.data").unlink()

    with pytest.raises(UsageError) as caught:
        load_model(path)

    assert caught.value.code == "missing-external-data"


def test_tensor_bytes_counts_initializers():
    model = _relu_model(with_weight=True)

    assert tensor_bytes(model) == 4 * 4
    assert not needs_external_data(model)
