"""Compare an artifact's outputs with the reference outputs, over every check sample.

Each output is judged over all samples at once: the worst element of any sample, the
smallest cosine of any sample, top-1/top-5 agreement over the rows of every sample. A
reference that holds NaN or Inf proves nothing, and fails the output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    # The ratio ||actual|| / ||reference|| furthest from 1 of any sample (finite
    # elements): the magnitude, which cosine is blind to.
    norm_ratio: float | None = None
    samples: int = 1  # how many samples the numbers cover
    worst_sample: int | None = None  # the sample that holds worst_index
    sample_cosines: tuple[float | None, ...] = ()  # per sample; ``cosine`` is the smallest

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
            "norm_ratio": self.norm_ratio,
            "samples": self.samples, "worst_sample": self.worst_sample,
            "sample_cosines": list(self.sample_cosines),
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


def compare_samples(actual: Sequence[Mapping[str, np.ndarray]],
                    expected: Sequence[Mapping[str, np.ndarray]],
                    budget: Budget) -> list[OutputMetrics]:
    """Every reference output compared over all samples (``actual[i]`` ran on the inputs
    that gave ``expected[i]``)."""
    names = list(expected[0]) if expected else []
    return [compare_output_samples(name, [sample.get(name) for sample in actual],
                                   [sample[name] for sample in expected], budget)
            for name in names]


def compare_outputs(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                    budget: Budget) -> list[OutputMetrics]:
    """One sample's outputs compared with its reference."""
    return compare_samples([actual], [expected], budget)


def compare_output(name: str, actual: np.ndarray | None, expected: np.ndarray,
                   budget: Budget) -> OutputMetrics:
    """One output of one sample."""
    return compare_output_samples(name, [actual], [expected], budget)


def compare_output_samples(name: str, actual: Sequence[np.ndarray | None],
                           expected: Sequence[np.ndarray], budget: Budget) -> OutputMetrics:
    """One output over every sample (``actual[i]`` against ``expected[i]``)."""
    count = len(expected)
    if any(value is None for value in actual):
        return OutputMetrics(name, False, note="output missing from the artifact",
                             samples=count)
    present = [value for value in actual if value is not None]
    for index, (got, want) in enumerate(zip(present, expected, strict=True)):
        if got.shape != want.shape:
            where = f" (sample {index})" if count > 1 else ""
            return OutputMetrics(name, False, samples=count, note=(
                f"shape {list(got.shape)} != reference {list(want.shape)}{where}"))
    if all(want.size == 0 for want in expected):
        return OutputMetrics(name, True, 0.0, 0.0, 1.0, None, 0.0, note="empty output",
                             samples=count)
    nonfinite = sum(int(want.size - np.count_nonzero(np.isfinite(want)))
                    for want in expected if np.issubdtype(want.dtype, np.inexact))
    a = np.concatenate([np.ravel(got).astype(np.float64) for got in present])
    b = np.concatenate([np.ravel(want).astype(np.float64) for want in expected])
    errors = element_errors(a, b, budget)
    diff, outside = errors.diff, errors.outside
    with np.errstate(invalid="ignore", over="ignore"):
        # The worst element is the one furthest beyond what the budget allows.
        excess = np.where(errors.nonfinite_mismatch, np.inf, diff - errors.allowed)
        rel = np.where(diff == 0, 0.0,
                       diff / np.maximum(errors.magnitude, np.finfo(np.float32).tiny))
    worst_sample, worst_index = _locate(int(np.argmax(excess)), expected)
    top1, top5 = _topk_agreement(present, expected)
    cosines = tuple(_cosine(np.ravel(got).astype(np.float64), np.ravel(want).astype(np.float64))
                    for got, want in zip(present, expected, strict=True))
    known = [c for c in cosines if c is not None]
    cosine = min(known) if known and len(known) == len(cosines) else None
    ratios = [_norm_ratio(np.ravel(got).astype(np.float64), np.ravel(want).astype(np.float64))
              for got, want in zip(present, expected, strict=True)]
    known_ratios = [r for r in ratios if r is not None]
    norm_ratio = max(known_ratios, key=lambda r: abs(r - 1.0)) if known_ratios else None
    notes = []
    if nonfinite:
        notes.append(f"the reference holds {nonfinite} NaN or Inf value(s): a check "
                     "against it proves nothing")
    if errors.nonfinite_mismatch.any():
        notes.append(f"{int(errors.nonfinite_mismatch.sum())} element(s) NaN or Inf on one "
                     "side only")
    return OutputMetrics(
        name=name,
        within_budget=not nonfinite and is_within_budget(
            budget, bool(outside.any()), bool(errors.nonfinite_mismatch.any()), cosine,
            top1, top5, norm_ratio),
        max_abs=_finite_or_none(diff.max()),
        max_rel=_finite_or_none(rel.max()),
        cosine=cosine,
        worst_index=worst_index,
        mismatch_fraction=float(outside.mean()),
        note="; ".join(notes),
        mean_abs=_mean_finite(diff),
        snr_db=_snr_db(a, b),
        top1_agreement=top1,
        top5_agreement=top5,
        error_histogram=error_histogram(diff),
        norm_ratio=norm_ratio,
        samples=count,
        worst_sample=worst_sample if count > 1 else None,
        sample_cosines=cosines if count > 1 else (),
    )


