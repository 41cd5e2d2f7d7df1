"""Platforms: one class per toolchain. Each states what it accepts, builds an artifact from
the hub ONNX model inside its own folder, and opens a runner for the check when the
artifact can run on this machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import onnx

from convertkit.errors import UsageError
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

    precision: Precision | None = None  # None: the target's default precision
    # Samples (checker/samples.py) to calibrate int8 with and to tune any search on
    # (fp16 keep lists); never the samples the check grades.
    calibration_path: Path | None = None
    calibration_is_real: bool = False  # from --data/--calib-data; generated ones are not
    # The samples the check will run, for a toolkit that can only simulate a model in the
    # process that built it (rknn-toolkit2): never to tune anything on.
    evaluation_path: Path | None = None
    # int8: nodes of the ONNX model (by name) to keep out of quantisation, in fp32
    # (mixed_precision.py finds them); only platforms with keeps_nodes_in_fp32 take them.
    keep_fp32: tuple[str, ...] = ()


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
    # The build tuned itself on the calibration samples (int8 ranges, an fp16 keep list).
    calibrated: bool = False
    # int8 with nodes kept in fp32: the build's own way of saying which (e.g.
    # {"onnxruntime": {"nodes_to_exclude": [...]}}), for mixed_precision.json.
    override: Mapping[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """A context manager: acquires the runtime on enter, releases it on exit. Concrete
    runners subclass this protocol and so inherit its defaults."""

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def run_samples(self, samples: Sequence[Mapping[str, np.ndarray]],
                    ) -> list[dict[str, np.ndarray]]:
        """The outputs of every sample, in order. A simulator that starts a process per
        run overrides this to run them all at once."""
        return [self.run(feeds) for feeds in samples]

    def layer_analysis(self, feeds: Mapping[str, np.ndarray]) -> list[dict]:
        """After a failed check, the toolkit's own view of which layers diverge most
        (rknn-toolkit2's accuracy_analysis): rows such as {"layer": ..., "op": ...,
        "cosine": ...}, worst first. Empty where the toolkit has no such analysis."""
        return []


@dataclass(frozen=True)
class TargetPrecisions:
    """What a platform builds for one target's device, its default first, and why the
    device allows fewer than the platform's ``precisions`` (empty when it does not)."""

    builds: tuple[Precision, ...]
    reason: str = ""


class Platform(Protocol):
    """Concrete platforms subclass this protocol and so inherit its defaults."""

    name: ClassVar[str]  # the entry-point name: "ort", "rknn"
    family: ClassVar[Family]
    is_family_default: ClassVar[bool]  # what `-t FAMILY` alone picks
    description: ClassVar[str]
    requirements: ClassVar[Requirements]  # what it accepts: opsets, ops, shapes, dtypes
    precisions: ClassVar[tuple[Precision, ...]]  # what it builds on some device; default first
    # Without its toolchain it still writes the inputs for that toolchain on another
    # machine (status `prepared`); `convertkit targets` then says `prepares`.
    prepares_when_missing: ClassVar[bool] = False
    # Its int8 builds can keep named ONNX nodes in fp32 (BuildOptions.keep_fp32), so a
    # failed int8 build is retried with mixed precision (mixed_precision.py).
    keeps_nodes_in_fp32: ClassVar[bool] = False
    # The precision those kept nodes run at ("fp32"; RKNN's hybrid quantisation: "fp16").
    kept_precision: ClassVar[str] = "fp32"
    # What proxy_runner runs, in words, for mixed_precision.json's "judged_on" and the notes.
    proxy_description: ClassVar[str] = ""

    @classmethod
    def is_available(cls) -> bool:
        """Whether this platform's runtime or toolchain is installed, without importing it."""
        ...

    def precisions_for(self, target: TargetSpec) -> TargetPrecisions:
        """What it builds for ``target``'s device (an int8-only chip: int8 alone)."""
        return TargetPrecisions(self.precisions)

    def kept_precision_for(self, target: TargetSpec) -> str:
        """The precision kept nodes run at on ``target``'s device (``kept_precision``
        unless the device decides: a Sophgo chip without fp16 keeps them in fp32)."""
        return self.kept_precision

    def preflight(self, model: OnnxInfo, target: TargetSpec) -> list[Problem]:
        """Problems beyond ``requirements`` (a device name it does not know...)."""
        return []

    def build(self, onnx_path: Path, target: TargetSpec, out_dir: Path,
              options: BuildOptions) -> Artifact:
        """Build inside ``out_dir`` at ``options.precision`` (None: the target's default)."""
        ...

    def open(self, artifact: Artifact) -> Runner | None:
        """A runner for the check, or None when the artifact cannot run here."""
        ...

    def proxy_runner(self, artifact: Artifact) -> Runner | None:
        """Where ``open`` returns None: a runner for a stand-in that computes what the
        artifact computes (gpu:tensorrt int8: ONNX Runtime running the QDQ model the engine
        is built from), described by ``proxy_description``; None (the default) when there
        is none. It only steers tuning on the calibration samples (whether an int8 build
        needs mixed precision, and the mixed-precision search's trials); it never judges
        the artifact, whose status stays `built` or `prepared`. ``artifact`` may carry only
        its target, path and precision."""
        return None


def plan_target(platform: Platform, target: TargetSpec, model: onnx.ModelProto, info: OnnxInfo,
                inputs: Sequence[InputSpec] = (), opset: int | None = None) -> Preflight:
    """The target's verdict on ``model``: its declared requirements, then its own checks."""
    plan = preflight(model, info, platform.requirements, opset=opset, inputs=inputs)
    extra = tuple(problem.message for problem in platform.preflight(info, target))
    return replace(plan, problems=plan.problems + extra) if extra else plan


def choose_precision(platform: Platform, target: TargetSpec,
                     wanted: Precision | None) -> Precision:
    """The precision ``platform`` builds for ``target``: ``wanted``, else the device's
    default. One the device does not build is a UsageError, raised before anything is
    built (the pipeline asks for every target first)."""
    allowed = platform.precisions_for(target)
    if wanted is None:
        return allowed.builds[0]
    if wanted not in allowed.builds:
        names = [p.value for p in allowed.builds]
        raise UsageError(
            f"{target} does not build {wanted.value}"
            + (f": {allowed.reason}" if allowed.reason else ""),
            hint=f"pass --precision {' or '.join(names)}" + ("" if len(names) == 1 else
                                                              ", or drop --precision"),
            code="precision-unsupported")
    return wanted


def build_precision(platform: Platform, target: TargetSpec, options: BuildOptions) -> Precision:
    """The precision a build makes: ``options.precision`` (checked), else the default."""
    return choose_precision(platform, target, options.precision)


def is_installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
