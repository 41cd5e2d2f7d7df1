"""`-t cpu` with no toolchain: build every CPU candidate, check each, time the ones that
pass on this machine, and keep the fastest. A candidate that calibrated on generated
inputs (no real samples were given) is a smoke test, not evidence: it is never chosen
unless the user asked for its precision.

A candidate is one platform at one precision (cpu:ort fp32, cpu:openvino bf16, ...).
Latency is the median of repeated runs on the check inputs, every candidate at the
runtime's default thread count, which is the same for all of them: every core.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from convertkit.platforms import Platform
from convertkit.spec import Family, Precision, Status, TargetSpec

WARMUP_RUNS = 3
TIMED_RUNS = 20
TIME_LIMIT_S = 10.0  # per candidate; fewer timed runs when a model is slow


@dataclass(frozen=True)
class Candidate:
    platform: type[Platform]
    precision: Precision

    @property
    def target(self) -> TargetSpec:
        return TargetSpec(self.platform.family.value, self.platform.name)

    @property
    def folder(self) -> str:
        return f"{self.platform.family.value}/{self.platform.name}-{self.precision.value}"


def candidates(platforms: Iterable[type[Platform]], family: Family,
               precision: Precision | None) -> list[Candidate]:
    """Every installed platform of ``family`` at each precision it builds (only
    ``precision`` when given)."""
    found = []
    for platform in platforms:
        if platform.family != family or not platform.is_available():
            continue
        builds = platform().precisions_for(TargetSpec(family.value, platform.name)).builds
        found += [Candidate(platform, p) for p in builds if precision is None or p == precision]
    return found


def median_latency_ms(run: Callable[[], Any]) -> float:
    """Median wall time of ``run`` in milliseconds, after a warm-up."""
    for _ in range(WARMUP_RUNS):
        run()
    times = []
    deadline = time.perf_counter() + TIME_LIMIT_S
    while len(times) < TIMED_RUNS and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@dataclass(frozen=True)
class CandidateRecord:
    """One candidate's outcome, as the report lists it."""

    target: str
    precision: str
    status: Status
    path: str | None
    latency_ms: float | None  # measured only for candidates that passed
    max_abs: float | None
    cosine: float | None
    chosen: bool = False
    reason: str = ""  # why it failed, was not run, or cannot be chosen
    calibrated_on_generated: bool = False  # its build tuned itself on generated inputs
    accuracy_drop: float | None = None  # with labels: points of top-1 accuracy it lost

    @property
    def is_eligible(self) -> bool:
        return (self.status == Status.PASS and self.latency_ms is not None
                and not self.calibrated_on_generated)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "precision": self.precision,
                "status": self.status.value, "path": self.path,
                "latency_ms": self.latency_ms, "max_abs": self.max_abs,
                "cosine": self.cosine, "chosen": self.chosen, "reason": self.reason,
                "calibrated_on_generated": self.calibrated_on_generated,
                "accuracy_drop": self.accuracy_drop}


NOT_EVIDENCE = "not chosen: calibrated on generated inputs"
NOT_EVIDENCE_HINT = ("a build calibrated on generated inputs is a smoke test, not evidence: "
                     "pass real samples with --data or --calib-data, or ask for its "
                     "precision with --precision")


def fastest_passing(records: list[CandidateRecord]) -> int | None:
    """Index of the fastest candidate that passed its budget and may be chosen, or None."""
    passing = [(r.latency_ms, i) for i, r in enumerate(records) if r.is_eligible]
    return min(passing)[1] if passing else None
