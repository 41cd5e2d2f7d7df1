"""Compare an artifact's outputs with the reference outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from convertkit.check.budgets import Budget


@dataclass(frozen=True)
class OutputMetrics:
    """How one output compares with its reference. ``within_budget`` is the verdict."""

    name: str
    within_budget: bool
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    worst_index: tuple[int, ...] | None = None  # element furthest outside (or closest to) budget
    mismatch_fraction: float | None = None  # share of elements outside the budget
    note: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name, "within_budget": self.within_budget, "max_abs": self.max_abs,
            "max_rel": self.max_rel, "cosine": self.cosine,
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "mismatch_fraction": self.mismatch_fraction, "note": self.note,
        }


def compare_output(name: str, actual: np.ndarray | None, expected: np.ndarray,
                   budget: Budget) -> OutputMetrics:
    if actual is None:
        return OutputMetrics(name, False, note="output missing from the artifact")
    if actual.shape != expected.shape:
        return OutputMetrics(name, False,
                             note=f"shape {list(actual.shape)} != reference {list(expected.shape)}")
    if expected.size == 0:
        return OutputMetrics(name, True, 0.0, 0.0, 1.0, None, 0.0, note="empty output")
    a = actual.astype(np.float64)
    b = expected.astype(np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    agree = both_nan | same_inf
    # A NaN or Inf on one side only (or Infs of opposite sign) is a full mismatch.
    nonfinite_mismatch = ~finite & ~agree
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(finite, np.abs(a - b), np.where(agree, 0.0, np.inf))
        magnitude = np.where(finite, np.abs(b), 0.0)
        allowed = budget.atol + budget.rtol * magnitude
        outside = diff > allowed
        # The worst element is the one furthest beyond what the budget allows.
        excess = np.where(nonfinite_mismatch, np.inf, diff - allowed)
        worst = np.unravel_index(int(np.argmax(excess)), expected.shape)
        rel = np.where(diff == 0, 0.0, diff / np.maximum(magnitude, np.finfo(np.float32).tiny))
    return OutputMetrics(
        name=name,
        within_budget=not bool(outside.any()),
        max_abs=_finite_or_none(diff.max()),
        max_rel=_finite_or_none(rel.max()),
        cosine=_cosine(a, b),
        worst_index=tuple(int(i) for i in worst),
        mismatch_fraction=float(outside.mean()),
        note=(f"{int(nonfinite_mismatch.sum())} element(s) NaN or Inf on one side only"
              if nonfinite_mismatch.any() else ""),
    )


def compare_outputs(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                    budget: Budget) -> list[OutputMetrics]:
    return [compare_output(name, actual.get(name), ref, budget) for name, ref in expected.items()]


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite].ravel(), b[finite].ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norm)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
