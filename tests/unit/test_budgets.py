"""convertkit/checker/budgets.py: default budgets per precision, coherent across
precisions, and overrides."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from convertkit.checker.budgets import DEFAULT_BUDGETS, PRECISION_ORDER, Budget, budget_for
from convertkit.checker.metrics import is_within_budget
from convertkit.spec import Precision


def test_every_precision_has_a_budget():
    assert set(DEFAULT_BUDGETS) == set(Precision) == set(PRECISION_ORDER)


def test_fp32_budget_values():
    assert budget_for(Precision.FP32) == Budget(atol=1e-4, rtol=1e-3, max_accuracy_drop=0.0)
    assert budget_for(Precision.FP32).min_cosine is None  # fp32 is judged elementwise only


def test_every_threshold_loosens_as_precision_drops():
    budgets = [budget_for(p) for p in PRECISION_ORDER]
    for higher, lower in itertools.pairwise(budgets):
        assert lower.atol >= higher.atol and lower.rtol >= higher.rtol
        assert lower.max_accuracy_drop >= higher.max_accuracy_drop
        for floor in ("min_cosine", "min_top1", "min_top5"):
            high, low = getattr(higher, floor), getattr(lower, floor)
            assert low is not None or high is None, floor
            assert high is None or low <= high, floor


def test_numbers_that_pass_at_one_precision_pass_at_every_lower_one():
    """The coherence rule itself, over a grid of outcomes: a bf16 artifact as close as an
    int8 one that passes never fails (a bf16 ResNet-50 at cosine 0.99995 used to)."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        outside = bool(rng.integers(2))
        nonfinite = bool(rng.random() < 0.1)
        cosine = float(1 - 10 ** rng.uniform(-6, -0.5))
        top1, top5 = (float(rng.uniform(0.5, 1)) if rng.random() < 0.7 else None
                      for _ in range(2))
        relative = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.8 else None
        verdicts = [is_within_budget(budget_for(p), outside, nonfinite, cosine, top1, top5,
                                     relative)
                    for p in PRECISION_ORDER]
        for higher, lower in itertools.pairwise(verdicts):
            assert lower or not higher, (outside, nonfinite, cosine, top1, top5, verdicts)
    assert is_within_budget(budget_for(Precision.BF16), True, False, 0.99995, None, None)


@pytest.mark.parametrize(
    ("atol", "rtol", "expected"),
    [
        (None, None, DEFAULT_BUDGETS[Precision.FP16]),
        (0.5, None, Budget(0.5, 1e-2, max_accuracy_drop=0.5)),
        (None, 0.25, Budget(1e-2, 0.25, max_accuracy_drop=0.5)),
        (0.0, 0.0, Budget(0.0, 0.0, max_accuracy_drop=0.5)),  # zero overrides, not "unset"
    ],
)
def test_budget_for_applies_overrides(atol, rtol, expected):
    assert budget_for(Precision.FP16, atol=atol, rtol=rtol) == expected


def test_the_accuracy_drop_is_overridden_on_its_own():
    budget = budget_for(Precision.INT8, max_accuracy_drop=3.0)

    assert budget.max_accuracy_drop == 3.0
    assert budget.min_cosine == DEFAULT_BUDGETS[Precision.INT8].min_cosine


def test_overrides_leave_the_defaults_unchanged():
    budget_for(Precision.FP32, atol=1.0, rtol=1.0)

    assert DEFAULT_BUDGETS[Precision.FP32] == Budget(atol=1e-4, rtol=1e-3,
                                                     max_accuracy_drop=0.0)


def test_budget_to_dict():
    assert Budget(0.1, 0.2).to_dict() == {"atol": 0.1, "rtol": 0.2}
    assert budget_for(Precision.INT8).to_dict()["max_accuracy_drop"] == 1.0


def test_int8_has_the_loosest_direction_floors():
    budget = budget_for(Precision.INT8)

    assert not budget.is_elementwise
    assert (budget.min_cosine, budget.min_top1, budget.min_top5) == (0.98, 0.9, 0.8)
    assert budget.to_dict()["min_cosine"] == 0.98


def test_a_tolerance_alone_asks_for_the_elementwise_rule():
    int8 = budget_for(Precision.INT8)

    assert budget_for(Precision.INT8, rtol=0.3) == Budget(int8.atol, 0.3,
                                                         max_accuracy_drop=1.0)
    assert int8.with_overrides(min_cosine=0.95) == Budget(0.1, 0.1, 0.95, 0.9, 0.8, 1.0)
    assert int8.with_overrides(atol=1.0, min_top1=0.5) == Budget(1.0, 0.1, 0.98, 0.5, 0.8,
                                                                 1.0)
