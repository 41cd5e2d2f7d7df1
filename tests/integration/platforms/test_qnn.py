"""npu:qnn: QNN HTP context binaries built by onnxruntime-qnn in its toolchain environment
and checked in the HTP simulator with CPU fallback disabled.

The toolchain is installed the way a user installs it (`convertkit toolchains install qnn`,
a no-op when it is there); about 45 s and 610 MB the first time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.checker.budgets import budget_for
from convertkit.checker.metrics import compare_outputs
from convertkit.errors import ConversionError, UsageError
from convertkit.ir.info import describe
from convertkit.ir.runtime import open_session, run_session, session_options
from convertkit.platforms import BuildOptions, plan_target
from convertkit.platforms.npu.qnn import SOCS, QnnPlatform, resolve_soc
from convertkit.spec import Precision, TargetSpec
from tests.conftest import install_toolchain, run_cli
from tests.models.onnx_models import conv_relu_model, odd_and_even_samples, random_weight_model

SMALL_CNN = "tests/models/torch_models.py:small_cnn"


@pytest.fixture(scope="session")
def qnn_toolchain() -> None:
    install_toolchain("qnn")


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The onnx package's SqueezeNet (opset 13 after conversion) with seeded random weights."""
    return random_weight_model("light_squeezenet.onnx",
                               tmp_path_factory.mktemp("qnn") / "squeezenet.onnx")


def _feeds(model: Path, seed: int = 0) -> dict[str, np.ndarray]:
    spec = describe(onnx.load(str(model))).input_specs()[0]
    shape = spec.check_shape()
    return {spec.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _epcontext(model: Path) -> onnx.NodeProto:
    (node,) = onnx.load(str(model), load_external_data=False).graph.node
    return node


def test_int8_context_binary_passes_with_cpu_fallback_off_through_the_cli(
        qnn_toolchain: None, tmp_path: Path) -> None:
    result = run_cli("convert", SMALL_CNN, "-i", "x:1x3x32x32", "-t", "npu:qnn",
                     out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "npu:qnn")
    assert artifact["status"] == "pass" and artifact["precision"] == "int8"
    assert artifact["path"] == "npu-qnn/model_ctx.onnx"
    node = _epcontext(tmp_path / "out/npu-qnn/model_ctx.onnx")
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert (node.op_type, node.domain) == ("EPContext", "com.microsoft")
    assert attributes["source"] == b"QNNExecutionProvider" and attributes["embed_mode"] == 0
    binary = tmp_path / "out/npu-qnn" / attributes["ep_cache_context"].decode()
    assert binary.suffix == ".bin" and binary.stat().st_size > 10_000
    qdq = onnx.load(str(tmp_path / "out/npu-qnn/model.qdq.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    settings = json.loads((tmp_path / "out/npu-qnn/qnn.json").read_text())
    assert settings["soc"] == "sm8650" and settings["soc_model"] == 57
    assert settings["cpu_fallback"] is False
    assert "QNN HTP simulator" in artifact["checked_in"]
    assert any("CPU fallback disabled" in note for note in artifact["notes"])
    assert "checked in the QNN HTP simulator" in result.stdout
    (metrics,) = artifact["metrics"].values()
    assert metrics["cosine"] >= 0.99
    assert not list((tmp_path / "out/npu-qnn").glob("calibration-*.npz"))


def test_squeezenet_int8_for_sm8550_passes_its_budget(qnn_toolchain: None, squeezenet: Path,
                                                      tmp_path: Path) -> None:
    result = run_cli("convert", str(squeezenet), "-t", "npu:qnn@sm8550", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "npu:qnn@sm8550")
    assert artifact["status"] == "pass" and artifact["precision"] == "int8"
    settings = json.loads((tmp_path / "out/npu-qnn-sm8550/qnn.json").read_text())
    assert settings["soc_model"] == 43 and settings["htp_arch"] == 73
    (metrics,) = artifact["metrics"].values()
    assert 0.99 <= metrics["cosine"] < 1.0  # int8: close, and not the fp32 model itself
    assert metrics["top1_agreement"] == 1.0


def test_fp16_runs_at_fp16_in_the_simulator(qnn_toolchain: None, squeezenet: Path,
                                            tmp_path: Path) -> None:
    platform = QnnPlatform()
    target = TargetSpec("npu", "qnn", "sm8750")
    samples = [_feeds(squeezenet, seed=0), _feeds(squeezenet, seed=1)]
    session = open_session(squeezenet, session_options())
    references = [run_session(session, feeds) for feeds in samples]

    artifact = platform.build(squeezenet, target, tmp_path, BuildOptions(Precision.FP16))
    runner = platform.open(artifact)
    assert runner is not None
    with runner:
        outputs = runner.run_samples(samples)  # both in one simulator step
        single = runner.run(samples[1])
    metrics = [compare_outputs(out, ref, budget_for(Precision.FP16))[0]
               for out, ref in zip(outputs, references, strict=True)]

    assert artifact.precision == Precision.FP16 and not artifact.calibrated
    assert _epcontext(artifact.path).op_type == "EPContext"
    assert json.loads((tmp_path / "qnn.json").read_text())["soc_model"] == 69
    assert len(outputs) == 2 and all(m.within_budget for m in metrics)
    # fp16 rounding shows: the HTP did not compute in fp32.
    assert all(1e-6 < m.max_abs < 1e-2 for m in metrics)
    # Each sample gets its own outputs, in order.
    (name,) = single
    np.testing.assert_array_equal(outputs[1][name], single[name])
    assert not np.array_equal(outputs[0][name], outputs[1][name])


def test_int8_calibrates_on_samples_the_check_never_grades(qnn_toolchain: None,
                                                           tmp_path: Path) -> None:
    model = conv_relu_model(tmp_path / "conv.onnx")
    data = odd_and_even_samples(tmp_path / "data.npz", count=6)

    result = run_cli("convert", str(model), "-t", "npu:qnn", "--precision", "int8",
                     "--data", str(data), out=tmp_path / "out")

    # Calibrated on [0, 1], graded on [0, 50]: the int8 input saturates, and the check,
    # run on samples calibration never saw, says so.
    assert result.exit_code == 1, result.stderr
    odd = np.load(data)["x"][1::2]
    qdq = onnx.load(str(tmp_path / "out/npu-qnn/model.qdq.onnx"))
    (quantize,) = [n for n in qdq.graph.node if n.op_type == "QuantizeLinear"
                   and n.input[0] == "x"]
    scales = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    # MinMax into uint8: the range [0, max] of the calibration samples over 255 steps.
    assert np.isclose(float(scales[quantize.input[1]]), odd.max() / 255, rtol=1e-3)
    report = result.report
    assert report["check"]["samples"]["evaluation"]["count"] == 3
    assert {a["target"]: a["samples"] for a in report["artifacts"]} == {"onnx": 3,
                                                                        "npu:qnn": 3}
    artifact = next(a for a in report["artifacts"] if a["target"] == "npu:qnn")
    assert artifact["status"] == "fail" and artifact["calibration"]["real"] is True



def test_a_node_the_htp_does_not_take_fails_the_build_by_name(qnn_toolchain: None,
                                                              tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["r"], ["y"],
                                                                   name="determinant")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)

    # The build itself, past preflight: CPU fallback is off, so nothing runs beside the HTP.
    with pytest.raises(ConversionError, match=r"left for the CPU: 1 Det \(determinant\)") as caught:
        QnnPlatform().build(model, TargetSpec("npu", "qnn"), tmp_path / "out",
                            BuildOptions(Precision.FP16))

    assert caught.value.code == "unsupported-op"


def test_missing_toolchain_exits_4_with_the_install_command(
        squeezenet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "no-toolchains").mkdir()
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path / "no-toolchains"))

    result = run_cli("convert", str(squeezenet), "-t", "npu:qnn", out=tmp_path / "out")

    assert result.exit_code == 4, result.stderr
    assert "the qnn toolchain is not installed" in result.stderr
    assert "convertkit toolchains install qnn" in result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "npu:qnn")
    assert artifact["status"] == "error"


