"""One artifact's verdict: its outputs on every evaluation sample against the source's,
under its precision's budget, and with labels its task accuracy against the source's.

``convert`` and ``check`` judge the same way, from the same ``Evidence``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convertkit.checker.accuracy import Accuracy, check_labels, compare_accuracy
from convertkit.checker.budgets import Budget
from convertkit.checker.metrics import OutputMetrics, compare_samples, worst_sample
from convertkit.checker.samples import load_labels, load_samples
from convertkit.spec import Status


@dataclass(frozen=True)
class Evidence:
    """What every verdict of a run rests on: the evaluation samples, the reference
    outputs for each, and their labels with the output they label (or none)."""

    samples: tuple[dict[str, np.ndarray], ...]
    references: tuple[dict[str, np.ndarray], ...]
    labels: tuple[np.ndarray, ...] | None = None
    class_output: str | None = None

    @staticmethod
    def of(samples: Sequence[Mapping[str, np.ndarray]],
           references: Sequence[Mapping[str, np.ndarray]],
           labels: Sequence[np.ndarray] | None = None) -> Evidence:
        """Checks that the labels fit the references' class scores (a UsageError if not)."""
        output = check_labels(references, labels) if labels is not None else None
        return Evidence(tuple(dict(s) for s in samples), tuple(dict(r) for r in references),
                        tuple(labels) if labels is not None else None, output)

    @staticmethod
    def load(samples: Path, references: Path, labels: Path | None = None) -> Evidence:
        return Evidence.of(load_samples(samples), load_samples(references),
                           load_labels(labels) if labels is not None else None)


@dataclass(frozen=True)
class Verdict:
    status: Status  # PASS or FAIL
    metrics: tuple[OutputMetrics, ...]
    accuracy: Accuracy | None = None

    @property
    def worst_sample(self) -> int:
        return worst_sample(self.metrics)


def judge(outputs: Sequence[Mapping[str, np.ndarray]], evidence: Evidence,
          budget: Budget) -> Verdict:
    """``outputs[i]`` are an artifact's outputs on ``evidence.samples[i]``."""
    metrics = tuple(compare_samples(outputs, evidence.references, budget))
    accuracy = None
    if (evidence.labels is not None and evidence.class_output is not None
            and all(evidence.class_output in sample for sample in outputs)):
        accuracy = compare_accuracy(evidence.references, outputs, evidence.class_output,
                                    evidence.labels, budget.max_accuracy_drop)
    passed = (all(m.within_budget for m in metrics)
              and (accuracy is None or accuracy.within_budget))
    return Verdict(Status.PASS if passed else Status.FAIL, metrics, accuracy)
