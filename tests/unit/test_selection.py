from __future__ import annotations

from convertkit.platforms.cpu import OrtCpuPlatform
from convertkit.platforms.onnx import OnnxPlatform
from convertkit.selection import (
    CandidateRecord,
    candidates,
    fastest_passing,
    median_latency_ms,
)
from convertkit.spec import Family, Precision, Status


def _record(latency: float | None, status: Status = Status.PASS) -> CandidateRecord:
    return CandidateRecord("cpu:x", "fp32", status, "p", latency, 0.0, 1.0)


def test_fastest_passing_ignores_failed_and_untimed_candidates() -> None:
    records = [_record(1.0, Status.FAIL), _record(5.0), _record(None, Status.ERROR),
               _record(3.0)]

    assert fastest_passing(records) == 3


def test_fastest_passing_is_none_when_nothing_passed() -> None:
    assert fastest_passing([_record(1.0, Status.FAIL), _record(None, Status.ERROR)]) is None


def test_candidates_are_the_family_platforms_at_each_precision() -> None:
    found = candidates([OnnxPlatform, OrtCpuPlatform], Family.CPU, None)

    assert [(c.platform, c.precision) for c in found] == [
        (OrtCpuPlatform, Precision.FP32), (OrtCpuPlatform, Precision.INT8)]
    assert found[1].folder == "cpu/ort-int8"


def test_precision_limits_the_candidates() -> None:
    found = candidates([OrtCpuPlatform], Family.CPU, Precision.INT8)

    assert [c.precision for c in found] == [Precision.INT8]


def test_median_latency_runs_warmup_then_timed_runs() -> None:
    calls = []

    latency = median_latency_ms(lambda: calls.append(1))

    assert latency >= 0.0
    assert len(calls) == 3 + 20
