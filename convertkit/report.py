"""The report of one conversion: what was built, how each artifact compares, the exit code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convertkit.check.budgets import Budget
from convertkit.check.metrics import OutputMetrics
from convertkit.errors import ConvertkitError
from convertkit.spec import Status

if TYPE_CHECKING:
    from convertkit.check.localize import Localization
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
        """0 all passed; else the first of 2, 4, 3, 1 that applies (DESIGN.md)."""
        codes = {e["exit_code"] for e in self._errors()}
        if any(a.status == Status.ERROR and a.error is None for a in self.artifacts):
            codes.add(3)
        if any(a.status == Status.FAIL for a in self.artifacts):
            codes.add(1)
        for code in (2, 4, 3, 1):
            if code in codes:
                return code
        return 0

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


def format_table(report: Report) -> str:
    """The terminal view: one row per artifact output."""
    header = ("target", "status", "precision", "output", "max abs", "max rel", "cosine")
    rows: list[tuple[str, ...]] = []
    for artifact in report.artifacts:
        base = (artifact.target, artifact.status.value, artifact.precision or "-")
        if not artifact.outputs:
            detail = artifact.error["message"] if artifact.error else _UNCHECKED.get(
                artifact.status, "")
            rows.append((*base, detail[:60] or "-", "-", "-", "-"))
        for index, metric in enumerate(artifact.outputs):
            lead = base if index == 0 else ("", "", "")
            rows.append((*lead, metric.name + ("" if metric.within_budget else "  <-- over budget"),
                         _number(metric.max_abs), _number(metric.max_rel),
                         _number(metric.cosine, ".6f")))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_UNCHECKED = {Status.BUILT: "not run: nothing here runs it",
              Status.PREPARED: "not built: its toolchain is not here"}


def format_findings(report: Report) -> list[str]:
    """A few lines under the table for each failed artifact: where it diverges first and
    the command that reproduces it."""
    lines = []
    for artifact in report.artifacts:
        lines.extend(_candidate_lines(artifact))
        if artifact.checked_in and artifact.status in (Status.PASS, Status.FAIL):
            lines.append(f"{artifact.target}: checked in {artifact.checked_in}")
        lines.extend(_layer_lines(artifact))
        if artifact.status != Status.FAIL:
            continue
        localization = artifact.localization
        if localization is None:
            lines.extend(f"{artifact.target}: {note}" for note in artifact.notes
                         if note.startswith("not localised"))
            continue
        lines.append(f"{artifact.target}: {localization.summary()}")
        repro = localization.repro
        if repro is not None:
            label = "repro" if repro.reproduced else "repro (does not reproduce on its own)"
            lines.append(f"  {label}: {repro.command}")
    return lines


def _candidate_lines(artifact: ArtifactResult) -> list[str]:
    """`-t cpu`: one short line per candidate, the chosen one marked."""
    if not artifact.candidates:
        return []
    lines = [f"{artifact.target}: candidates (median latency on this machine)"]
    for c in artifact.candidates:
        timing = f"{c.latency_ms:8.2f} ms" if c.latency_ms is not None else "       - ms"
        mark = "  <-- chosen" if c.chosen else ""
        detail = f"  {c.reason[:70]}" if c.reason else ""
        lines.append(f"  {c.target + ' ' + c.precision:<22} {c.status.value:<6} {timing}"
                     f"  max abs {_number(c.max_abs)}{mark}{detail}")
    return lines


def _layer_lines(artifact: ArtifactResult) -> list[str]:
    if not artifact.layer_analysis:
        return []
    lines = [f"{artifact.target}: layers that diverge most (the toolkit's own analysis)"]
    for row in artifact.layer_analysis[:5]:
        values = "  ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                           for key, value in row.items() if key not in ("layer", "op"))
        op = f" ({row['op']})" if row.get("op") else ""
        lines.append(f"  {row.get('layer', '?')}{op}  {values}")
    return lines


def _number(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)
