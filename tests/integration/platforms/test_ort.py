"""cpu:ort: the offline-optimised model loads with session.json's settings and matches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.checker.budgets import budget_for
from convertkit.checker.metrics import compare_outputs, compare_samples
from convertkit.checker.samples import load_samples
from convertkit.platforms import BuildOptions
from convertkit.platforms.cpu import OrtCpuPlatform
from convertkit.spec import Precision, TargetSpec
from tests.models.onnx_models import conv_relu_model, odd_and_even_samples


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


# int8: onnxruntime.quantization, static QDQ for convolutional models, dynamic for
# transformer-like ones.

@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory) -> Path:
    """tests/models/torch_models.py:small_cnn converted by `convertkit convert` (hub model,
    check inputs and the reference outputs torch computed)."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("int8") / "cnn"
    result = run_cli("convert", "tests/models/torch_models.py:small_cnn", "-i", "x:8x3x32x32",
                     out=out)
    assert result.exit_code == 0, result.stderr
    return out


def test_int8_static_qdq_on_a_small_cnn_passes_its_cosine_and_top1_budget(
        small_cnn: Path, tmp_path: Path) -> None:
    platform = OrtCpuPlatform()
    samples, references = load_samples(small_cnn / "check/inputs.npz"), load_samples(
        small_cnn / "check/reference.npz")

    artifact = platform.build(small_cnn / "onnx/model.onnx", TargetSpec("cpu", "ort"),
                              tmp_path / "int8", BuildOptions(Precision.INT8))
    with platform.open(artifact) as runner:
        outputs = runner.run_samples(samples)
    budget = budget_for(artifact.precision)
    (metrics,) = compare_samples(outputs, references, budget)

    ops = {n.op_type for n in onnx.load(str(artifact.path)).graph.node}
    assert artifact.path.is_file() and artifact.precision == Precision.INT8
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert budget.to_dict() == {"atol": 0.1, "rtol": 0.1, "min_cosine": 0.98,
                                "min_top1": 0.9, "min_top5": 0.8, "max_accuracy_drop": 1.0}
    assert artifact.calibrated  # static quantisation: calibrated on generated samples here
    assert metrics.within_budget
    assert metrics.cosine >= 0.98 and metrics.top1_agreement is not None
    assert metrics.top1_agreement >= 0.9
    assert metrics.max_abs > 0  # it is quantised, not the fp32 model
    notes = " | ".join(artifact.notes)
    assert "static QDQ quantisation (per-channel" in notes and "convolution" in notes
    assert "real samples calibrate better" in notes  # generated inputs, not --data
    settings = json.loads((tmp_path / "int8/session.json").read_text())
    assert settings["graph_optimization_level"] == "ORT_ENABLE_ALL"


def test_int8_real_data_drops_the_calibration_warning(small_cnn: Path, tmp_path: Path) -> None:
    artifact = OrtCpuPlatform().build(
        small_cnn / "onnx/model.onnx", TargetSpec("cpu", "ort"), tmp_path,
        BuildOptions(Precision.INT8, calibration_is_real=True))

    assert not any("calibrate better" in note for note in artifact.notes)


def test_int8_transformer_like_model_is_quantised_dynamically(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32) / 8,
                                       f"w{i}") for i in range(3)]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w0"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("MatMul", ["b", "w1"], ["c"]), helper.make_node("Softmax", ["c"], ["d"]),
         helper.make_node("MatMul", ["d", "w2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])], weights)
    source = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    x = rng.standard_normal((4, 64)).astype(np.float32)
    platform = OrtCpuPlatform()

    artifact = platform.build(source, TargetSpec("cpu", "ort"), tmp_path / "out",
                              BuildOptions(Precision.INT8))
    with platform.open(artifact) as runner:
        outputs = runner.run({"x": x})
    expected = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    (metrics,) = compare_outputs(outputs, {"y": expected}, budget_for(Precision.INT8))

    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(artifact.path)).graph.node}
    assert any("dynamic quantisation" in n and "transformer-like (3 MatMul/Gemm" in n
               for n in artifact.notes)
    assert metrics.within_budget and metrics.cosine > 0.99


def test_int8_raises_an_old_opset_before_quantising(tmp_path: Path) -> None:
    """The light models are opset 9; QDQ nodes need opset 13 (per-channel axis)."""
    source = Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
    platform = OrtCpuPlatform()

    artifact = platform.build(source, TargetSpec("cpu", "ort"), tmp_path / "out",
                              BuildOptions(Precision.INT8))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with platform.open(artifact) as runner:
        outputs = runner.run({"data_0": x})

    assert "opset raised from 9 to 13 for int8 quantisation" in artifact.notes
    quantized = onnx.load(str(artifact.path))
    assert any(n.op_type == "DequantizeLinear" for n in quantized.graph.node)
    assert outputs["softmaxout_1"].shape == (1, 1000, 1, 1)


def test_int8_calibrates_on_the_samples_the_check_never_grades(cli, tmp_path) -> None:
    """--data alone: the odd samples ([0, 1]) calibrate, the even ones ([0, 50]) are graded;
    the input's quantisation scale shows calibration saw only [0, 1]."""
    model = conv_relu_model(tmp_path / "conv.onnx")
    data = odd_and_even_samples(tmp_path / "data.npz")

    result = cli("convert", str(model), "-t", "cpu:ort", "--precision", "int8", "--data",
                 str(data), out=tmp_path / "out")

    assert result.exit_code in (0, 1), result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "cpu:ort")
    assert artifact["samples"] == 4
    assert artifact["calibration"]["indices"] == [1, 3, 5, 7]
    assert artifact["calibration"]["real"] is True
    quantized = onnx.load(str(tmp_path / "out" / artifact["path"]))
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in quantized.graph.initializer}
    first = next(n for n in quantized.graph.node
                 if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    scale = float(initializers[first.input[1]])
    assert scale < 2.0 / 255  # a [0, 50] range would give ~50/255
