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
    from convertkit.checker.decode import DecodeCheck
    from convertkit.checker.localize import Localization
    from convertkit.checker.source_map import SourceLocation
    from convertkit.selection import CandidateRecord

SCHEMA_VERSION = 1


def error_record(error: ConvertkitError) -> dict[str, Any]:
    return {**error.to_dict(), "exit_code": error.exit_code}


def artifact_label(target: str, component: str | None) -> str:
    return f"{target} ({component})" if component else target


@dataclass(frozen=True)
class KeptNode:
    """One node an int8 build keeps in fp32 (mixed_precision.py)."""

    name: str  # in the hub ONNX model
    op: str
    loss_db: float | None  # SQNR it lost in the int8 proxy; None: kept for a node it feeds
    macs: int  # multiply-accumulates per run (0: not a Conv/Gemm/MatMul)
    source: SourceLocation | None = None

    def describe(self) -> str:
        """'node_conv2d_1 Conv, layer `body.2` (digits.py:28)'."""
        where = self.source.describe() if self.source is not None else ""
        return f"{self.name} {self.op}" + (f", {where}" if where else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "loss_db": self.loss_db, "macs": self.macs,
                "source": self.source.to_dict() if self.source else None}


@dataclass(frozen=True)
class MixedPrecision:
    """An int8 artifact with some nodes kept in fp32, and how the search found them."""

    kept: tuple[KeptNode, ...]
    quantisable: int  # nodes of the model the quantiser quantises
    mac_share: float  # of the model's Conv/Gemm/MatMul MACs, kept in fp32 (0..1)
    override_file: str  # relative to the output folder: the vendor's own override
    builds: int  # int8 builds the search tried on the calibration samples
    pure_int8: str = ""  # how the build with every node quantised did
    kept_in: str = "fp32"  # the precision the kept nodes run at (RKNN: fp16)

    def summary(self) -> str:
        """'int8 with 3 of 13 nodes in fp32 (45% of MACs)'."""
        return (f"int8 with {len(self.kept)} of {self.quantisable} nodes in {self.kept_in} "
                f"({self.mac_share:.0%} of MACs)")

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "kept_in": self.kept_in,
                "kept": [k.to_dict() for k in self.kept],
                "quantisable_nodes": self.quantisable, "mac_share": self.mac_share,
                "override_file": self.override_file, "builds": self.builds,
                "pure_int8": self.pure_int8}


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
    # int8 with nodes kept in fp32, when the pure int8 build missed its budget
    mixed_precision: MixedPrecision | None = None
    # A decoder with a KV cache: its greedy decode against the source's (checker/decode.py)
    decode: DecodeCheck | None = None
    # One part of a model exported as several ("encoder", "decoder"); "" for a whole model
    component: str = ""

    @property
    def label(self) -> str:
        """How reports name it: 'cpu:ort', or 'cpu:ort (decoder)' for a part."""
        return artifact_label(self.target, self.component)

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
            "mixed_precision": (self.mixed_precision.to_dict() if self.mixed_precision
                                else None),
            "decode": self.decode.to_dict() if self.decode else None,
            "component": self.component or None,
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
