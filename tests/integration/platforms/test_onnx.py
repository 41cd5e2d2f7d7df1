"""The onnx target: the hub model, checked as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from convertkit.platforms import BuildOptions
from convertkit.platforms.onnx import OnnxPlatform
from convertkit.spec import TargetSpec


def test_hub_model_is_the_artifact_and_runs_unoptimised(tmp_path: Path) -> None:
    hub = tmp_path / "onnx" / "model.onnx"
    hub.parent.mkdir()
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(hub))
    platform = OnnxPlatform()

    in_place = platform.build(hub, TargetSpec("onnx"), hub.parent, BuildOptions())
    copied = platform.build(hub, TargetSpec("onnx"), tmp_path / "elsewhere", BuildOptions())
    with platform.open(in_place) as runner:
        outputs = runner.run({"x": np.array([1.0, -2.0], dtype=np.float32)})

    assert in_place.path == hub
    assert copied.path.read_bytes() == hub.read_bytes()
    np.testing.assert_array_equal(outputs["y"], [-1.0, 2.0])
