"""Task accuracy, when the samples come with labels: the source model's top-1 accuracy and
an artifact's, and whether the artifact lost more than its budget allows.

The class scores are the first output shaped like them in every sample ([batch, classes],
checker/metrics.py); a sample's labels hold one class per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convertkit.checker.metrics import looks_like_class_scores
from convertkit.errors import UsageError


@dataclass(frozen=True)
class Accuracy:
    output: str  # the class-score output the accuracy is read from
    rows: int  # labelled rows, over every sample
    source_top1: float  # percent
    artifact_top1: float  # percent
    max_drop: float | None  # percentage points the budget allows the artifact to lose

    @property
    def drop(self) -> float:
        return self.source_top1 - self.artifact_top1

    @property
    def within_budget(self) -> bool:
        return self.max_drop is None or self.drop <= self.max_drop + 1e-9

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "rows": self.rows, "source_top1": self.source_top1,
                "artifact_top1": self.artifact_top1, "drop": round(self.drop, 6),
                "max_drop": self.max_drop, "within_budget": self.within_budget}


def class_output(reference: Sequence[Mapping[str, np.ndarray]]) -> str | None:
    """The first output that holds class scores in every sample, or None."""
    if not reference:
        return None
    return next((name for name in reference[0]
                 if all(looks_like_class_scores(sample[name]) for sample in reference)), None)


def check_labels(reference: Sequence[Mapping[str, np.ndarray]],
                 labels: Sequence[np.ndarray]) -> str:
    """The class-score output the labels are for; a UsageError when there is none or a
    sample's labels do not fit its rows."""
    output = class_output(reference)
    if output is None:
        raise UsageError("the labels have no class scores to be compared with: no output "
                         "is shaped [batch, classes]", hint="drop --labels for this model",
                         code="bad-labels")
    for index, (sample, label) in enumerate(zip(reference, labels, strict=True)):
        rows = sample[output].shape[0]
        if np.asarray(label).size != rows:
            raise UsageError(
                f"sample {index} has {rows} row(s) of {output} but {np.asarray(label).size} "
                "label(s)", hint="give one label per sample of batch 1 ([N]) or one per row "
                "([N, batch])", code="bad-labels")
    return output


def top1_accuracy(outputs: Sequence[Mapping[str, np.ndarray]], output: str,
                  labels: Sequence[np.ndarray]) -> tuple[float, int]:
    """(percent of rows whose top class is the label, rows)."""
    predicted = np.concatenate([np.argmax(np.nan_to_num(
        sample[output].reshape(sample[output].shape[0], -1), nan=-np.inf), axis=1)
        for sample in outputs])
    expected = np.concatenate([np.ravel(label) for label in labels])
    return float(np.mean(predicted == expected) * 100.0), int(expected.size)


def compare_accuracy(reference: Sequence[Mapping[str, np.ndarray]],
                     outputs: Sequence[Mapping[str, np.ndarray]], output: str,
                     labels: Sequence[np.ndarray], max_drop: float | None) -> Accuracy:
    source, rows = top1_accuracy(reference, output, labels)
    artifact, _ = top1_accuracy(outputs, output, labels)
    return Accuracy(output, rows, source, artifact, max_drop)
