"""What a verdict rests on, end to end through the CLI: a CNN trained on real handwritten
digits (tests/models/digits.py), raw pixels in. int8 calibrated on generated inputs is never
chosen; with real samples and labels every candidate's accuracy is reported and judged;
calibration never sees the samples the check grades; a NaN reference proves nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.models.digits import SOURCE, Trained, train

DIGITS_INPUT = "x:1x1x8x8"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Trained:
    trained = train(tmp_path_factory.mktemp("digits"))
    assert trained.accuracy > 94  # the model really learned the task
    return trained


def _accuracy_drop(cli, digits: Trained, candidate: Path, out: Path) -> float:
    """The candidate's top-1 accuracy loss, in points, on the 500 held-out images."""
    result = cli("check", SOURCE, str(candidate), "--weights", str(digits.weights), "-i",
                 DIGITS_INPUT, "--data", str(digits.heldout), "--labels", str(digits.labels),
                 "--report-format", "json", out=out)
    assert result.exit_code in (0, 1), result.stderr
    (artifact,) = result.report["artifacts"]
    assert artifact["accuracy"]["rows"] == 500
    return artifact["accuracy"]["drop"]


def test_without_data_int8_calibrated_on_noise_is_never_chosen(cli, digits, tmp_path) -> None:
    out = tmp_path / "out"

    result = cli("convert", SOURCE, "--weights", str(digits.weights), "-i", DIGITS_INPUT,
                 "-t", "cpu", out=out)

    assert result.exit_code == 0, result.stderr
    cpu = next(a for a in result.report["artifacts"] if a["target"] == "cpu")
    unproven = [c for c in cpu["candidates"] if c["calibrated_on_generated"]]
    assert {c["precision"] for c in unproven} == {"int8"}
    assert not any(c["chosen"] for c in unproven)
    assert cpu["precision"] != "int8"
    assert "not chosen: calibrated on generated inputs" in result.stdout
    # The protection matters: on the held-out images, the chosen artifact loses at most a
    # point, while an int8 candidate calibrated on noise loses far more.
    assert _accuracy_drop(cli, digits, out / cpu["path"], tmp_path / "chosen") <= 1.0
    int8 = next(c for c in unproven if c["target"] == "cpu:ort")
    assert _accuracy_drop(cli, digits, out / int8["path"], tmp_path / "int8") > 5.0


def test_real_samples_and_labels_judge_every_candidate_by_accuracy(cli, digits,
                                                                   tmp_path) -> None:
    result = cli("convert", SOURCE, "--weights", str(digits.weights), "-i", DIGITS_INPUT,
                 "-t", "cpu", "--data", str(digits.heldout), "--labels", str(digits.labels),
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    samples = result.report["check"]["samples"]
    evaluation, calibration = samples["evaluation"], samples["calibration"]
    assert (evaluation["count"], calibration["count"]) == (250, 250)
    assert not set(evaluation["indices"]) & set(calibration["indices"])
    assert calibration["real"] and samples["labels"] == f"--labels {digits.labels}"
    cpu = next(a for a in result.report["artifacts"] if a["target"] == "cpu")
    assert cpu["samples"] == 250 and cpu["accuracy"]["rows"] == 250
    assert cpu["accuracy"]["source_top1"] > 94
    assert all(c["accuracy_drop"] is not None for c in cpu["candidates"]
               if c["status"] in ("pass", "fail"))
    chosen = next(c for c in cpu["candidates"] if c["chosen"])
    assert chosen["accuracy_drop"] <= 1.0
    assert "top-1 accuracy" in result.stdout
    int8 = [a for a in cpu["candidates"] if a["precision"] == "int8"]
    assert int8 and not any(c["calibrated_on_generated"] for c in int8)


def test_int8_that_loses_accuracy_fails_with_exit_1(cli, digits, tmp_path) -> None:
    """Calibrated on noise given as --calib-data (the measured failure: 97% -> ~21%), int8
    passes neither its accuracy budget nor, here, its output budget."""
    noise = np.random.default_rng(1).standard_normal((16, 1, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "noise.npz", x=noise)

    result = cli("convert", SOURCE, "--weights", str(digits.weights), "-i", DIGITS_INPUT,
                 "-t", "cpu:ort", "--precision", "int8", "--data", str(digits.heldout),
                 "--labels", str(digits.labels), "--calib-data", str(tmp_path / "noise.npz"),
                 out=tmp_path / "out")

    assert result.exit_code == 1, result.stdout + result.stderr
    artifact = next(a for a in result.report["artifacts"] if a["target"] == "cpu:ort")
    assert artifact["status"] == "fail"
    assert artifact["accuracy"]["drop"] > artifact["accuracy"]["max_drop"] == 1.0
    assert artifact["calibration"] == {"source": f"--calib-data {tmp_path / 'noise.npz'}",
                                       "count": 16, "real": True,
                                       "indices": list(range(16))}
    assert result.report["check"]["samples"]["evaluation"]["count"] == 500  # all of --data


def test_a_nan_reference_proves_nothing(cli, tmp_path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["n"]),
         helper.make_node("Sqrt", ["n"], ["y"])], "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = tmp_path / "nan.onnx"
    model.write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())

    result = cli("convert", str(model), out=tmp_path / "out")

    assert result.exit_code == 1
    metrics = result.report["artifacts"][0]["metrics"]["y"]
    assert not metrics["within_budget"]
    assert "the reference holds" in metrics["note"] and "NaN or Inf" in metrics["note"]


@pytest.mark.parametrize(("make_data", "needle"), [
    (lambda path: np.savez(path, x=np.zeros((2, 3, 32, 32), np.float32)),
     "input x holds an array of shape [2, 3, 32, 32]"),
    (lambda path: path.write_bytes(b"not a zip"), "cannot read --data"),
])
def test_data_that_does_not_fit_is_exit_2_before_anything_is_written(
        cli, tmp_path, make_data, needle) -> None:
    data = tmp_path / "data.npz"
    make_data(data)

    result = cli("convert", "examples/tiny_cnn.py:build", "-i", "x:1x3x32x32", "--data",
                 str(data), out=tmp_path / "out")

    assert result.exit_code == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_of_npz_files_is_a_sample_set(cli, tmp_path) -> None:
    from tests.models.onnx_models import conv_relu_model

    model = conv_relu_model(tmp_path / "conv.onnx", batch="batch")
    folder = tmp_path / "samples"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):  # 1 + 2 + 3 samples of batch 1
        np.savez(folder / f"part{index}.npz",
                 x=rng.standard_normal((index + 1, 1, 3, 16, 16)).astype(np.float32))

    result = cli("convert", str(model), "-t", "cpu:ort", "--data", str(folder),
                 out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    samples = result.report["check"]["samples"]
    assert samples["evaluation"]["indices"] == [0, 2, 4]
    assert samples["calibration"]["indices"] == [1, 3, 5]
    assert all(a["samples"] == 3 for a in result.report["artifacts"])
