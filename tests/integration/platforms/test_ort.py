"""cpu:ort: the offline-optimised model loads with session.json's settings and matches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from convertkit.platforms import BuildOptions
from convertkit.platforms.cpu import OrtCpuPlatform
from convertkit.spec import TargetSpec


def _foldable_model(path: Path) -> Path:
    """y = (x @ (W * 2)) + b: ORT folds the constant Mul and fuses MatMul+Add into Gemm."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W")
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["W", "two"], ["W2"]),
         helper.make_node("MatMul", ["x", "W2"], ["h"]),
         helper.make_node("Add", ["h", "b"], ["y"])],
        "foldable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        [weight, two, bias],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_build_optimises_offline_and_session_json_loads_it(tmp_path: Path) -> None:
    source = _foldable_model(tmp_path / "m.onnx")

    artifact = OrtCpuPlatform().build(source, TargetSpec("cpu", "ort"), tmp_path / "cpu-ort",
                                      BuildOptions())

    optimized = onnx.load(str(artifact.path))
    assert [n.op_type for n in optimized.graph.node] == ["Gemm"]
    settings = json.loads((tmp_path / "cpu-ort/session.json").read_text())
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               settings["graph_optimization_level"])
    session = ort.InferenceSession(str(artifact.path), options,
                                   providers=settings["providers"])
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_runner_runs_the_artifact(tmp_path: Path) -> None:
    platform = OrtCpuPlatform()
    artifact = platform.build(_foldable_model(tmp_path / "m.onnx"), TargetSpec("cpu", "ort"),
                              tmp_path / "out", BuildOptions())
    x = np.ones((3, 8), dtype=np.float32)

    with platform.open(artifact) as runner:
        outputs = runner.run({"x": x})

    assert list(outputs) == ["y"] and outputs["y"].shape == (3, 4)


def test_unknown_cpu_device_is_a_preflight_problem(tmp_path: Path) -> None:
    problems = OrtCpuPlatform().preflight(None, TargetSpec("cpu", "ort", "z80"))

    assert len(problems) == 1 and "z80" in problems[0].message
