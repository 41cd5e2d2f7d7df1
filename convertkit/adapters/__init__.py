"""Adapters: one module per source framework, each behind the small ``Adapter`` interface.

An adapter runs in a child process (see ``lower``): it loads the source, exports ONNX,
plans the check samples from the exported graph (checker/samples.py: the evaluation
samples, and calibration samples kept apart from them), and records the reference outputs
the source framework itself computes for every evaluation sample. Everything it hands back
is plain data and files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from convertkit.checker.inputs import DEFAULT_SEED
from convertkit.checker.samples import (
    SamplePlan,
    plan_samples,
    read_arrays,
    save_labels,
    save_samples,
    specs_from_data,
)
from convertkit.errors import UsageError
from convertkit.isolation import run_in_child
from convertkit.options import ConvertOptions, source_specific_options
from convertkit.registry import adapter_names, load_adapter
from convertkit.spec import InputSpec, SourceRef


@dataclass(frozen=True)
class LowerRequest:
    """Everything an adapter needs, as plain data (it crosses a process boundary)."""

    source: SourceRef
    options: ConvertOptions  # the source options (inputs, weights, opset, ...) and --data
    work_dir: Path  # the adapter writes only here
    seed: int = DEFAULT_SEED
    # False for a check that builds nothing: every sample is evaluated, none calibrates.
    calibrate: bool = True

    @property
    def export_path(self) -> Path:
        return self.work_dir / "export.onnx"

    @property
    def feeds_path(self) -> Path:
        return self.work_dir / "inputs.npz"

    @property
    def reference_path(self) -> Path:
        return self.work_dir / "reference.npz"

    @property
    def calibration_path(self) -> Path:
        return self.work_dir / "calibration.npz"

    @property
    def labels_path(self) -> Path:
        return self.work_dir / "labels.npz"

    def to_dict(self) -> dict:
        return {"source": self.source.to_dict(), "options": self.options.to_dict(),
                "work_dir": str(self.work_dir), "seed": self.seed,
                "calibrate": self.calibrate}

    @staticmethod
    def from_dict(data: dict) -> LowerRequest:
        return LowerRequest(SourceRef.from_dict(data["source"]),
                            ConvertOptions.from_dict(data["options"]), Path(data["work_dir"]),
                            data["seed"], data["calibrate"])


@dataclass(frozen=True)
class CheckData:
    """The files of a run's check (checker/samples.py formats): the evaluation samples,
    the source's reference outputs for each, the calibration samples (never graded on),
    the evaluation samples' labels, and the record of what went where."""

    feeds_path: Path
    reference_path: Path
    calibration_path: Path
    labels_path: Path | None = None
    samples: dict = field(default_factory=dict)  # SamplePlan.record()
    # A decoder with a KV cache: the source's greedy decode (checker/decode.py).
    decode_path: Path | None = None

    def to_dict(self) -> dict:
        return {"feeds_path": str(self.feeds_path), "reference_path": str(self.reference_path),
                "calibration_path": str(self.calibration_path),
                "labels_path": str(self.labels_path) if self.labels_path else None,
                "samples": self.samples,
                "decode_path": str(self.decode_path) if self.decode_path else None}

    @staticmethod
    def from_dict(data: dict) -> CheckData:
        return CheckData(Path(data["feeds_path"]), Path(data["reference_path"]),
                         Path(data["calibration_path"]),
                         Path(data["labels_path"]) if data.get("labels_path") else None,
                         data.get("samples", {}),
                         Path(data["decode_path"]) if data.get("decode_path") else None)


