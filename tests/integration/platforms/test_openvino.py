"""cpu:openvino: an OpenVINO IR at fp32 (f32 hint), bf16 where the CPU has it, int8 by NNCF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from convertkit.checker.budgets import budget_for
from convertkit.checker.metrics import compare_outputs
from convertkit.errors import ConversionError
from convertkit.ir.info import describe
from convertkit.ir.runtime import open_session, run_session, session_options
from convertkit.platforms import BuildOptions, plan_target
from convertkit.platforms.openvino import OpenVinoCpuPlatform, cpu_has_bf16
from convertkit.spec import Precision, TargetSpec
from tests.models.onnx_models import conv_relu_model, odd_and_even_samples, random_weight_model

TARGET = TargetSpec("cpu", "openvino")


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory) -> Path:
    """The onnx package's SqueezeNet with seeded random weights."""
    return random_weight_model("light_squeezenet.onnx",
                               tmp_path_factory.mktemp("ov") / "squeezenet.onnx")


def _reference(model: Path, feeds: dict) -> dict:
    return run_session(open_session(model, session_options()), feeds)


def _feeds(model: Path, seed: int = 0) -> dict[str, np.ndarray]:
    spec = describe(onnx.load(str(model))).input_specs()[0]
    shape = spec.check_shape()
    return {spec.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def test_ir_round_trip_passes_at_fp32_through_the_cli(cli, squeezenet: Path,
                                                      tmp_path: Path) -> None:
    result = cli("convert", str(squeezenet), "-t", "cpu:openvino", out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "cpu:openvino")
    assert artifact["status"] == "pass" and artifact["precision"] == "fp32"
    assert artifact["path"] == "cpu-openvino/model.xml"
    assert (tmp_path / "out/cpu-openvino/model.bin").stat().st_size > 1_000_000
    compile_settings = json.loads((tmp_path / "out/cpu-openvino/compile.json").read_text())
    assert compile_settings["config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    (metrics,) = artifact["metrics"].values()
    assert metrics["max_rel"] < 1e-4


def test_bf16_runs_with_the_bf16_hint_where_the_cpu_has_it(squeezenet: Path,
                                                           tmp_path: Path) -> None:
    platform = OpenVinoCpuPlatform()
    options = BuildOptions(Precision.BF16)
    if not cpu_has_bf16():
        with pytest.raises(ConversionError, match="BF16"):
            platform.build(squeezenet, TARGET, tmp_path, options)
        return

    artifact = platform.build(squeezenet, TARGET, tmp_path, options)
    feeds = _feeds(squeezenet)
    with platform.open(artifact) as runner:
        outputs = runner.run(feeds)
    metrics = compare_outputs(outputs, _reference(squeezenet, feeds), budget_for(Precision.BF16))

    settings = json.loads((tmp_path / "compile.json").read_text())
    assert settings["config"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert all(m.within_budget for m in metrics)
    # bf16 keeps 8 bits of mantissa: it does differ from fp32, by less than its budget.
    assert 1e-6 < max(m.max_abs for m in metrics) < 5e-2


def test_int8_by_nncf_passes_its_cosine_and_top1_budget(squeezenet: Path,
                                                        tmp_path: Path) -> None:
    feeds = _feeds(squeezenet, seed=1)
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, **feeds)
    platform = OpenVinoCpuPlatform()

    artifact = platform.build(squeezenet, TARGET, tmp_path / "int8",
                              BuildOptions(Precision.INT8, calibration))
    with platform.open(artifact) as runner:
        outputs = runner.run(feeds)
    budget = budget_for(Precision.INT8)
    (metrics,) = compare_outputs(outputs, _reference(squeezenet, feeds), budget)

    ir = (tmp_path / "int8/model.xml").read_text()
    assert "FakeQuantize" in ir or "FakeConvert" in ir  # NNCF's quantisation nodes
    assert artifact.precision == Precision.INT8
    assert any("NNCF" in note for note in artifact.notes)
    assert any("real samples calibrate better" in note for note in artifact.notes)
    assert metrics.cosine is not None and metrics.cosine >= budget.min_cosine
    assert metrics.top1_agreement is not None
    assert metrics.within_budget


def test_ops_come_from_the_frontend_and_preflight_names_the_missing_one(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["d"]), helper.make_node("Relu", ["d"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ops = OpenVinoCpuPlatform.requirements.ops

    plan = plan_target(OpenVinoCpuPlatform(), TARGET, model, describe(model))

    assert ops.supports("", "Conv", 17) and not ops.supports("", "Det", 17)
    assert ("ai.onnx", "Relu") in {(d, o) for d, o, _ in ops.table()}
    assert len(plan.problems) == 1 and "Det" in plan.problems[0]
    assert "Relu" not in plan.problems[0]


def test_int8_calibrates_on_the_samples_the_check_never_grades(cli, tmp_path) -> None:
    """--data alone: NNCF saw the odd samples ([0, 1]) only, not the graded ones ([0, 50]):
    the input's FakeQuantize range says so."""
    import openvino as ov

    model = conv_relu_model(tmp_path / "conv.onnx")
    data = odd_and_even_samples(tmp_path / "data.npz")

    result = cli("convert", str(model), "-t", "cpu:openvino", "--precision", "int8",
                 "--data", str(data), out=tmp_path / "out")

    assert result.exit_code in (0, 1), result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "cpu:openvino")
    assert artifact["samples"] == 4 and artifact["calibration"]["indices"] == [1, 3, 5, 7]
    ir = ov.Core().read_model(str(tmp_path / "out" / artifact["path"]))
    quantize = next(op for op in ir.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
                    and op.input(0).get_source_output().get_node().get_type_name()
                    == "Parameter")
    high = quantize.input(2).get_source_output().get_node()
    assert float(np.max(high.get_data())) < 2.0  # calibrated on [0, 1], not [0, 50]
