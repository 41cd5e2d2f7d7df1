"""convertkit/checker/metrics.py: the elementwise pass rule and the numbers reported."""

from __future__ import annotations

import numpy as np
import pytest

from convertkit.checker.budgets import Budget
from convertkit.checker.metrics import compare_output, compare_outputs

FP32 = Budget(atol=1e-4, rtol=1e-3)


def test_identical_arrays_pass_with_zero_error():
    expected = np.arange(12, dtype=np.float32).reshape(3, 4)

    metrics = compare_output("y", expected.copy(), expected, FP32)

    assert metrics.within_budget
    assert metrics.max_abs == 0.0
    assert metrics.max_rel == 0.0
    assert metrics.cosine == pytest.approx(1.0)
    assert metrics.mismatch_fraction == 0.0
    assert metrics.note == ""


def test_difference_within_budget_passes():
    expected = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    actual = expected + np.array([5e-5, 0.0, -5e-5], dtype=np.float32)

    metrics = compare_output("y", actual, expected, FP32)

    assert metrics.within_budget
    assert metrics.max_abs == pytest.approx(5e-5, rel=1e-2)


def test_difference_outside_budget_fails_and_counts_the_mismatches():
    expected = np.zeros(4, dtype=np.float32)
    actual = np.array([0.0, 0.5, 0.0, 0.0], dtype=np.float32)

    metrics = compare_output("y", actual, expected, FP32)

    assert not metrics.within_budget
    assert metrics.max_abs == pytest.approx(0.5)
    assert metrics.mismatch_fraction == pytest.approx(0.25)
    assert metrics.worst_index == (1,)


def test_large_values_pass_on_relative_agreement():
    expected = np.array([3e7, -3e7, 1.0], dtype=np.float32)
    actual = expected + np.array([14.0, -14.0, 0.0], dtype=np.float32)

    metrics = compare_output("logits", actual, expected, FP32)

    assert metrics.max_abs == pytest.approx(14.0)
    assert metrics.max_rel == pytest.approx(14.0 / 3e7, rel=1e-3)
    assert metrics.within_budget


def test_absolute_term_is_not_enough_on_its_own_for_small_values():
    # 14 off on a value of 100: relative error 0.14 > rtol 1e-3.
    expected = np.array([100.0], dtype=np.float32)

    metrics = compare_output("y", expected + 14, expected, FP32)

    assert not metrics.within_budget


def test_nan_in_the_artifact_only_fails():
    expected = np.array([1.0, 2.0], dtype=np.float32)
    actual = np.array([1.0, np.nan], dtype=np.float32)

    metrics = compare_output("y", actual, expected, FP32)

    assert not metrics.within_budget
    assert metrics.worst_index == (1,)
    assert metrics.mismatch_fraction == pytest.approx(0.5)
    assert "NaN" in metrics.note


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_in_the_reference_only_fails():
    expected = np.array([1.0, np.nan], dtype=np.float32)
    actual = np.array([1.0, 2.0], dtype=np.float32)

    metrics = compare_output("y", actual, expected, FP32)

    assert not metrics.within_budget


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_inf_in_the_reference_only_fails():
    expected = np.array([1.0, np.inf], dtype=np.float32)
    actual = np.array([1.0, 2.0], dtype=np.float32)

    metrics = compare_output("y", actual, expected, FP32)

    assert not metrics.within_budget


def test_nan_on_both_sides_agrees_elementwise_but_a_nan_reference_proves_nothing():
    expected = np.array([1.0, np.nan, 3.0], dtype=np.float32)

    metrics = compare_output("y", expected.copy(), expected, FP32)

    assert metrics.max_abs == 0.0
    assert metrics.mismatch_fraction == 0.0
    assert not metrics.within_budget
    assert "the reference holds 1 NaN or Inf value(s)" in metrics.note


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # inf - inf, masked
def test_same_signed_inf_agrees_elementwise_but_an_inf_reference_proves_nothing():
    expected = np.array([np.inf, -np.inf, 1.0], dtype=np.float32)

    metrics = compare_output("y", expected.copy(), expected, FP32)

    assert metrics.mismatch_fraction == 0.0
    assert not metrics.within_budget
    assert "2 NaN or Inf" in metrics.note