@dataclass(frozen=True)
class Lowered:
    """What an adapter produced: the exported ONNX, and the check's samples and the
    source's reference outputs for them."""

    framework: str
    onnx_path: Path
    check: CheckData
    exporter: str  # which exporter produced the model, e.g. "torch.onnx (dynamo)"
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    # Inputs that are NCHW in the ONNX model and the check feeds, and that the source
    # framework was fed transposed to NHWC (--inputs-as-nchw).
    nchw_inputs: tuple[str, ...] = field(default=())
    # A model exported as several ONNX models (an encoder-decoder: "encoder", "decoder"),
    # each converted and checked on its own in OUT/NAME/, in order; the fields above then
    # describe the whole (framework, exporter, notes).
    parts: tuple[tuple[str, Lowered], ...] = field(default=())

    @property
    def feeds_path(self) -> Path:
        return self.check.feeds_path

    @property
    def reference_path(self) -> Path:
        return self.check.reference_path

    def to_dict(self) -> dict:
        return {
            "framework": self.framework, "onnx_path": str(self.onnx_path),
            "check": self.check.to_dict(), "exporter": self.exporter,
            "inputs": [s.to_dict() for s in self.inputs],
            "output_names": list(self.output_names), "notes": list(self.notes),
            "nchw_inputs": list(self.nchw_inputs),
            "parts": [[name, part.to_dict()] for name, part in self.parts],
        }

    @staticmethod
    def from_dict(data: dict) -> Lowered:
        return Lowered(
            framework=data["framework"], onnx_path=Path(data["onnx_path"]),
            check=CheckData.from_dict(data["check"]), exporter=data["exporter"],
            inputs=tuple(InputSpec.from_dict(s) for s in data["inputs"]),
            output_names=tuple(data["output_names"]), notes=tuple(data["notes"]),
            nchw_inputs=tuple(data.get("nchw_inputs", ())),
            parts=tuple((name, Lowered.from_dict(part))
                        for name, part in data.get("parts", ())),
        )


class Adapter(Protocol):
    """Concrete adapters subclass this protocol and so inherit its defaults."""

    name: ClassVar[str]
    # The source-specific options it takes (ConvertOptions fields whose flag says
    # ``source_specific``); a request that sets another is refused, exit 2.
    options: ClassVar[frozenset[str]] = frozenset()

    def detect(self, source: SourceRef) -> bool:
        """Whether ``source`` is this framework's, judged from file names and contents
        only: never by importing the framework."""
        ...

    def lower(self, request: LowerRequest) -> Lowered:
        """Load, export to ``request.export_path``, write check inputs and references.
        Runs in a child process."""
        ...


def lower(framework: str, request: LowerRequest, *, log_path: Path, echo: bool = False,
          timeout_s: float | None = None, log_shown_as: str | None = None) -> Lowered:
    """Run ``framework``'s adapter on ``request`` in a child process."""
    check_adapter_options(framework, request)
    result = run_in_child(
        "convertkit.adapters:lower_in_child",
        {"framework": framework, "request": request.to_dict()},
        what=f"the {framework} export",
        log_path=log_path, echo=echo, timeout_s=timeout_s, log_shown_as=log_shown_as,
    )
    return Lowered.from_dict(result)


