"""convertkit/batch/summary.py: counts, classes, the batch exit code and the files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import pytest

from convertkit.batch.classify import FailureClass, JobOutcome, JobStatus
from convertkit.batch.summary import BatchSummary, format_summary, write_summary


def _outcome(name: str, failure: FailureClass | None = None, **extra) -> JobOutcome:
    status = (JobStatus.PASS if failure is None else
              JobStatus.FAIL if failure == FailureClass.NUMERIC_MISMATCH else JobStatus.ERROR)
    return JobOutcome(name, status, failure, message=f"{name} went wrong" if failure else "",
                      hint=failure.hint if failure else "", duration_s=1.0, **extra)


def _summary(*outcomes: JobOutcome) -> BatchSummary:
    return BatchSummary("m.yaml", "out", "local", outcomes,
                        tuple(f"{o.name}.onnx" for o in outcomes), 3.0, "0.1.0")


@pytest.mark.parametrize("failures, expected", [
    ((), 0),
    ((FailureClass.NUMERIC_MISMATCH,), 1),
    ((FailureClass.NUMERIC_MISMATCH, FailureClass.CRASH), 3),
    ((FailureClass.TIMEOUT, FailureClass.ENVIRONMENT), 3),
    ((FailureClass.CRASH, FailureClass.TOOLCHAIN_MISSING, FailureClass.NUMERIC_MISMATCH), 4),
    ((FailureClass.TOOLCHAIN_MISSING, FailureClass.INTERNAL, FailureClass.CRASH), 5),
])
def test_exit_code_is_the_first_of_5_4_3_1(failures, expected) -> None:
    summary = _summary(_outcome("good"), *(_outcome(f"j{i}", f) for i, f in
                                           enumerate(failures)))

    assert summary.exit_code == expected


def test_counts_and_classes() -> None:
    summary = _summary(_outcome("a"), _outcome("b", cached=True),
                       _outcome("c", FailureClass.CRASH), _outcome("d", FailureClass.CRASH),
                       _outcome("e", FailureClass.NUMERIC_MISMATCH))

    assert summary.counts == {"jobs": 5, "pass": 2, "fail": 1, "error": 2, "cached": 1}
    assert summary.classes == {"numeric-mismatch": 1, "crash": 2}


def test_files_for_people_and_ci(tmp_path: Path) -> None:
    summary = _summary(_outcome("a"), _outcome("c", FailureClass.TIMEOUT))

    write_summary(summary, tmp_path)

    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["exit_code"] == 3 and data["status"] == "error"
    assert data["classes"] == {"timeout": {"count": 1, "hint": FailureClass.TIMEOUT.hint}}
    assert [j["name"] for j in data["jobs"]] == ["a", "c"]
    html = (tmp_path / "summary.html").read_text()
    assert "c went wrong" in html and escape(FailureClass.TIMEOUT.hint) in html
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["a: a.onnx", "c: c.onnx"]
    assert root.get("errors") == "1"
    error = suites[1].find("testcase/error")
    assert error is not None and error.get("message") == "c went wrong"


def test_the_table_names_each_class_with_its_hint() -> None:
    text = format_summary(_summary(_outcome("a"), _outcome("c", FailureClass.CRASH)))

    assert "c    error   crash" in text
    assert f"crash (1)  {FailureClass.CRASH.hint}" in text
    assert text.splitlines()[-1].endswith("exit 3")
