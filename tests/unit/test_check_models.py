"""convertkit/check_models.py: `check A B` as a library call, on tiny ONNX models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from convertkit.check_models import align_outputs, check_models, detect_precision, identify
from convertkit.checker.samples import GENERATED_SAMPLES, load_samples
from convertkit.errors import UsageError
from convertkit.spec import Precision, Status

W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def _model(path: Path, w: np.ndarray = W, output: str = "y", dtype=TensorProto.FLOAT,
           input_name: str = "x") -> Path:
    nodes = [helper.make_node("MatMul", [input_name, "W"], ["h"], name="mm"),
             helper.make_node("Tanh", ["h"], [output], name="tanh")]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info(input_name, dtype, ["batch", 4])],
        [helper.make_tensor_value_info(output, dtype, ["batch", 3])],
        [numpy_helper.from_array(w.astype(helper.tensor_dtype_to_np_dtype(dtype)), "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_identify_tells_the_kinds_apart(tmp_path):
    onnx_path = _model(tmp_path / "m.onnx")
    (tmp_path / "ir.xml").write_text("<net/>")
    (tmp_path / "ir.bin").write_bytes(b"")
    (tmp_path / "lonely.xml").write_text("<net/>")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.json").write_text("{}")

    assert identify(onnx_path).kind == "onnx"
    assert identify(tmp_path / "ir.xml").kind == "openvino"
    assert identify(folder).kind == "folder"
    with pytest.raises(UsageError, match=r"no lonely\.bin"):
        identify(tmp_path / "lonely.xml")
    with pytest.raises(UsageError, match="source not found"):
        identify(tmp_path / "missing.onnx")


def test_precision_is_read_from_the_model(tmp_path):
    qdq = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s"], ["y"])], "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s")])
    onnx.save(helper.make_model(qdq, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "q.onnx"))

    assert detect_precision(_model(tmp_path / "a.onnx")) == Precision.FP32
    assert detect_precision(_model(tmp_path / "h.onnx", dtype=TensorProto.FLOAT16)) == \
        Precision.FP16
    assert detect_precision(tmp_path / "q.onnx") == Precision.INT8


def test_equal_models_pass_and_nothing_is_written_without_out(tmp_path):
    a = _model(tmp_path / "a.onnx")
    b = _model(tmp_path / "b.onnx")

    report = check_models(a, b)

    assert report.exit_code == 0 and report.status == "pass"
    assert report.command == "check"
    assert [x.target for x in report.artifacts] == ["onnx"]
    assert report.artifacts[0].outputs[0].max_abs == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]


def test_a_failing_candidate_writes_every_report_and_a_repro(tmp_path):
    a = _model(tmp_path / "a.onnx")
    b = _model(tmp_path / "b.onnx", W * 1.5)
    out = tmp_path / "out"

    report = check_models(a, b, out)

    assert report.exit_code == 1
    artifact = report.artifacts[0]
    assert artifact.status == Status.FAIL
    assert artifact.localization is not None and artifact.localization.node.name == "mm"
    assert artifact.duration_s is not None
    assert sorted(p.name for p in out.iterdir()) == ["check", "junit.xml", "logs",
                                                     "report.html", "report.json", "repro"]
    assert (out / "logs" / "build.log").is_file()  # what the runs printed
    data = json.loads((out / "report.json").read_text())
    assert data["command"] == "check" and data["exit_code"] == 1
    assert data["artifacts"][0]["localization"]["node"]["name"] == "mm"
    assert data["check"]["budgets"]["fp32"] == {"atol": 1e-4, "rtol": 1e-3,
                                                "max_accuracy_drop": 0.0}
    assert data["artifacts"][0]["localization"]["repro"]["reproduced"] is True
    assert (out / "repro" / "inputs.npz").is_file()
    samples = load_samples(out / "check" / "inputs.npz")
    assert [sorted(s) for s in samples] == [["x"]] * GENERATED_SAMPLES


def test_the_repro_command_fails_the_same_way(tmp_path):
    out = tmp_path / "out"
    check_models(_model(tmp_path / "a.onnx"), _model(tmp_path / "b.onnx", W * 1.5), out)
    repro = out / "repro"

    report = check_models(repro / "reference.onnx", repro / "candidate.onnx",
                   data=repro / "inputs.npz", atol=1e-4, rtol=1e-3)

    assert report.exit_code == 1
    assert report.artifacts[0].localization.node.name == "mm"


def test_budgets_from_the_precision_the_command_line_and_a_file(tmp_path):
    a = _model(tmp_path / "a.onnx")
    b = _model(tmp_path / "b.onnx", W * 1.002)
    loose = tmp_path / "budgets.toml"
    loose.write_text("[fp32]\natol = 0.01\nrtol = 0.01\n")

    strict = check_models(a, b)
    as_fp16 = check_models(a, b, precision="fp16")
    from_file = check_models(a, b, budget_file=loose)
    file_then_flag = check_models(a, b, budget_file=loose, atol=0.0, rtol=0.0)

    assert strict.exit_code == 1
    assert as_fp16.exit_code == 0 and as_fp16.artifacts[0].precision == "fp16"
    assert from_file.exit_code == 0 and from_file.check["budget_file"] == str(loose)
    assert file_then_flag.exit_code == 1


def test_an_fp16_candidate_is_judged_by_the_fp16_budget(tmp_path):
    a = _model(tmp_path / "a.onnx")
    b = _model(tmp_path / "b.onnx", dtype=TensorProto.FLOAT16)

    report = check_models(a, b)

    assert report.artifacts[0].precision == "fp16"
    assert report.artifacts[0].budget.atol == 1e-2
    assert report.exit_code == 0


def test_outputs_with_other_names_are_matched_by_position(tmp_path):
    report = check_models(_model(tmp_path / "a.onnx"), _model(tmp_path / "b.onnx", output="out"))

    assert report.exit_code == 0
    assert any("matched by position (y = out)" in n for n in report.artifacts[0].notes)
    assert align_outputs({"y": 1}, {"y": 2, "z": 3}) == ({"y": 2, "z": 3}, "")


def test_a_candidate_that_cannot_run_is_an_error_with_exit_3(tmp_path):
    a = _model(tmp_path / "a.onnx")
    b = _model(tmp_path / "b.onnx", input_name="other")

    report = check_models(a, b)

    assert report.artifacts[0].status == Status.ERROR
    assert report.exit_code == 3


def test_user_data_feeds_both_models(tmp_path):
    values = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    np.savez(tmp_path / "data.npz", x=values)
    out = tmp_path / "out"

    report = check_models(_model(tmp_path / "a.onnx"), _model(tmp_path / "b.onnx"), out,
                   data=tmp_path / "data.npz")

    assert report.check["inputs"].startswith("--data")
    np.testing.assert_array_equal(load_samples(out / "check/inputs.npz")[0]["x"], values)


def test_usage_errors_write_nothing(tmp_path):
    a = _model(tmp_path / "a.onnx")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    with pytest.raises(UsageError, match="already exists"):
        check_models(a, a, out)
    with pytest.raises(UsageError, match="unknown precision"):
        check_models(a, a, precision="fp8")
    with pytest.raises(UsageError, match="unknown report format"):
        check_models(a, a, tmp_path / "new", report_formats="pdf")
    with pytest.raises(UsageError, match="--data file not found"):
        check_models(a, a, data=tmp_path / "none.npz")

    assert (out / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "new").exists()