def _locate(flat: int, expected: Sequence[np.ndarray]) -> tuple[int, tuple[int, ...]]:
    """(sample, index within it) of position ``flat`` in the samples laid end to end."""
    for sample, want in enumerate(expected):
        if flat < want.size:
            return sample, tuple(int(i) for i in np.unravel_index(flat, want.shape))
        flat -= want.size
    return len(expected) - 1, ()


def worst_sample(metrics: Sequence[OutputMetrics]) -> int:
    """The sample to look closer at (localisation, a toolkit's layer analysis): where the
    first output outside its budget is worst."""
    failed = next((m for m in metrics if not m.within_budget), None)
    return failed.worst_sample if failed is not None and failed.worst_sample else 0


def is_within_budget(budget: Budget, any_outside: bool, any_nonfinite_mismatch: bool,
                     cosine: float | None, top1: float | None, top5: float | None,
                     norm_ratio: float | None = None) -> bool:
    """The verdict under ``budget`` (budgets.py): every element within its tolerance, or,
    where the budget has a cosine floor, the output as a whole within it: cosine at least
    the floor, the norm within what that floor allows (cosine is blind to scale: an fp16
    output saturated at 1.0 against references near 0.1 has cosine 1), the top-k floors
    for class scores, and nothing NaN or Inf on one side only."""
    if not any_outside:
        return True
    if budget.min_cosine is None or any_nonfinite_mismatch or cosine is None:
        return False
    return (cosine >= budget.min_cosine
            and (norm_ratio is None
                 or abs(norm_ratio - 1.0) <= max_norm_change(budget.min_cosine))
            and (budget.min_top1 is None or top1 is None or top1 >= budget.min_top1)
            and (budget.min_top5 is None or top5 is None or top5 >= budget.min_top5))


def max_norm_change(min_cosine: float) -> float:
    """How far ||actual|| / ||reference|| may stray from 1 under a cosine floor: the
    relative distance of two vectors of one norm at that cosine, sqrt(2 (1 - cosine))
    (int8 0.98: 20%, bf16 0.999: 4.5%, fp16 0.9999: 1.4%)."""
    return math.sqrt(max(0.0, 2.0 * (1.0 - min_cosine)))


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


def _topk_agreement(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray],
                    ) -> tuple[float | None, float | None]:
    """Top-1 agreement and top-5 overlap over the rows of every sample, for outputs that
    look like class scores."""
    if not all(looks_like_class_scores(want) for want in expected):
        return None, None
    a = np.concatenate([np.nan_to_num(got.reshape(got.shape[0], -1).astype(np.float64),
                                      nan=-np.inf) for got in actual])
    b = np.concatenate([np.nan_to_num(want.reshape(want.shape[0], -1).astype(np.float64),
                                      nan=-np.inf) for want in expected])
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


def _norm_ratio(a: np.ndarray, b: np.ndarray) -> float | None:
    finite = np.isfinite(a) & np.isfinite(b)
    norm = float(np.linalg.norm(b[finite]))
    if norm == 0.0:
        return None
    return float(np.linalg.norm(a[finite]) / norm)


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
