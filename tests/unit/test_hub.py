"""convertkit/ir/hub.py: the exported model becomes the hub every target starts from."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import convertkit.ir.optimize as optimize_module
from convertkit.errors import ConversionError
from convertkit.ir.hub import HubRecord, build_hub
from convertkit.ir.info import default_opset


def _exported(tmp_path, opset: int = 13):
    """y = Relu(x * sqrt(a + b)), saved as an exporter would; Add and Sqrt fold away."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    a = numpy_helper.from_array(np.full(3, 2.0, dtype=np.float32), "a")
    b = numpy_helper.from_array(np.arange(3, dtype=np.float32), "b")
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]),
             helper.make_node("Sqrt", ["ab"], ["s"]),
             helper.make_node("Mul", ["x", "s"], ["m"]),
             helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [a, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / "exported.onnx"
    onnx.save_model(model, str(path))
    return path


def _run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_build_hub_converts_and_optimises_into_a_valid_model(tmp_path):
    exported = _exported(tmp_path, opset=13)
    hub = tmp_path / "hub" / "model.onnx"
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)

    record = build_hub(exported, hub, opset=17)

    model = onnx.load(str(hub))
    onnx.checker.check_model(model, full_check=True)
    assert default_opset(model) == 17
    assert [n.op_type for n in model.graph.node] == ["Mul", "Relu"]
    assert record.notes == ("opset converted from 13 to 17", "optimised: 4 -> 2 nodes")
    assert record.optimization is not None
    assert (record.optimization.nodes_before, record.optimization.nodes_after) == (4, 2)
    assert record.to_dict()["optimization"]["nodes_after"] == 2
    np.testing.assert_allclose(_run(hub, x), _run(exported, x), rtol=1e-6, atol=1e-6)
    assert sorted(p.name for p in hub.parent.iterdir()) == ["model.onnx"]


def test_build_hub_without_optimisation_or_opset_saves_the_model_unchanged(tmp_path):
    exported = _exported(tmp_path)
    hub = tmp_path / "hub" / "model.onnx"

    record = build_hub(exported, hub, optimize_graph=False)

    assert record == HubRecord((), None)
    assert record.to_dict() == {"notes": [], "optimization": None}
    assert len(onnx.load(str(hub)).graph.node) == 4
    assert onnx.load(str(hub)) == onnx.load(str(exported))


def test_build_hub_at_the_models_own_opset_converts_nothing(tmp_path):
    exported = _exported(tmp_path, opset=13)
    hub = tmp_path / "model.onnx"

    record = build_hub(exported, hub, opset=13, optimize_graph=False)

    assert record.notes == ()
    assert default_opset(onnx.load(str(hub))) == 13


def test_build_hub_with_only_an_opset_conversion(tmp_path):
    exported = _exported(tmp_path, opset=13)
    hub = tmp_path / "model.onnx"

    record = build_hub(exported, hub, opset=17, optimize_graph=False)

    model = onnx.load(str(hub))
    onnx.checker.check_model(model, full_check=True)
    assert record.notes == ("opset converted from 13 to 17",)
    assert record.optimization is None
    assert default_opset(model) == 17
    assert len(model.graph.node) == 4


def test_build_hub_stops_at_a_pass_that_writes_an_invalid_model(tmp_path, monkeypatch):
    def dangling(model: onnx.ModelProto) -> onnx.ModelProto:
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        broken.graph.node[-1].input[0] = "nowhere"
        return broken

    monkeypatch.setattr(optimize_module, "PASSES", [("dangling input", dangling)])
    exported = _exported(tmp_path)
    hub = tmp_path / "hub" / "model.onnx"

    with pytest.raises(ConversionError) as caught:
        build_hub(exported, hub)

    assert caught.value.code == "invalid-onnx"
    assert "nowhere" in caught.value.message
    assert not hub.exists()
    assert list(hub.parent.iterdir()) == []