def test_inf_in_the_artifact_only_fails():
    expected = np.array([1.0, 2.0], dtype=np.float32)
    actual = np.array([np.inf, 2.0], dtype=np.float32)

    metrics = compare_output("y", actual, expected, FP32)

    assert not metrics.within_budget
    assert metrics.worst_index == (0,)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_opposite_signed_inf_fails():
    expected = np.array([np.inf, 1.0], dtype=np.float32)
    actual = np.array([-np.inf, 1.0], dtype=np.float32)

    metrics = compare_output("y", actual, expected, FP32)

    assert not metrics.within_budget


def test_shape_mismatch_fails_with_both_shapes_in_the_note():
    metrics = compare_output("y", np.zeros((2, 3)), np.zeros((3, 2)), FP32)

    assert not metrics.within_budget
    assert "[2, 3]" in metrics.note
    assert "[3, 2]" in metrics.note
    assert metrics.max_abs is None


def test_missing_output_fails():
    metrics = compare_output("y", None, np.zeros(3), FP32)

    assert not metrics.within_budget
    assert "missing" in metrics.note


def test_compare_outputs_reports_an_output_the_artifact_lacks():
    expected = {"a": np.ones(2), "b": np.ones(2)}

    results = compare_outputs({"a": np.ones(2)}, expected, FP32)

    assert [(m.name, m.within_budget) for m in results] == [("a", True), ("b", False)]


def test_empty_output_passes():
    metrics = compare_output("y", np.zeros((0, 4)), np.zeros((0, 4)), FP32)

    assert metrics.within_budget
    assert metrics.note == "empty output"


def test_worst_index_points_at_the_element_furthest_outside_the_budget():
    expected = np.zeros((3, 4, 5), dtype=np.float32)
    actual = expected.copy()
    actual[0, 1, 2] = 0.01
    actual[2, 3, 1] = -0.3  # the worst
    actual[1, 0, 4] = 0.2

    metrics = compare_output("y", actual, expected, FP32)

    assert metrics.worst_index == (2, 3, 1)
    assert metrics.max_abs == pytest.approx(0.3)
    assert metrics.mismatch_fraction == pytest.approx(3 / 60)


def test_worst_index_weighs_the_budget_not_just_the_absolute_error():
    # The output's scale is its RMS, 1e6 / sqrt(2): atol allows 70.7 everywhere.
    # Element 0 is 500 off on 1e6 (allowed 1070.7); element 1 is 100 off on 0 (allowed 70.7).
    expected = np.array([1e6, 0.0])
    actual = np.array([1e6 + 500, 100.0])

    metrics = compare_output("y", actual, expected, FP32)

    assert metrics.worst_index == (1,)
    assert metrics.max_abs == pytest.approx(500.0)
    assert metrics.mismatch_fraction == pytest.approx(0.5)


def test_cancellation_in_a_large_valued_output_passes():
    # A random-weight DenseNet's logits: values near 6e5, one near 284 where large terms
    # cancelled. 0.47 off there is 1.6e-3 of the element but ~1e-6 of the output's scale.
    expected = np.array([6e5, -6e5, 284.0], dtype=np.float32)
    actual = expected + np.array([1.0, -1.0, 0.47], dtype=np.float32)

    metrics = compare_output("logits", actual, expected, FP32)

    assert metrics.max_rel == pytest.approx(0.47 / 284, rel=1e-2)
    assert metrics.within_budget


def test_a_real_mismatch_in_a_large_valued_output_still_fails():
    expected = np.array([6e5, -6e5, 284.0], dtype=np.float32)
    actual = expected + np.array([0.0, 0.0, 1e3], dtype=np.float32)

    metrics = compare_output("logits", actual, expected, FP32)

    assert not metrics.within_budget
    assert metrics.worst_index == (2,)