def detect_framework(source: SourceRef) -> str:
    """The one framework whose adapter recognises ``source``, judged without importing any."""
    matches = [name for name in adapter_names() if load_adapter(name).detect(source)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(
            f"cannot tell which framework {source.text} belongs to",
            hint=f"pass -f with one of: {', '.join(adapter_names())}",
            code="unknown-framework",
        )
    raise UsageError(
        f"{source.text} could be {' or '.join(matches)}",
        hint=f"pass -f {matches[0]} (or another of: {', '.join(matches)})",
        code="ambiguous-framework",
    )


def check_adapter_options(framework: str, request: LowerRequest) -> None:
    """Refuse options the framework's adapter does not take, rather than ignore them."""
    accepted = load_adapter(framework).options
    for option, flag in source_specific_options().items():
        if getattr(request.options, option) and option not in accepted:
            takers = []
            for name in adapter_names():
                try:
                    other = load_adapter(name)
                except Exception:  # a broken third-party adapter must not hide this error
                    continue
                if option in other.options:
                    takers.append(name)
            raise UsageError(
                f"{flag} does not apply to {framework} sources",
                hint=f"drop {flag}" + (f"; it applies to {' and '.join(takers)} sources"
                                       if takers else ""),
                code="option-not-applicable")


def lower_in_child(payload: dict) -> dict:
    adapter = load_adapter(payload["framework"])
    request = LowerRequest.from_dict(payload["request"])
    request.work_dir.mkdir(parents=True, exist_ok=True)
    return adapter.lower(request).to_dict()


def plan_check_samples(request: LowerRequest, specs: Sequence[InputSpec],
                       onnx_path: Path | None) -> SamplePlan:
    """The run's samples (checker/samples.py): the evaluation samples the verdict rests
    on, the calibration samples kept apart from them, and the labels. Generated values
    keep token ids inside the embedding tables of the exported graph (``onnx_path``)."""
    model = None
    if onnx_path is not None:
        from convertkit.ir.io import load_model

        model = load_model(onnx_path, load_external_data=False)
    options = request.options
    return plan_samples(specs, model, data=options.data, calib_data=options.calib_data,
                        labels=options.labels, seed=request.seed, calibrate=request.calibrate)


def make_check_feeds(request: LowerRequest, specs: Sequence[InputSpec],
                     onnx_path: Path | None) -> dict[str, np.ndarray]:
    """The first evaluation sample: the example an exporter traces the model with."""
    return plan_check_samples(request, specs, onnx_path).evaluation.samples[0]


def save_check_data(request: LowerRequest, plan: SamplePlan,
                    references: Sequence[Mapping[str, np.ndarray]]) -> CheckData:
    """Write the plan's samples and the source's outputs for each evaluation sample into
    the request's work folder."""
    save_samples(request.feeds_path, plan.evaluation.samples)
    save_samples(request.reference_path, references)
    save_samples(request.calibration_path, plan.calibration.samples)
    labels_path = None
    if plan.labels is not None:
        save_labels(request.labels_path, plan.labels)
        labels_path = request.labels_path
    return CheckData(request.feeds_path, request.reference_path, request.calibration_path,
                     labels_path, plan.record())


def specs_from_request(request: LowerRequest, parameters: Sequence[str], *, model: str,
                       method: str) -> list[InputSpec]:
    """The inputs of a model that does not record them (a PyTorch module, a MindSpore
    Cell): ``-i``, else the arrays of ``--data``; each named after a parameter of its
    ``method`` (``parameters``, when known)."""
    specs = list(request.options.inputs)
    if not specs and request.options.data is not None:
        specs = specs_from_data(read_arrays(request.options.data)[0])
    if not specs:
        raise UsageError(
            f"{model} does not record its input shapes",
            hint=f"declare each input with -i NAME:DIMS[:DTYPE] ({method} takes: "
            f"{', '.join(parameters) or 'x'}), e.g. -i x:1x3x224x224, or pass --data FILE.npz",
            code="inputs-required")
    unknown = [s.name for s in specs if parameters and s.name not in parameters]
    if unknown and not is_renamed_single_input(specs, parameters):
        raise UsageError(
            f"input(s) {', '.join(unknown)} are not parameters of {method}("
            f"{', '.join(parameters)})",
            hint=f"name -i inputs after {method}'s parameters", code="unknown-input")
    return specs


def is_renamed_single_input(specs: Sequence[InputSpec], parameters: Sequence[str]) -> bool:
    """Whether a method of one parameter is given one input under another name. It takes
    it (``nn.Sequential``'s forward calls its parameter ``input``; exporters can name the
    ONNX input anything): the model is called positionally and the ONNX input carries the
    name given with -i."""
    return len(parameters) == 1 and len(specs) == 1 and specs[0].name != parameters[0]


def merge_specs(declared: Sequence[InputSpec], user: Sequence[InputSpec],
                where: str) -> list[InputSpec]:
    """The model's own input specs with the user's ``-i`` taking precedence by name."""
    known = {s.name for s in declared}
    unknown = [s.name for s in user if s.name not in known]
    if unknown:
        raise UsageError(
            f"-i names input(s) {', '.join(unknown)} that {where} does not have "
            f"(its inputs: {', '.join(known) or 'none'})",
            hint="use the model's input names with -i",
            code="unknown-input",
        )
    override = {s.name: s for s in user}
    return [override.get(s.name, s) for s in declared]