def test_unknown_soc_is_named_with_the_known_ones(squeezenet: Path, tmp_path: Path) -> None:
    result = run_cli("convert", str(squeezenet), "-t", "npu:qnn@sm9999", out=tmp_path / "out")

    assert result.exit_code == 3, result.stderr
    assert "unknown Qualcomm SoC 'sm9999'" in result.stderr
    assert "sm8650" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(UsageError, match="sm9999"):
        resolve_soc(TargetSpec("npu", "qnn", "sm9999"))
    assert resolve_soc(TargetSpec("npu", "qnn", "SM8550")) == ("sm8550", SOCS["sm8550"])


def test_fp16_on_an_soc_without_fp16_units_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="HTP v68") as caught:
        QnnPlatform().build(tmp_path / "unused.onnx", TargetSpec("npu", "qnn", "sm8350"),
                            tmp_path, BuildOptions(Precision.FP16))

    assert caught.value.exit_code == 2


def test_preflight_reads_the_documented_op_table_and_wants_static_shapes() -> None:
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["d"]), helper.make_node("Relu", ["d"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ops = QnnPlatform.requirements.ops

    plan = plan_target(QnnPlatform(), TargetSpec("npu", "qnn"), model, describe(model))

    assert ops.supports("", "Conv", 17) and ops.supports("com.microsoft", "Gelu", 1)
    assert not ops.supports("", "Det", 17) and not ops.supports("", "Loop", 17)
    assert "QNN-ExecutionProvider.md" in ops.source
    problems = " ".join(plan.problems)
    assert "Det" in problems and "Relu" not in problems.split("dynamic")[0]
    assert "static shapes" in problems