def test_unit_scale_outputs_keep_the_plain_absolute_tolerance():
    # RMS below 1: atol stays 1e-4, so 2e-4 off on 0 fails.
    expected = np.array([0.5, 0.0, -0.5], dtype=np.float32)

    metrics = compare_output("p", expected + np.array([0, 2e-4, 0], np.float32), expected, FP32)

    assert not metrics.within_budget


def test_cosine_of_opposite_and_orthogonal_vectors():
    loose = Budget(atol=10.0, rtol=0.0)

    opposite = compare_output("y", np.array([-1.0, -2.0]), np.array([1.0, 2.0]), loose)
    orthogonal = compare_output("y", np.array([0.0, 1.0]), np.array([1.0, 0.0]), loose)
    scaled = compare_output("y", np.array([2.0, 4.0]), np.array([1.0, 2.0]), loose)

    assert opposite.cosine == pytest.approx(-1.0)
    assert orthogonal.cosine == pytest.approx(0.0)
    assert scaled.cosine == pytest.approx(1.0)


def test_cosine_of_all_zero_outputs_is_one():
    metrics = compare_output("y", np.zeros(3), np.zeros(3), FP32)

    assert metrics.cosine == 1.0


def test_to_dict_is_plain_json_data():
    expected = np.zeros((2, 2))
    actual = np.array([[0.0, 1.0], [0.0, 0.0]])

    data = compare_output("y", actual, expected, FP32).to_dict()

    assert data["name"] == "y"
    assert data["within_budget"] is False
    assert data["worst_index"] == [0, 1]
    assert data["mismatch_fraction"] == pytest.approx(0.25)


def test_a_cosine_budget_passes_scattered_rounding_that_elementwise_would_fail():
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((4, 10)).astype(np.float32)
    actual = expected + rng.normal(0, 0.05, expected.shape).astype(np.float32)
    actual[0, 0] += 1.0  # one element far off, as int8 rounding does
    cosine_budget = Budget(atol=1e-1, rtol=1e-1, min_cosine=0.98, min_top1=0.5)

    elementwise = compare_output("y", actual, expected, Budget(atol=1e-1, rtol=1e-1))
    judged = compare_output("y", actual, expected, cosine_budget)

    assert not elementwise.within_budget
    assert judged.within_budget and judged.cosine >= 0.98


def test_cosine_budget_fails_on_low_cosine_top1_or_one_sided_nan():
    expected = np.eye(4, dtype=np.float32) * 5 + 1
    swapped = expected[:, ::-1].copy()  # every row's top-1 moves
    with_nan = expected.copy()
    with_nan[0, 0] = np.nan

    assert not compare_output("y", swapped, expected, Budget(1, 1, min_cosine=0.0,
                                                             min_top1=0.9)).within_budget
    assert not compare_output("y", -expected, expected, Budget(1, 1, min_cosine=0.9)
                              ).within_budget
    assert not compare_output("y", with_nan, expected, Budget(1, 1, min_cosine=0.5)
                              ).within_budget


def test_cosine_is_blind_to_scale_so_the_direction_rule_bounds_the_norm_too():
    """An fp16 output saturated at 1.0 against references near 0.1 has cosine 1: the
    direction rule also bounds the relative L2 error (what its cosine floor allows)."""
    from convertkit.checker.budgets import budget_for
    from convertkit.spec import Precision

    expected = np.full((1, 8), 0.1, dtype=np.float32) + np.linspace(0, 1e-3, 8, dtype=np.float32)
    saturated = np.ones((1, 8), dtype=np.float32)

    metrics = compare_output("y", saturated, expected, budget_for(Precision.FP16))

    assert metrics.cosine > 0.9999
    assert metrics.norm_ratio > 8
    assert not metrics.within_budget
