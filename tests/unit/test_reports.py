"""convertkit/reports: report.html (self-contained) and junit.xml (Ant/Jenkins layout)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from convertkit.checker.budgets import Budget
from convertkit.checker.localize import DivergingNode, Localization, Repro, TensorError
from convertkit.checker.metrics import compare_output
from convertkit.checker.source_map import SourceLocation
from convertkit.errors import ConversionError, UsageError
from convertkit.reports import REPORT_FILES, write_reports
from convertkit.reports.html import render_html
from convertkit.reports.junit import render_junit
from convertkit.reports.record import ArtifactResult, KeptNode, MixedPrecision, Report, error_record
from convertkit.reports.terminal import format_findings
from convertkit.spec import Status

FP32 = Budget(1e-4, 1e-3)
EXPECTED = np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 10)
GOOD = compare_output("logits", EXPECTED + 1e-6, EXPECTED, FP32)
BAD = compare_output("logits", EXPECTED * 1.5, EXPECTED, FP32)
CURVE = (TensorError(0, "mm1", "MatMul", "h1", 0.0, 0.0, 0.0, True),
         TensorError(1, "mm2 <x>", "MatMul", "h2", 0.5, 0.4, 900.0, False),
         TensorError(2, "sm", "Softmax", "logits", None, None, None, False))
LOCALIZATION = Localization(
    "a.onnx", "b.onnx",
    DivergingNode("mm2 <x>", "MatMul", 1, CURVE[1], CURVE[0], ("h1", "W2"),
                  (("W2", 0.25),)),
    node_count=3, curve=CURVE, compared=3,
    repro=Repro("out/repro", "convertkit check out/repro/reference.onnx "
                "out/repro/candidate.onnx --data out/repro/inputs.npz", ("h1",), ("h2",), True))


def _report() -> Report:
    return Report(
        {"text": "model.onnx"},
        {"inputs": "seeded random values (seed 0)", "rule": "|a - r| <= atol + rtol |r|",
         "budgets": {"fp32": {"atol": 1e-4, "rtol": 1e-3}}},
        artifacts=(
            ArtifactResult("onnx", Status.PASS, "onnx/model.onnx", "fp32", FP32, (GOOD,),
                           duration_s=0.25),
            ArtifactResult("cpu:ort", Status.FAIL, "cpu-ort/model.onnx", "fp32", FP32, (BAD,),
                           localization=LOCALIZATION, duration_s=0.5),
            ArtifactResult("npu:rknn", Status.BUILT, "npu-rknn/model.rknn", "int8",
                           notes=("not run: no runtime for it here",)),
            ArtifactResult("gpu:trt", Status.ERROR,
                           error=error_record(ConversionError("no engine", hint="install"))),
        ),
        version="0.1.0", command="check",
    )


def test_html_is_one_self_contained_page_with_the_table_and_charts():
    page = render_html(_report().to_dict())

    assert page.startswith("<!DOCTYPE html>")
    assert '<table id="summary">' in page
    for text in ("cpu:ort", "npu:rknn", "no engine", "first diverging node", "W2",
                 "convertkit check out/repro/reference.onnx"):
        assert text in page
    assert page.count("<svg") == 3  # two histograms and the error-by-depth curve
    assert "mm2 &lt;x&gt;" in page and "mm2 <x>" not in page  # escaped
    for remote in ("<script", "http://cdn", "https://", "<link", "@import"):
        assert remote not in page


def test_html_of_a_report_whose_source_failed():
    report = Report({"text": "m.onnx"}, error=error_record(UsageError("bad", hint="fix")))

    page = render_html(report.to_dict())

    assert "bad" in page and "fix" in page and 'id="summary"' not in page


def test_junit_has_one_case_per_artifact_with_the_schema_attributes():
    root = ET.fromstring(render_junit(_report().to_dict()))

    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for element in (root, suite):
        assert {"name", "tests", "failures", "errors", "time"} <= set(element.attrib)
    assert {"timestamp", "hostname", "skipped"} <= set(suite.attrib)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("4", "1", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name").split(" ")[0] for c in cases] == ["onnx", "cpu:ort", "npu:rknn",
                                                          "gpu:trt"]
    for case in cases:
        assert {"name", "classname", "time"} <= set(case.attrib)
        float(case.get("time"))
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    failure = cases[1].find("failure")
    assert failure is not None and {"message", "type"} <= set(failure.attrib)
    assert "max abs" in failure.get("message")
    assert "first diverging node" in failure.text and "repro:" in failure.text
    assert cases[2].find("skipped") is not None
    assert cases[3].find("error").get("message") == "no engine"
    assert float(suite.get("time")) == pytest.approx(0.75)


def test_junit_of_a_source_failure_is_one_error():
    report = Report({"text": "m.onnx"}, error=error_record(ConversionError("export failed")))

    suite = ET.fromstring(render_junit(report.to_dict())).find("testsuite")

    assert (suite.get("tests"), suite.get("errors")) == ("1", "1")
    assert suite.find("testcase/error").get("message") == "export failed"


def test_write_reports_writes_the_chosen_files(tmp_path):
    written = write_reports(_report(), tmp_path, ("json", "junit"))

    assert sorted(p.name for p in written) == sorted([REPORT_FILES["json"], "junit.xml"])
    assert not (tmp_path / "report.html").exists()
    ET.parse(tmp_path / "junit.xml")


def test_findings_name_the_diverging_node_and_the_repro():
    lines = format_findings(_report())

    assert lines[0].startswith("cpu:ort: first diverging node: MatMul 'mm2 <x>'")
    assert lines[1].startswith("  repro: convertkit check")
    assert len(lines) == 2


MIXED = MixedPrecision(
    (KeptNode("node_conv2d_1", "Conv", 31.5, 294912,
              SourceLocation("body.2", file="tests/models/digits.py", line=33)),
     KeptNode("node_relu <r>", "Relu", None, 0)),
    quantisable=13, mac_share=0.65, override_file="cpu/ort/mixed_precision.json", builds=2,
    pure_int8="top-1 accuracy dropped 78.40 points")


def _mixed_report() -> Report:
    return Report({"text": "model.onnx"}, artifacts=(
        ArtifactResult("cpu:ort", Status.PASS, "cpu/ort/model.onnx", "int8",
                       mixed_precision=MIXED),
        ArtifactResult("cpu:openvino", Status.PASS, "cpu/openvino/model.xml", "int8")),
        version="0.1.0")


def test_html_lists_the_nodes_an_int8_artifact_keeps_in_fp32():
    page = render_html(_mixed_report().to_dict())

    assert page.count("<h3>Mixed precision</h3>") == 1  # the pure int8 artifact has none
    assert "int8 with 2 of 13 nodes in fp32 (65% of MACs)" in page
    assert "found in 2 build(s)" in page and "cpu/ort/mixed_precision.json" in page
    assert "top-1 accuracy dropped 78.40 points" in page
    assert "<code>node_conv2d_1</code></td><td>Conv</td><td>31.5</td><td>294,912</td>" in page
    assert "layer `body.2` (tests/models/digits.py:33)" in page
    assert "node_relu &lt;r&gt;" in page and "node_relu <r>" not in page  # escaped
    assert "<td>-</td><td>0</td>" in page  # kept for the node it feeds: no SQNR of its own


def test_junit_says_which_nodes_an_int8_artifact_keeps_in_fp32():
    cases = ET.fromstring(render_junit(_mixed_report().to_dict())).findall("testsuite/testcase")

    out = cases[0].find("system-out").text
    assert ("mixed precision: int8 with 2 of 13 nodes in fp32 (65% of MACs); kept in fp32: "
            "node_conv2d_1 (Conv), node_relu <r> (Relu); override in "
            "cpu/ort/mixed_precision.json") in out
    assert cases[1].find("system-out") is None  # pure int8: nothing to say
