"""The report of one run of `convert` or `check`: what was built, how each artifact
compares, the exit code. Plain data; reports/terminal.py, html.py and junit.py render it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convertkit.checker.budgets import Budget
from convertkit.checker.metrics import OutputMetrics
from convertkit.errors import EXIT_CODE_PRECEDENCE, ConvertkitError
from convertkit.spec import Status

if TYPE_CHECKING:
    from convertkit.checker.localize import Localization
    from convertkit.selection import CandidateRecord

SCHEMA_VERSION = 1


def error_record(error: ConvertkitError) -> dict[str, Any]:
    return {**error.to_dict(), "exit_code": error.exit_code}


@dataclass(frozen=True)
class ArtifactResult:
    target: str
    status: Status
    path: str | None = None  # relative to the output folder
    precision: str | None = None
    budget: Budget | None = None
    outputs: tuple[OutputMetrics, ...] = ()
    notes: tuple[str, ...] = ()
    error: dict[str, Any] | None = None
    # Where a failed artifact first leaves the budget (set when it could be localised).
    localization: Localization | None = None
    duration_s: float | None = None  # time to run and check it, when measured
    latency_ms: float | None = None  # median run time, measured when choosing among candidates
    candidates: tuple[CandidateRecord, ...] = ()  # `-t cpu`: every candidate considered
    checked_in: str = ""  # where the check ran, when not the target's own runtime
    # A failed NPU artifact: its toolkit's per-layer analysis, worst layers first.
    layer_analysis: tuple[dict[str, Any], ...] = ()
    samples: int | None = None  # how many evaluation samples the verdict rests on
    accuracy: dict[str, Any] | None = None  # with labels: checker.accuracy.Accuracy
    # When the build tuned itself on calibration samples: where they came from
    # (checker.samples.SampleSet.record()); "real": false is a smoke test, not evidence.
    calibration: dict[str, Any] | None = None

    @property
    def is_calibrated_on_generated(self) -> bool:
        return self.calibration is not None and not self.calibration.get("real", False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "status": self.status.value, "path": self.path,
            "precision": self.precision,
            "budget": self.budget.to_dict() if self.budget else None,
            "metrics": {m.name: m.to_dict() for m in self.outputs},
            "notes": list(self.notes), "error": self.error,
            "localization": self.localization.to_dict() if self.localization else None,
            "duration_s": self.duration_s, "latency_ms": self.latency_ms,
            "candidates": [c.to_dict() for c in self.candidates],
            "checked_in": self.checked_in or None,
            "layer_analysis": list(self.layer_analysis),
            "samples": self.samples, "accuracy": self.accuracy,
            "calibration": self.calibration,
        }


@dataclass(frozen=True)
class Report:
    source: dict[str, Any]
    check: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[ArtifactResult, ...] = ()
    error: dict[str, Any] | None = None  # the source could not be lowered at all
    version: str = ""
    command: str = "convert"  # the command that wrote it: convert or check

    @property
    def status(self) -> str:
        statuses = [a.status for a in self.artifacts]
        if self.error is not None or Status.ERROR in statuses:
            return "error"
        if Status.FAIL in statuses:
            return "fail"
        return "pass"

    @property
    def exit_code(self) -> int:
        """0 all passed; else the first of EXIT_CODE_PRECEDENCE that applies (errors.py)."""
        codes = {e["exit_code"] for e in self._errors()}
        if any(a.status == Status.ERROR and a.error is None for a in self.artifacts):
            codes.add(3)
        if any(a.status == Status.FAIL for a in self.artifacts):
            codes.add(1)
        return next((code for code in EXIT_CODE_PRECEDENCE if code in codes), 0)

    def _errors(self) -> list[dict[str, Any]]:
        errors = [a.error for a in self.artifacts if a.error is not None]
        return [self.error, *errors] if self.error is not None else errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION, "convertkit_version": self.version,
            "command": self.command, "status": self.status, "exit_code": self.exit_code,
            "source": self.source, "check": self.check, "error": self.error,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
