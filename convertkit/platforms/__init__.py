"""Platforms: one class per toolchain. Each states what it accepts, builds an artifact from
the hub ONNX model inside its own folder, and opens a runner for the check when the
artifact can run on this machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import onnx

from convertkit.errors import ConversionError
from convertkit.ir.info import OnnxInfo
from convertkit.ir.preflight import Preflight, Requirements, preflight
from convertkit.spec import Family, InputSpec, Precision, TargetSpec


@dataclass(frozen=True)
class Problem:
    """One reason a platform cannot take a model as it is."""

    message: str


@dataclass(frozen=True)
class BuildOptions:
    """What the user asked of every build."""

    precision: Precision | None = None  # None: the platform's first (default) precision
    calibration_path: Path | None = None  # .npz of inputs to calibrate int8 with
    calibration_is_real: bool = False  # from --data; generated values calibrate worse


@dataclass(frozen=True)
class Artifact:
    """What a platform built. Paths are inside the platform's own output folder."""

    target: str
    path: Path
    precision: Precision
    files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = field(default=())
    # Only the inputs for a toolchain that is not installed here (status `prepared`).
    is_prepared_only: bool = False
    # Where the check runs it, e.g. "the rknn-toolkit2 2.5.0 simulator"; "" for the
    # runtime the platform is named after.
    checked_in: str = ""


class Runner(Protocol):
    """A context manager: acquires the runtime on enter, releases it on exit."""

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class LayerAnalysis(Protocol):
    """A runner that can also say, after a failed check, which of its layers diverge most
    (the toolkit's own per-layer analysis, e.g. rknn-toolkit2's accuracy_analysis)."""

    def layer_analysis(self, feeds: Mapping[str, np.ndarray]) -> list[dict]:
        """Rows such as {"layer": ..., "op": ..., "cosine": ...}, worst first."""
        ...


class Platform(Protocol):
    name: ClassVar[str]  # the entry-point name: "ort", "rknn"
    family: ClassVar[Family]
    is_family_default: ClassVar[bool]  # what `-t FAMILY` alone picks
    description: ClassVar[str]
    requirements: ClassVar[Requirements]  # what it accepts: opsets, ops, shapes, dtypes
    # What it builds; the first is the default, unless the platform also has
    # ``default_precision(target) -> Precision`` (a device that computes int8 only).
    precisions: ClassVar[tuple[Precision, ...]]

    @classmethod
    def is_available(cls) -> bool:
        """Whether this platform's runtime or toolchain is installed, without importing it."""
        ...

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        """Problems beyond ``requirements`` (a device name it does not know...)."""
        ...

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        """Build inside ``out_dir`` at ``options.precision`` (one of ``precisions``)."""
        ...

    def open(self, artifact: Artifact) -> Runner | None:
        """A runner for the check, or None when the artifact cannot run here."""
        ...


def plan_target(platform: Platform, target: TargetSpec, model: onnx.ModelProto, info: OnnxInfo,
                inputs: Sequence[InputSpec] = (), opset: int | None = None) -> Preflight:
    """The target's verdict on ``model``: its declared requirements, then its own checks."""
    plan = preflight(model, info, platform.requirements, opset=opset, inputs=inputs)
    extra = tuple(problem.message for problem in platform.preflight(info, target))
    return replace(plan, problems=plan.problems + extra) if extra else plan


def build_precision(platform: Platform, target: TargetSpec, options: BuildOptions,
                    why_not: str = "") -> Precision:
    """The precision a build makes: the one asked for, else the platform's default. One
    it does not build is a ConversionError (``why_not``: what the hint adds)."""
    precision = options.precision or platform.precisions[0]
    if precision not in platform.precisions:
        raise ConversionError(
            f"{target} does not build {precision.value}",
            hint=f"--precision {' or '.join(p.value for p in platform.precisions)}"
                 + (f" ({why_not})" if why_not else ""),
            code="unsupported-precision")
    return precision


def is_installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
