"""convertkit/checker/metrics.py: mean abs, SNR, top-k agreement and the error histogram."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convertkit.checker.budgets import Budget
from convertkit.checker.metrics import (
    HISTOGRAM_UPPER_EDGES,
    compare_output,
    error_histogram,
    looks_like_class_scores,
)

FP32 = Budget(atol=1e-4, rtol=1e-3)


def test_mean_abs_and_snr_of_a_known_error():
    expected = np.array([3.0, 4.0, 0.0, 0.0])
    actual = expected + np.array([0.3, -0.4, 0.0, 0.0])

    metrics = compare_output("y", actual, expected, FP32)

    assert metrics.mean_abs == pytest.approx(0.7 / 4)
    # signal 25, noise 0.25: 10 log10(100) = 20 dB
    assert metrics.snr_db == pytest.approx(20.0)


def test_identical_outputs_have_no_snr_value():
    expected = np.ones(4)

    metrics = compare_output("y", expected.copy(), expected, FP32)

    assert metrics.snr_db is None
    assert metrics.mean_abs == 0.0


def test_topk_agreement_on_class_scores():
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((4, 10)).astype(np.float32)
    actual = expected.copy()
    # Row 0: swap its top-1 class with its 7th: top-1 changes, top-5 loses one class.
    order = np.argsort(-expected[0])
    actual[0, order[0]], actual[0, order[6]] = expected[0, order[6]], expected[0, order[0]]

    metrics = compare_output("logits", actual, expected, FP32)

    assert metrics.top1_agreement == pytest.approx(3 / 4)
    assert metrics.top5_agreement == pytest.approx((4 / 5 + 3) / 4)


def test_topk_is_computed_for_trailing_unit_axes_and_skipped_otherwise():
    scores = np.random.default_rng(1).random((2, 1000, 1, 1)).astype(np.float32)
    image = np.zeros((1, 3, 8, 8), dtype=np.float32)

    assert looks_like_class_scores(scores)
    assert not looks_like_class_scores(image)
    assert not looks_like_class_scores(np.zeros((2, 5), dtype=np.int64))
    assert compare_output("s", scores, scores, FP32).top1_agreement == 1.0
    assert compare_output("i", image, image, FP32).top1_agreement is None


def test_three_classes_have_top1_but_no_top5():
    scores = np.array([[0.1, 0.7, 0.2]], dtype=np.float32)

    metrics = compare_output("p", scores, scores, FP32)

    assert metrics.top1_agreement == 1.0
    assert metrics.top5_agreement is None


def test_error_histogram_bins_by_decade():
    diff = np.array([0.0, 0.0, 5e-11, 3e-4, 0.02, 500.0, np.inf, np.nan])

    counts = error_histogram(diff)

    assert len(counts) == len(HISTOGRAM_UPPER_EDGES)
    assert sum(counts) == diff.size
    assert counts[0] == 2  # exactly 0
    assert counts[1] == 1  # (0, 1e-10]
    assert counts[HISTOGRAM_UPPER_EDGES.index(1e-3)] == 1
    assert counts[HISTOGRAM_UPPER_EDGES.index(0.1)] == 1
    assert counts[-1] == 3  # above 100, Inf and NaN


def test_cosine_is_unknown_when_nothing_is_finite_on_both_sides():
    expected = np.array([1.0, 2.0], dtype=np.float32)
    actual = np.array([np.inf, np.inf], dtype=np.float32)

    metrics = compare_output("y", actual, expected, FP32)

    assert not metrics.within_budget
    assert metrics.cosine is None


def test_to_dict_holds_the_new_fields_as_plain_json():
    expected = np.random.default_rng(2).random((2, 8)).astype(np.float32)

    data = compare_output("y", expected + 1e-3, expected, FP32).to_dict()

    json.dumps(data, allow_nan=False)
    assert {"mean_abs", "snr_db", "top1_agreement", "top5_agreement",
            "error_histogram"} <= set(data)
    assert data["error_histogram"]["upper_edges"][-1] is None  # infinity
    assert sum(data["error_histogram"]["counts"]) == 16
