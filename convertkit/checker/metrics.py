"""Compare an artifact's outputs with the reference outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from convertkit.checker.budgets import Budget

# Upper edges of the absolute-error histogram: exactly 0, then one bin per decade from
# 1e-10 to 1e2, then everything larger (NaN or Inf on one side only counts there too).
HISTOGRAM_UPPER_EDGES: tuple[float, ...] = (0.0, *(10.0 ** e for e in range(-10, 3)), np.inf)
# Top-k agreement is reported for outputs shaped like class scores: [batch, classes].
TOP_K = (1, 5)


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
    mean_abs: float | None = None
    # 10 log10(sum ref^2 / sum (actual - ref)^2) over finite elements; None when the
    # outputs are identical (an infinite SNR).
    snr_db: float | None = None
    # Share of rows whose top-1 class agrees; mean overlap of the top-5 classes. Only for
    # outputs that look like class scores (float, [batch, classes >= 2], trailing 1s ignored).
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    # Element counts per bin of absolute error; bin i holds errors in
    # (HISTOGRAM_UPPER_EDGES[i-1], HISTOGRAM_UPPER_EDGES[i]].
    error_histogram: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {
            "name": self.name, "within_budget": self.within_budget, "max_abs": self.max_abs,
            "max_rel": self.max_rel, "cosine": self.cosine,
            "worst_index": list(self.worst_index) if self.worst_index is not None else None,
            "mismatch_fraction": self.mismatch_fraction, "note": self.note,
            "mean_abs": self.mean_abs, "snr_db": self.snr_db,
            "top1_agreement": self.top1_agreement, "top5_agreement": self.top5_agreement,
            "error_histogram": ({"upper_edges": [_json_edge(e) for e in HISTOGRAM_UPPER_EDGES],
                                 "counts": list(self.error_histogram)}
                                if self.error_histogram else None),
        }


@dataclass(frozen=True)
class ElementErrors:
    """Elementwise comparison of two arrays of one shape, in float64."""

    diff: np.ndarray  # |actual - expected|; inf where NaN/Inf appear on one side only
    allowed: np.ndarray  # atol * output_scale + rtol * |expected|
    magnitude: np.ndarray  # |expected| where finite, else 0
    nonfinite_mismatch: np.ndarray

    @property
    def outside(self) -> np.ndarray:
        return self.diff > self.allowed

    def budget_ratio(self) -> float:
        """The largest error as a multiple of what the budget allows there (> 1 leaves the
        budget; inf for a NaN or Inf on one side only)."""
        if self.diff.size == 0:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(self.diff == 0, 0.0,
                             self.diff / np.maximum(self.allowed, np.finfo(np.float64).tiny))
        return float(ratio.max())


def element_errors(actual: np.ndarray, expected: np.ndarray, budget: Budget) -> ElementErrors:
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
    allowed = budget.atol * output_scale(magnitude[finite]) + budget.rtol * magnitude
    return ElementErrors(diff, allowed, magnitude, nonfinite_mismatch)


def output_scale(magnitude: np.ndarray) -> float:
    """The root-mean-square of an output's finite reference values, at least 1: the unit
    ``atol`` is measured in. Floating-point error grows with the values being summed, so
    an element that is small because large terms cancelled (a random-weight DenseNet's
    logits near 0 among values of 1e5) carries an absolute error of the output's scale,
    not of its own size."""
    if magnitude.size == 0:
        return 1.0
    return max(1.0, float(np.sqrt(np.mean(np.square(magnitude)))))


def compare_output(name: str, actual: np.ndarray | None, expected: np.ndarray,
                   budget: Budget) -> OutputMetrics:
    if actual is None:
        return OutputMetrics(name, False, note="output missing from the artifact")
    if actual.shape != expected.shape:
        return OutputMetrics(name, False,
                             note=f"shape {list(actual.shape)} != reference {list(expected.shape)}")
    if expected.size == 0:
        return OutputMetrics(name, True, 0.0, 0.0, 1.0, None, 0.0, note="empty output")
    errors = element_errors(actual, expected, budget)
    diff, outside = errors.diff, errors.outside
    a = actual.astype(np.float64)
    b = expected.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        # The worst element is the one furthest beyond what the budget allows.
        excess = np.where(errors.nonfinite_mismatch, np.inf, diff - errors.allowed)
        worst = np.unravel_index(int(np.argmax(excess)), expected.shape)
        rel = np.where(diff == 0, 0.0,
                       diff / np.maximum(errors.magnitude, np.finfo(np.float32).tiny))
    top1, top5 = _topk_agreement(actual, expected)
    cosine = _cosine(a, b)
    return OutputMetrics(
        name=name,
        within_budget=_is_within_budget(budget, bool(outside.any()),
                                        bool(errors.nonfinite_mismatch.any()), cosine,
                                        top1, top5),
        max_abs=_finite_or_none(diff.max()),
        max_rel=_finite_or_none(rel.max()),
        cosine=cosine,
        worst_index=tuple(int(i) for i in worst),
        mismatch_fraction=float(outside.mean()),
        note=(f"{int(errors.nonfinite_mismatch.sum())} element(s) NaN or Inf on one side only"
              if errors.nonfinite_mismatch.any() else ""),
        mean_abs=_mean_finite(diff),
        snr_db=_snr_db(a, b),
        top1_agreement=top1,
        top5_agreement=top5,
        error_histogram=error_histogram(diff),
    )


def _is_within_budget(budget: Budget, any_outside: bool, any_nonfinite_mismatch: bool,
                      cosine: float | None, top1: float | None, top5: float | None) -> bool:
    """The verdict under ``budget``: elementwise, or by cosine when it sets min_cosine; the
    top-k floors apply where the output has top-k agreement (class scores)."""
    if budget.min_cosine is None:
        verdict = not any_outside
    else:
        verdict = (not any_nonfinite_mismatch and cosine is not None
                   and cosine >= budget.min_cosine)
    if budget.min_top1 is not None and top1 is not None:
        verdict = verdict and top1 >= budget.min_top1
    if budget.min_top5 is not None and top5 is not None:
        verdict = verdict and top5 >= budget.min_top5
    return verdict


def compare_outputs(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                    budget: Budget) -> list[OutputMetrics]:
    return [compare_output(name, actual.get(name), ref, budget) for name, ref in expected.items()]


def error_histogram(diff: np.ndarray) -> tuple[int, ...]:
    """Counts of ``diff`` per bin of HISTOGRAM_UPPER_EDGES (NaN counts as infinite)."""
    values = np.where(np.isnan(diff), np.inf, diff).ravel()
    bins = np.searchsorted(np.asarray(HISTOGRAM_UPPER_EDGES), values, side="left")
    return tuple(int(c) for c in np.bincount(bins, minlength=len(HISTOGRAM_UPPER_EDGES)))


def looks_like_class_scores(array: np.ndarray) -> bool:
    """Float, [batch, classes] with at least two classes (trailing size-1 axes ignored)."""
    if not np.issubdtype(array.dtype, np.floating):
        return False
    shape = list(array.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    return len(shape) == 2 and shape[1] >= 2 and shape[0] >= 1


def _topk_agreement(actual: np.ndarray, expected: np.ndarray) -> tuple[float | None, float | None]:
    if not looks_like_class_scores(expected):
        return None, None
    rows = expected.shape[0]
    a = np.nan_to_num(actual.reshape(rows, -1).astype(np.float64), nan=-np.inf)
    b = np.nan_to_num(expected.reshape(rows, -1).astype(np.float64), nan=-np.inf)
    classes = b.shape[1]
    top1 = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    k = TOP_K[1]
    if classes <= k:
        return top1, None
    top_a = np.argpartition(-a, k - 1, axis=1)[:, :k]
    top_b = np.argpartition(-b, k - 1, axis=1)[:, :k]
    overlap = [len(set(ra) & set(rb)) / k for ra, rb in zip(top_a, top_b, strict=True)]
    return top1, float(np.mean(overlap))


def _snr_db(a: np.ndarray, b: np.ndarray) -> float | None:
    finite = np.isfinite(a) & np.isfinite(b)
    if not finite.any():
        return None
    noise = float(np.sum((a[finite] - b[finite]) ** 2))
    if noise == 0.0:
        return None
    signal = float(np.sum(b[finite] ** 2))
    return float(10.0 * np.log10(max(signal, np.finfo(np.float64).tiny) / noise))


def _mean_finite(diff: np.ndarray) -> float | None:
    finite = diff[np.isfinite(diff)]
    return float(finite.mean()) if finite.size else None


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    finite = np.isfinite(a) & np.isfinite(b)
    if not finite.any():
        return None  # nothing finite on both sides: no direction to compare
    a, b = a[finite].ravel(), b[finite].ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norm)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _json_edge(edge: float) -> float | None:
    return None if np.isinf(edge) else float(edge)
