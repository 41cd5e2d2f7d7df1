"""checker/decode.py: the verdict on a decode, and how the reports show it."""

from __future__ import annotations

import numpy as np

from convertkit.checker.budgets import budget_for
from convertkit.checker.decode import DecodeReference, compare_decode
from convertkit.reports.html import render_html
from convertkit.reports.junit import render_junit
from convertkit.reports.record import ArtifactResult, Report
from convertkit.reports.terminal import format_findings
from convertkit.spec import Precision, Status


def _reference(steps: int = 6, vocab: int = 50) -> DecodeReference:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((steps, vocab)).astype(np.float32) * 4
    return DecodeReference(np.arange(5, dtype=np.int64)[None], logits.argmax(-1), logits,
                           "transformers generate (greedy)")


def test_identical_logits_pass_with_every_token_identical() -> None:
    reference = _reference()

    check = compare_decode(reference.logits.copy(), reference, budget_for(Precision.FP32),
                           Precision.FP32)

    assert check.within_budget and check.identical == 6 and check.first_difference is None
    assert check.tokens == check.reference_tokens


def test_a_near_tie_flipped_by_rounding_is_a_tie_not_a_difference() -> None:
    reference = _reference()
    logits = reference.logits.copy()
    step, want = 2, int(reference.tokens[2])
    runner_up = int(np.argsort(logits[step])[-2])
    logits[step, runner_up] = logits[step, want] = logits[step, want]  # exact tie in the ref
    reference = DecodeReference(reference.prompt, reference.tokens, logits.copy(), "ref")
    logits[step, runner_up] += 1e-6  # the artifact rounds the other way

    check = compare_decode(logits, reference, budget_for(Precision.FP32), Precision.FP32)

    assert check.identical == 5 and check.ties == 1 and check.first_difference == step
    assert check.within_budget


def test_a_different_token_beyond_the_tolerance_fails_fp32() -> None:
    reference = _reference()
    logits = reference.logits.copy()
    logits[3, int(np.argsort(logits[3])[-2])] += 5.0

    check = compare_decode(logits, reference, budget_for(Precision.FP32), Precision.FP32)

    assert not check.within_budget and check.identical == 5 and check.ties == 0
    assert check.first_difference == 3 and check.note


def test_the_reports_show_the_decode() -> None:
    reference = _reference()
    logits = reference.logits.copy()
    logits[1, int(np.argsort(logits[1])[-2])] += 5.0
    check = compare_decode(logits, reference, budget_for(Precision.FP32), Precision.FP32)
    artifact = ArtifactResult("cpu:ort", Status.FAIL, "cpu-ort/model.onnx", "fp32",
                              decode=check)
    report = Report({"text": "llama", "framework": "pytorch"}, artifacts=(artifact,))

    lines = format_findings(report)
    page = render_html(report.to_dict())
    junit = render_junit(report.to_dict())

    assert any(line.startswith("cpu:ort: decode: 5/6 tokens identical") for line in lines)
    assert "Decode, token by token" in page and page.count('class="tok diff"') == 1
    assert "decode: 5/6 tokens identical" in junit
