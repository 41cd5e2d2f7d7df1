"""`convertkit check A B` as a user runs it: a perturbed real model, an fp16 model that
overflows, the reports it leaves (HTML opened in headless Chromium, JUnit), folders
written by `convert` on either side, and bad usage."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.models.onnx_models import consumer_of, random_weight_model, scale_initializer

PERTURBED_WEIGHT = "fire4/expand3x3_w_0"


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory) -> tuple[Path, Path]:
    """SqueezeNet with random weights, and a copy with one conv weight scaled by 1.5."""
    folder = tmp_path_factory.mktemp("squeezenet")
    original = random_weight_model("light_squeezenet.onnx", folder / "squeezenet.onnx")
    perturbed = scale_initializer(original, folder / "perturbed.onnx", PERTURBED_WEIGHT, 1.5)
    return original, perturbed


@pytest.fixture(scope="module")
def failed_check(squeezenet, tmp_path_factory):
    from tests.conftest import run_cli

    original, perturbed = squeezenet
    out = tmp_path_factory.mktemp("check") / "out"
    return run_cli("check", str(original), str(perturbed), out=out)


def test_a_scaled_conv_weight_fails_and_is_localised(failed_check, squeezenet) -> None:
    result = failed_check
    perturbed_node = consumer_of(squeezenet[0], PERTURBED_WEIGHT)

    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    artifact = result.report["artifacts"][0]
    assert artifact["status"] == "fail"
    node = artifact["localization"]["node"]
    assert (node["name"], node["op_type"]) == (perturbed_node.name, "Conv")
    assert node["error_before"]["max_abs"] == 0.0
    assert node["error_after"]["within_budget"] is False
    assert [c["name"] for c in node["differing_constants"]] == [PERTURBED_WEIGHT]
    assert f"first diverging node: Conv '{perturbed_node.name}'" in result.stdout
    metrics = artifact["metrics"]["softmaxout_1"]
    assert metrics["top1_agreement"] is not None and metrics["snr_db"] is not None
    curve = artifact["localization"]["curve"]
    assert curve[0]["within_budget"] and not curve[-1]["within_budget"]


def test_the_repro_folder_reproduces_the_failure(cli, failed_check) -> None:
    repro = failed_check.out / "repro"
    command = failed_check.report["artifacts"][0]["localization"]["repro"]["command"]

    assert sorted(p.name for p in repro.iterdir()) == [
        "candidate.onnx", "command.sh", "inputs.npz", "reference.onnx"]
    words = shlex.split(command)
    assert words[:2] == ["convertkit", "check"]
    rerun = cli(*words[1:])

    assert rerun.exit_code == 1, rerun.stderr
    assert "over budget" in rerun.stdout
    assert len(onnx.load(str(repro / "candidate.onnx")).graph.node) == 1


def test_the_html_report_shows_the_table_in_headless_chromium(failed_check,
                                                              tmp_path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        # CI installs it (.ci/run): there a missing browser is a failure, not a skip.
        assert os.environ.get("CI", "").lower() not in ("1", "true"), "CI has no chromium"
        pytest.skip("chromium not installed: apt-get install chromium (make test-deps)")
    page = failed_check.out / "report.html"

    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert '<table id="summary">' in dom
    assert "softmaxout_1" in dom and "over budget" in dom
    assert "first diverging node" in dom
    assert dom.count("<svg") >= 2


def test_the_junit_report_has_the_schema_elements(failed_check) -> None:
    root = ET.parse(failed_check.out / "junit.xml").getroot()

    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    for element in (root, suite):
        for attribute in ("name", "tests", "failures", "errors", "time"):
            assert attribute in element.attrib, (element.tag, attribute)
    case = suite.find("testcase")
    assert {"name", "classname", "time"} <= set(case.attrib)
    failure = case.find("failure")
    assert failure is not None and "max abs" in failure.get("message")
    assert "first diverging node" in failure.text
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "1", "0")


def _overflowing_fp32(path: Path) -> Path:
    """x * 100 -> MatMul with weights of 1000 (values ~1e5, past fp16's 65504) -> / 1e6."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["scaled"], name="scale"),
         helper.make_node("MatMul", ["scaled", "W"], ["big"], name="overflowing_matmul"),
         helper.make_node("Div", ["big", "d"], ["small"], name="shrink"),
         helper.make_node("Tanh", ["small"], ["y"], name="squash")],
        "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(np.array(100.0, np.float32), "k"),
         numpy_helper.from_array(np.full((8, 8), 1000.0, np.float32), "W"),
         numpy_helper.from_array(np.array(1e6, np.float32), "d")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_an_fp16_model_that_overflows_is_localised_to_the_overflowing_node(cli,
                                                                           tmp_path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32 = _overflowing_fp32(tmp_path / "fp32.onnx")
    fp16 = tmp_path / "fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(fp16))
    np.savez(tmp_path / "data.npz", x=np.abs(np.random.default_rng(0).standard_normal((1, 8))
                                               ).astype(np.float32) + 0.5)

    result = cli("check", str(fp32), str(fp16), "--data", str(tmp_path / "data.npz"),
                 out=tmp_path / "out")

    assert result.exit_code == 1, result.stderr
    artifact = result.report["artifacts"][0]
    assert artifact["precision"] == "fp16"
    node = artifact["localization"]["node"]
    assert node["name"] == "overflowing_matmul"
    assert node["error_after"]["max_abs"] is None  # infinite: the fp16 side overflowed
    assert node["error_before"]["within_budget"] is True
    assert "first diverging node: MatMul 'overflowing_matmul'" in result.stdout
    assert "inf after" in result.stdout
    assert artifact["localization"]["repro"]["reproduced"] is True


def test_a_quantised_model_is_judged_at_int8_and_localised(cli, squeezenet, tmp_path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.batches = iter([{"data_0": rng.standard_normal((1, 3, 224, 224))
                                  .astype(np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(squeezenet[0]), str(qdq), Calibration(), quant_format=QuantFormat.QDQ)

    as_int8 = cli("check", str(squeezenet[0]), str(qdq), out=tmp_path / "int8")
    as_fp32 = cli("check", str(squeezenet[0]), str(qdq), "--precision", "fp32",
                  out=tmp_path / "fp32")

    assert as_int8.exit_code in (0, 1), as_int8.stderr
    assert as_int8.report["artifacts"][0]["precision"] == "int8"  # read from the Q/DQ nodes
    assert as_fp32.exit_code == 1
    localization = as_fp32.report["artifacts"][0]["localization"]
    # QDQ keeps the float tensor names between its Q/DQ pairs: the first layer already
    # leaves the fp32 budget, and the inserted Q/DQ tensors are counted, not compared.
    first_conv = next(n for n in onnx.load(str(squeezenet[0])).graph.node
                      if n.op_type == "Conv")
    node = localization["node"]
    assert first_conv.name in [node["name"], *(f["name"] for f in node["fused_with"])]
    assert localization["only_in_candidate"] > 0


def test_folders_written_by_convert_on_either_side(cli, squeezenet, tmp_path) -> None:
    original, perturbed = squeezenet
    converted = cli("convert", str(original), "-t", "cpu:ort", out=tmp_path / "conv")
    assert converted.exit_code == 0, converted.stderr
    assert {"report.json", "report.html", "junit.xml"} <= {
        p.name for p in (tmp_path / "conv").iterdir()}

    every_artifact = cli("check", str(original), str(tmp_path / "conv"))
    against_recorded = cli("check", str(tmp_path / "conv"), str(perturbed),
                           out=tmp_path / "against")

    assert every_artifact.exit_code == 0, every_artifact.stderr
    assert "onnx " in every_artifact.stdout and "cpu:ort" in every_artifact.stdout
    assert against_recorded.exit_code == 1
    report = against_recorded.report
    assert report["check"]["inputs"].startswith("recorded by convert")
    assert report["artifacts"][0]["localization"]["node"]["op_type"] == "Conv"


def test_report_format_selects_the_files(cli, squeezenet, tmp_path) -> None:
    original, _ = squeezenet

    only_json = cli("convert", str(original), "--report-format", "json", out=tmp_path / "a")
    junit = cli("check", str(original), str(original), "--report-format", "junit",
                out=tmp_path / "b")

    assert only_json.exit_code == 0 and junit.exit_code == 0
    assert not (tmp_path / "a/report.html").exists() and not (tmp_path / "a/junit.xml").exists()
    assert (tmp_path / "b/junit.xml").is_file() and (tmp_path / "b/report.json").is_file()
    assert not (tmp_path / "b/report.html").exists()
    assert json.loads((tmp_path / "b/report.json").read_text())["command"] == "check"


def test_budget_file_and_precision_on_the_command_line(cli, tmp_path) -> None:
    fp32 = _overflowing_fp32(tmp_path / "a.onnx")
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("[fp16]\natol = 0.5\nrtol = 0.5\n")

    result = cli("check", str(fp32), str(fp32), "--precision", "fp16", "--budget-file",
                 str(budgets), out=tmp_path / "out")

    assert result.exit_code == 0, result.stderr
    expected = {"atol": 0.5, "rtol": 0.5, "max_accuracy_drop": 0.5}  # no cosine floors now
    assert result.report["artifacts"][0]["budget"] == expected
    assert result.report["check"]["budgets"]["fp16"] == expected


@pytest.mark.parametrize(
    ("make_args", "needle"),
    [
        (lambda tmp, m: [str(tmp / "missing.onnx"), m], "source not found"),
        (lambda tmp, m: [m, str(_xml_without_bin(tmp))], "no model.bin beside it"),
        (lambda tmp, m: [m, m, "--report-format", "pdf"], "unknown report format"),
        (lambda tmp, m: [m, m, "--budget-file", str(tmp / "no.toml")], "not found"),
        (lambda tmp, m: [m, m, "--data", str(tmp / "no.npz")], "--data file not found"),
        (lambda tmp, m: [m, m, "-i", "nope:1x3"], "does not have"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(cli, squeezenet, tmp_path, make_args,
                                          needle) -> None:
    result = cli("check", *make_args(tmp_path, str(squeezenet[0])), out=tmp_path / "out")

    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1
    assert not (tmp_path / "out").exists()


def _xml_without_bin(folder: Path) -> Path:
    path = folder / "model.xml"
    path.write_text("<net/>")
    return path


def test_check_takes_weights_for_a_python_source(cli, tmp_path) -> None:
    """A source side gets the source options convert takes: --weights loads trained
    weights into the factory's model before it is compared."""
    import torch

    torch.manual_seed(7)
    from tests.models.torch_models import small_cnn

    trained = small_cnn()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.mul_(3.0)
    torch.save(trained.state_dict(), tmp_path / "trained.pt")
    source = "tests/models/torch_models.py:small_cnn"
    converted = cli("convert", source, "-i", "x:1x3x16x16", "--weights",
                    str(tmp_path / "trained.pt"), out=tmp_path / "out")
    assert converted.exit_code == 0, converted.stderr

    with_weights = cli("check", source, str(tmp_path / "out/onnx/model.onnx"), "-i",
                       "x:1x3x16x16", "--weights", str(tmp_path / "trained.pt"))
    without = cli("check", source, str(tmp_path / "out/onnx/model.onnx"), "-i", "x:1x3x16x16")

    assert with_weights.exit_code == 0, with_weights.stdout + with_weights.stderr
    assert without.exit_code == 1, without.stdout + without.stderr
