"""convertkit/reports/record.py and terminal.py: the report's status, exit code, JSON and
table."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from convertkit.checker.budgets import Budget
from convertkit.checker.metrics import OutputMetrics
from convertkit.errors import (
    ConversionError,
    InternalError,
    MissingDependencyError,
    UsageError,
)
from convertkit.reports.record import (
    SCHEMA_VERSION,
    ArtifactResult,
    Report,
    error_record,
)
from convertkit.reports.terminal import format_findings, format_table
from convertkit.spec import Status

SOURCE = {"text": "model.onnx", "path": "model.onnx", "module": None, "attribute": None}
GOOD = OutputMetrics("logits", True, 1e-6, 2e-6, 0.999999, (0, 3), 0.0)
BAD = OutputMetrics("logits", False, 0.5, 0.2, 0.91, (0, 7), 0.25)


def _artifact(target: str, status: Status, error=None, outputs=()) -> ArtifactResult:
    return ArtifactResult(target, status, path=f"{target}/model.onnx", precision="fp32",
                          budget=Budget(1e-4, 1e-3), outputs=outputs, error=error)


USAGE = error_record(UsageError("bad -i"))
MISSING = error_record(MissingDependencyError("no openvino"))
CONVERSION = error_record(ConversionError("unsupported op"))


INTERNAL = error_record(InternalError.from_exception(KeyError("k"), "crash.log"))


def test_error_record_carries_the_exit_code():
    assert USAGE["exit_code"] == 2
    assert MISSING["exit_code"] == 4
    assert CONVERSION == {"type": "ConversionError", "message": "unsupported op", "hint": "",
                          "code": "conversion-failed", "exit_code": 3}


@pytest.mark.parametrize(
    ("artifacts", "report_error", "exit_code", "status"),
    [
        ([_artifact("onnx", Status.PASS), _artifact("cpu", Status.PASS)], None, 0, "pass"),
        ([_artifact("onnx", Status.PASS), _artifact("npu:rknn", Status.BUILT)], None, 0, "pass"),
        ([_artifact("onnx", Status.PREPARED)], None, 0, "pass"),
        ([_artifact("onnx", Status.PASS), _artifact("cpu", Status.FAIL)], None, 1, "fail"),
        ([_artifact("cpu", Status.FAIL), _artifact("gpu", Status.ERROR, CONVERSION)], None, 3,
         "error"),
        ([_artifact("gpu", Status.ERROR, CONVERSION), _artifact("ov", Status.ERROR, MISSING)],
         None, 4, "error"),
        ([_artifact("gpu", Status.ERROR, MISSING), _artifact("cpu", Status.FAIL)], USAGE, 2,
         "error"),
        ([], CONVERSION, 3, "error"),
        ([], USAGE, 2, "error"),
        ([_artifact("gpu", Status.ERROR, MISSING), _artifact("ov", Status.ERROR, INTERNAL)],
         None, 5, "error"),
    ],
)
def test_exit_code_precedence_and_status(artifacts, report_error, exit_code, status):
    report = Report(SOURCE, artifacts=tuple(artifacts), error=report_error)

    assert report.exit_code == exit_code
    assert report.status == status


def test_format_table_lists_each_target_and_output():
    report = Report(SOURCE, artifacts=(
        _artifact("onnx", Status.PASS, outputs=(GOOD,)),
        _artifact("cpu:ort", Status.FAIL, outputs=(BAD,)),
        _artifact("npu:rknn@rk3588", Status.ERROR, error=CONVERSION),
    ))

    table = format_table(report)

    lines = table.splitlines()
    assert lines[0].split() == ["target", "status", "precision", "output", "max", "abs", "max",
                                "rel", "cosine"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split()[:4] == ["onnx", "pass", "fp32", "logits"]
    assert "1.00e-06" in lines[2]
    assert "0.999999" in lines[2]
    assert lines[3].startswith("cpu:ort")
    assert "<-- over budget" in lines[3]
    assert "5.00e-01" in lines[3]
    assert lines[4].startswith("npu:rknn@rk3588")
    assert "unsupported op" in lines[4]
    assert len(lines) == 5


def test_report_json_round_trip_via_write(tmp_path):
    report = Report(
        SOURCE, check={"seed": 0, "inputs": [{"name": "x", "dims": [1, 3], "dtype": "float32"}]},
        artifacts=(_artifact("onnx", Status.PASS, outputs=(GOOD,)),
                   _artifact("cpu", Status.FAIL, outputs=(BAD,))),
        version="0.1.0",
    )
    path = tmp_path / "report.json"

    report.write(path)
    data = json.loads(path.read_text())

    assert data == report.to_dict()
    assert data["schema"] == SCHEMA_VERSION
    assert data["status"] == "fail"
    assert data["exit_code"] == 1
    assert data["convertkit_version"] == "0.1.0"
    assert [a["target"] for a in data["artifacts"]] == ["onnx", "cpu"]
    cpu = data["artifacts"][1]
    assert cpu["status"] == "fail"
    assert cpu["budget"] == {"atol": 1e-4, "rtol": 1e-3}
    assert cpu["metrics"]["logits"]["worst_index"] == [0, 7]
    assert cpu["metrics"]["logits"]["mismatch_fraction"] == 0.25
    assert path.read_text().endswith("\n")


def test_unchecked_npu_artifacts_say_so_in_the_table_and_findings():
    report = Report(SOURCE, artifacts=(
        _artifact("onnx", Status.PASS, outputs=(GOOD,)),
        _artifact("npu:ascend@310p3", Status.PREPARED),
        _artifact("npu:intel", Status.BUILT),
        replace(_artifact("npu:rknn@rk3588", Status.FAIL, outputs=(BAD,)),
                checked_in="the rknn-toolkit2 2.5.0 simulator",
                layer_analysis=({"layer": "conv1", "op": "Conv", "cosine": 0.25},)),
    ))

    table = format_table(report).splitlines()
    findings = format_findings(report)

    assert "not built: its toolchain is not here" in table[3]
    assert "not run: nothing here runs it" in table[4]
    assert "npu:rknn@rk3588: checked in the rknn-toolkit2 2.5.0 simulator" in findings
    assert "  conv1 (Conv)  cosine 0.25" in findings
    assert report.exit_code == 1
    data = report.to_dict()["artifacts"][3]
    assert data["checked_in"] == "the rknn-toolkit2 2.5.0 simulator"
    assert data["layer_analysis"][0]["layer"] == "conv1"


def test_prepared_and_built_artifacts_do_not_fail_the_run():
    report = Report(SOURCE, artifacts=(_artifact("onnx", Status.PASS, outputs=(GOOD,)),
                                       _artifact("npu:ascend", Status.PREPARED),
                                       _artifact("npu:intel", Status.BUILT)))

    assert report.exit_code == 0
    assert report.status == "pass"
