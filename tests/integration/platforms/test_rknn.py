"""npu:rknn: .rknn models built by rknn-toolkit2 2.5.0 in its toolchain environment and
checked in the toolkit's simulator.

The toolchain is installed the way a user installs it (`convertkit toolchains install
rknn`, a no-op when it is there); about 1 to 2.5 minutes and 1.5 GB the first time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from convertkit.checker.budgets import budget_for
from convertkit.checker.metrics import compare_outputs
from convertkit.checker.samples import GENERATED_SAMPLES, load_samples, save_samples
from convertkit.errors import UsageError
from convertkit.ir.info import describe
from convertkit.ir.prepare import prepare
from convertkit.ir.runtime import open_session, run_session, session_options
from convertkit.platforms import BuildOptions, plan_target
from convertkit.platforms.npu.rknn import (
    CHIPS,
    SIMULATED_OUTPUTS,
    RknnPlatform,
    feeds_digest,
    resolve_chip,
)
from convertkit.spec import Precision, TargetSpec
from convertkit.toolchain_steps.rknn import parse_error_analysis
from tests.conftest import install_toolchain, run_cli
from tests.models.onnx_models import conv_relu_model, odd_and_even_samples, random_weight_model
from tests.models.rknn_models import one_op_model, two_input_model

TINY_CNN = "examples/tiny_cnn.py:build"
SIMULATOR = "the rknn-toolkit2 2.5.0 simulator"


@pytest.fixture(scope="session")
def rknn_toolchain() -> None:
    install_toolchain("rknn")


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The onnx package's SqueezeNet (opset 9, converted to 12 for RKNN) with seeded random
    weights."""
    return random_weight_model("light_squeezenet.onnx",
                               tmp_path_factory.mktemp("rknn") / "squeezenet.onnx")


def _artifact(result, target: str) -> dict:
    return next(a for a in result.report["artifacts"] if a["target"] == target)


