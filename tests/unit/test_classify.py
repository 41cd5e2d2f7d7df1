"""convertkit/batch/classify.py: a job's report, error or exit into one failure class."""

from __future__ import annotations

import pytest

from convertkit.batch.classify import (
    FailureClass,
    JobOutcome,
    JobStatus,
    class_of_error,
    outcome_from_error,
    outcome_from_report,
)


def _report(error=None, artifacts=()):
    return {"status": "error" if error else "pass", "error": error, "artifacts": list(artifacts)}


@pytest.mark.parametrize("code, exit_code, expected", [
    ("unsupported-op", 3, FailureClass.UNSUPPORTED_OP),
    ("preflight-rejected", 3, FailureClass.UNSUPPORTED_OP),
    ("shape-rejected", 2, FailureClass.SHAPE),
    ("inputs-required", 2, FailureClass.SHAPE),
    ("source-not-found", 2, FailureClass.ENVIRONMENT),
    ("child-crashed", 3, FailureClass.CRASH),
    ("framework-exit", 3, FailureClass.CRASH),
    ("timeout", 3, FailureClass.TIMEOUT),
    ("missing-torch", 4, FailureClass.TOOLCHAIN_MISSING),
    ("some-new-usage-code", 2, FailureClass.ENVIRONMENT),
    ("some-new-code", 3, FailureClass.CONVERSION),
])
def test_error_codes_map_to_classes(code: str, exit_code: int, expected: FailureClass) -> None:
    assert class_of_error({"code": code, "exit_code": exit_code, "message": "m"}) == expected


@pytest.mark.parametrize("message, log", [
    ("the pytorch export crashed (SIGABRT): what():  std::bad_alloc", ""),
    ("the model rejects inputs x: DefaultCPUAllocator: can't allocate memory", ""),
    ("PyTorch is not installed", "ImportError: libtorch_cpu.so: failed to map segment"),
])
def test_memory_limits_are_told_apart_from_other_failures(message: str, log: str) -> None:
    codes = {"the pytorch": "child-crashed", "the model": "shape-rejected", "PyTorch": "x"}
    code = next(c for prefix, c in codes.items() if message.startswith(prefix))
    error = {"code": code, "exit_code": 4 if code == "x" else 3, "message": message}

    assert class_of_error(error, log) == FailureClass.OUT_OF_MEMORY


def test_a_passing_report_passes() -> None:
    outcome = outcome_from_report("a", _report(artifacts=[
        {"target": "onnx", "status": "pass"}, {"target": "npu:rknn", "status": "built"}]), 1.5)

    assert outcome.status == JobStatus.PASS
    assert outcome.failure is None and outcome.exit_code == 0
    assert outcome.artifacts == (("onnx", "pass"), ("npu:rknn", "built"))


def test_a_failed_check_is_a_numeric_mismatch_with_exit_1() -> None:
    outcome = outcome_from_report("a", _report(artifacts=[
        {"target": "onnx", "status": "pass"},
        {"target": "cpu:ort", "status": "fail",
         "metrics": {"y": {"within_budget": False, "max_abs": 0.5}}}]), 1.0)

    assert outcome.status == JobStatus.FAIL
    assert outcome.failure == FailureClass.NUMERIC_MISMATCH
    assert outcome.exit_code == 1
    assert "cpu:ort: outside the budget: y (max abs 5.00e-01)" in outcome.message


def test_the_most_serious_artifact_error_decides() -> None:
    outcome = outcome_from_report("a", _report(artifacts=[
        {"target": "cpu:ort", "status": "fail", "metrics": {}},
        {"target": "gpu", "status": "error",
         "error": {"code": "runtime-failed", "exit_code": 3, "message": "boom", "hint": "h"}},
        {"target": "npu:rknn", "status": "error",
         "error": {"code": "missing-rknn", "exit_code": 4, "message": "no rknn", "hint": "h"}},
    ]), 1.0)

    assert outcome.failure == FailureClass.TOOLCHAIN_MISSING
    assert outcome.exit_code == 4
    assert outcome.message == "npu:rknn: no rknn"


def test_an_error_without_report_keeps_its_message_and_gets_a_hint() -> None:
    outcome = outcome_from_error("a", {"code": "timeout", "exit_code": 3,
                                       "message": "did not finish\nsecond line"}, 8.0)

    assert outcome.failure == FailureClass.TIMEOUT
    assert outcome.message == "did not finish"
    assert outcome.hint == FailureClass.TIMEOUT.hint
    assert not outcome.has_report


def test_every_class_has_a_one_line_hint_and_an_exit_code() -> None:
    for failure in FailureClass:
        assert failure.hint and "\n" not in failure.hint
        assert failure.exit_code in (1, 3, 4, 5)


def test_outcomes_survive_a_json_round_trip() -> None:
    outcome = outcome_from_report("a", _report(error={
        "code": "unsupported-op", "exit_code": 3, "message": "aten::svd", "hint": "h"}), 2.0)

    assert JobOutcome.from_dict(outcome.to_dict()) == outcome


def test_a_status_has_no_truth_value() -> None:
    with pytest.raises(TypeError):
        bool(JobStatus.PASS)
