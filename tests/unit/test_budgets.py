"""convertkit/checker/budgets.py: default budgets per precision and overrides."""

from __future__ import annotations

import pytest

from convertkit.checker.budgets import DEFAULT_BUDGETS, Budget, budget_for
from convertkit.spec import Precision


def test_every_precision_has_a_budget():
    assert set(DEFAULT_BUDGETS) == set(Precision)


def test_fp32_budget_values():
    assert budget_for(Precision.FP32) == Budget(atol=1e-4, rtol=1e-3)


def test_lower_precisions_get_looser_budgets():
    order = [Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8]
    budgets = [budget_for(p) for p in order]

    assert [b.atol for b in budgets] == sorted(b.atol for b in budgets)
    assert [b.rtol for b in budgets] == sorted(b.rtol for b in budgets)
    assert budgets[0].atol < budgets[-1].atol


@pytest.mark.parametrize(
    ("atol", "rtol", "expected"),
    [
        (None, None, Budget(1e-2, 1e-2)),
        (0.5, None, Budget(0.5, 1e-2)),
        (None, 0.25, Budget(1e-2, 0.25)),
        (0.0, 0.0, Budget(0.0, 0.0)),  # zero is an override, not "unset"
    ],
)
def test_budget_for_applies_overrides(atol, rtol, expected):
    assert budget_for(Precision.FP16, atol=atol, rtol=rtol) == expected


def test_overrides_leave_the_defaults_unchanged():
    budget_for(Precision.FP32, atol=1.0, rtol=1.0)

    assert DEFAULT_BUDGETS[Precision.FP32] == Budget(atol=1e-4, rtol=1e-3)


def test_budget_to_dict():
    assert Budget(0.1, 0.2).to_dict() == {"atol": 0.1, "rtol": 0.2}


def test_int8_is_judged_by_cosine_and_top_k():
    budget = budget_for(Precision.INT8)

    assert not budget.is_elementwise
    assert (budget.min_cosine, budget.min_top1, budget.min_top5) == (0.98, 0.9, 0.8)
    assert budget.to_dict()["min_cosine"] == 0.98
    assert all(budget_for(p).is_elementwise for p in (Precision.FP32, Precision.FP16,
                                                       Precision.BF16))


def test_a_tolerance_alone_asks_for_the_elementwise_rule():
    int8 = budget_for(Precision.INT8)

    assert budget_for(Precision.INT8, rtol=0.3) == Budget(int8.atol, 0.3)
    assert int8.with_overrides(min_cosine=0.95) == Budget(0.1, 0.1, 0.95, 0.9, 0.8)
    assert int8.with_overrides(atol=1.0, min_top1=0.5) == Budget(1.0, 0.1, 0.98, 0.5, 0.8)