def _feeds(model: Path, seed: int) -> dict[str, np.ndarray]:
    spec = describe(onnx.load(str(model))).input_specs()[0]
    shape = spec.check_shape()
    return {spec.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def test_tiny_cnn_fp16_passes_in_the_simulator_through_the_cli(rknn_toolchain: None,
                                                                tmp_path: Path) -> None:
    result = run_cli("convert", TINY_CNN, "-i", "x:1x3x32x32", "-t", "npu:rknn@rk3588",
                     out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = _artifact(result, "npu:rknn@rk3588")
    assert artifact["status"] == "pass" and artifact["precision"] == "fp16"
    assert artifact["checked_in"] == SIMULATOR
    assert artifact["path"] == "npu-rknn-rk3588/model.rknn"
    folder = tmp_path / "out/npu-rknn-rk3588"
    assert (folder / "model.rknn").stat().st_size > 10_000
    settings = json.loads((folder / "rknn.json").read_text())
    assert settings["chip"] == "rk3588" and settings["toolkit"] == "rknn-toolkit2 2.5.0"
    assert (folder / settings["onnx"]).is_file()  # the model a re-check rebuilds from
    (metrics,) = artifact["metrics"].values()
    assert metrics["max_abs"] < 1e-3 and metrics["cosine"] > 0.9999
    assert any(SIMULATOR in note for note in artifact["notes"])


def test_an_int8_only_chip_builds_int8_by_default_calibrated_from_a_dataset_list(
        rknn_toolchain: None, tmp_path: Path) -> None:
    result = run_cli("convert", TINY_CNN, "-i", "x:1x3x32x32", "-t", "npu:rknn@rv1106",
                     out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = _artifact(result, "npu:rknn@rv1106")
    assert artifact["status"] == "pass" and artifact["precision"] == "int8"
    assert artifact["checked_in"] == SIMULATOR
    calibration = tmp_path / "out/npu-rknn-rv1106/calibration"
    lines = (calibration / "dataset.txt").read_text().splitlines()
    assert lines == [f"sample{i}_input0.npy" for i in range(GENERATED_SAMPLES)]
    assert np.load(calibration / "sample0_input0.npy").shape == (1, 3, 32, 32)  # NCHW as ONNX
    assert any("generated inputs" in note for note in artifact["notes"])
    (metrics,) = artifact["metrics"].values()
    assert metrics["cosine"] > 0.99


@pytest.mark.parametrize(("precision", "max_abs", "min_cosine"),
                         [("fp16", 5e-3, 0.9999), ("int8", 0.1, 0.99)])
def test_squeezenet_passes_in_the_simulator_through_the_cli(
        rknn_toolchain: None, squeezenet: Path, tmp_path: Path, precision: str,
        max_abs: float, min_cosine: float) -> None:
    result = run_cli("convert", str(squeezenet), "-t", "npu:rknn", "--precision", precision,
                     out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = _artifact(result, "npu:rknn")
    assert artifact["status"] == "pass" and artifact["precision"] == precision
    assert artifact["checked_in"] == SIMULATOR
    assert "prepared: convert opset 9 -> 12" in artifact["notes"]
    (metrics,) = artifact["metrics"].values()
    assert metrics["max_abs"] < max_abs and metrics["cosine"] > min_cosine


def test_two_inputs_keep_their_layouts_and_share_one_dataset_line(rknn_toolchain: None,
                                                                  tmp_path: Path) -> None:
    model = two_input_model(tmp_path / "two.onnx")

    result = run_cli("convert", str(model), "-t", "npu:rknn@rk3576", "--precision", "int8",
                     out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    artifact = _artifact(result, "npu:rknn@rk3576")
    assert artifact["status"] == "pass"
    assert set(artifact["metrics"]) == {"y", "sq"}  # sq is 1x8x16x16, compared as NCHW
    dataset = tmp_path / "out/npu-rknn-rk3576/calibration/dataset.txt"
    assert dataset.read_text().splitlines()[0] == "sample0_input0.npy sample0_input1.npy"


@pytest.mark.slow  # three builds: the artifact, the rebuild to simulate, the analysis
def test_the_runner_rebuilds_for_other_inputs_and_analyses_layers(
        rknn_toolchain: None, squeezenet: Path, tmp_path: Path) -> None:
    platform, target = RknnPlatform(), TargetSpec("npu", "rknn")
    model = onnx.load(str(squeezenet))
    plan = plan_target(platform, target, model, describe(model))
    prepared = prepare(squeezenet, plan, (), tmp_path / "prepared.onnx")  # opset 9 -> 12
    evaluation = [_feeds(squeezenet, seed=1), _feeds(squeezenet, seed=2)]
    save_samples(tmp_path / "evaluation.npz", evaluation)
    artifact = platform.build(prepared, target, tmp_path,
                              BuildOptions(Precision.INT8, evaluation_path=tmp_path /
                                           "evaluation.npz"))
    feeds = _feeds(squeezenet, seed=7)  # not an evaluation sample: the runner rebuilds
    reference = run_session(open_session(squeezenet, session_options()), feeds)

    with platform.open(artifact) as runner:
        recorded = runner.run_samples(evaluation)
        outputs = runner.run(feeds)
        rows = runner.layer_analysis(feeds)

    settings = json.loads((tmp_path / "rknn.json").read_text())
    assert settings["simulated_samples_sha256"] == [feeds_digest(f) for f in evaluation]
    assert feeds_digest(feeds) not in settings["simulated_samples_sha256"]  # so it rebuilt
    simulated = load_samples(tmp_path / SIMULATED_OUTPUTS)
    assert len(recorded) == len(simulated) == 2
    assert all(np.array_equal(recorded[i][name], simulated[i][name])
               for i in range(2) for name in simulated[i])
    assert artifact.calibrated
    metrics = compare_outputs(outputs, reference, budget_for(Precision.INT8))
    assert all(m.within_budget for m in metrics)
    assert 1 <= len(rows) <= 10
    assert {"layer", "op", "cosine", "euclidean", "cosine_entire"} <= set(rows[0])
    cosines = [row["cosine"] for row in rows]
    assert cosines == sorted(cosines) and all(-1.0 <= c <= 1.0 for c in cosines)
    assert any(row["op"] in ("Conv", "ConvRelu", "Relu", "Concat", "MaxPool") for row in rows)
    assert (tmp_path / "accuracy_analysis.txt").is_file()


def test_int8_calibrates_on_samples_the_check_never_grades(rknn_toolchain: None,
                                                           tmp_path: Path) -> None:
    model = conv_relu_model(tmp_path / "conv.onnx")
    data = odd_and_even_samples(tmp_path / "data.npz", count=6)

    result = run_cli("convert", str(model), "-t", "npu:rknn@rk3588", "--precision", "int8",
                     "--data", str(data), out=tmp_path / "out")

    # Calibrated on [0, 1], graded on [0, 50]: the int8 input saturates, and the check,
    # run on samples calibration never saw, says so.
    assert result.exit_code == 1, result.stderr
    samples = np.load(data)["x"]
    folder = tmp_path / "out/npu-rknn-rk3588"
    lines = (folder / "calibration/dataset.txt").read_text().splitlines()
    calibrated_on = np.stack([np.load(folder / "calibration" / line) for line in lines])
    np.testing.assert_array_equal(calibrated_on, samples[1::2])
    report = result.report
    assert report["check"]["samples"]["evaluation"]["count"] == 3
    assert {a["target"]: a["samples"] for a in report["artifacts"]} == {
        "onnx": 3, "npu:rknn@rk3588": 3}
    artifact = _artifact(result, "npu:rknn@rk3588")
    assert artifact["status"] == "fail" and artifact["calibration"]["real"] is True
    # The build simulated the three graded samples, so the check needed no rebuild.
    simulated = load_samples(folder / SIMULATED_OUTPUTS)
    settings = json.loads((folder / "rknn.json").read_text())
    assert len(simulated) == len(settings["simulated_samples_sha256"]) == 3



def test_an_op_rknn_lacks_fails_preflight_naming_it(tmp_path: Path) -> None:
    model = one_op_model(tmp_path / "det.onnx", "Det")

    result = run_cli("convert", str(model), "-t", "npu:rknn", out=tmp_path / "out")

    assert result.exit_code == 3
    error = _artifact(result, "npu:rknn")["error"]
    assert error["code"] == "preflight-rejected"
    assert "ops not supported at opset 17: Det" in error["message"]


def test_the_op_table_names_its_source_and_takes_common_cnn_ops(squeezenet: Path) -> None:
    model = onnx.load(str(squeezenet))
    plan = plan_target(RknnPlatform(), TargetSpec("npu", "rknn"), model, describe(model))
    requirements = RknnPlatform.requirements

    assert plan.problems == () and plan.target_opset == 12
    assert "rknn-toolkit2 2.5.0" in requirements.ops.source
    assert requirements.opset_range() == (12, 19)


def test_missing_toolchain_exits_4_with_the_install_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERTKIT_TOOLCHAINS_DIR", str(tmp_path / "empty"))
    model = two_input_model(tmp_path / "two.onnx")

    result = run_cli("convert", str(model), "-t", "npu:rknn@rk3568", out=tmp_path / "out")

    assert result.exit_code == 4
    assert "convertkit toolchains install rknn" in result.stderr
    assert _artifact(result, "npu:rknn@rk3568")["error"]["code"] == "missing-toolchain-rknn"


def test_an_unknown_chip_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    model = two_input_model(tmp_path / "two.onnx")

    result = run_cli("convert", str(model), "-t", "npu:rknn@rk9999", out=tmp_path / "out")

    assert result.exit_code == 3
    message = _artifact(result, "npu:rknn@rk9999")["error"]["message"]
    assert "unknown Rockchip chip 'rk9999'" in message and "rk3588" in message
    with pytest.raises(UsageError, match="rk9999"):
        resolve_chip(TargetSpec("npu", "rknn", "rk9999"))
    assert resolve_chip(TargetSpec("npu", "rknn")) == "rk3588" and "rv1126b" in CHIPS


def test_fp16_on_an_int8_only_chip_asks_for_int8(tmp_path: Path) -> None:
    model = two_input_model(tmp_path / "two.onnx")

    result = run_cli("convert", str(model), "-t", "npu:rknn@rv1103", "--precision", "fp16",
                     out=tmp_path / "out")

    # Refused before anything is built or written, not after other targets were built.
    assert result.exit_code == 2
    assert "npu:rknn@rv1103 does not build fp16: the rv1103 NPU computes int8 only" in \
        result.stderr
    assert "hint: pass --precision int8" in result.stderr
    assert not (tmp_path / "out").exists()


def test_error_analysis_rows_skip_fused_layers() -> None:
    text = ("layer_name   simulator_error\n"
            "[Input] x                 1.00000 | 0.00000   1.00000 | 0.00000\n"
            "[Conv] /conv/Conv_output_0\n"
            "[Relu] /relu/Relu_output_0  0.99995 | 0.49710   0.99990 | 0.40000\n")

    rows = parse_error_analysis(text)

    assert [row["layer"] for row in rows] == ["x", "/relu/Relu_output_0"]
    assert rows[1] == {"layer": "/relu/Relu_output_0", "op": "Relu", "cosine": 0.9999,
                       "euclidean": 0.4, "cosine_entire": 0.99995, "euclidean_entire": 0.4971}


def test_a_failed_check_reports_the_toolkits_worst_layers(rknn_toolchain: None,
                                                          squeezenet: Path,
                                                          tmp_path: Path) -> None:
    result = run_cli("convert", str(squeezenet), "-t", "npu:rknn", "--atol", "1e-9",
                     "--rtol", "0", out=tmp_path / "out")

    assert result.exit_code == 1
    artifact = _artifact(result, "npu:rknn")
    assert artifact["status"] == "fail"  # fp16 cannot meet 1e-9
    layers = artifact["layer_analysis"]
    assert 1 <= len(layers) <= 10 and {row["op"] for row in layers} & {"Conv", "Relu", "Concat"}
    folder = tmp_path / "out/npu-rknn"
    assert (folder / "accuracy_analysis.txt").is_file()
    assert (folder / "prepared.onnx").is_file()  # the opset-12 model the analysis rebuilt
