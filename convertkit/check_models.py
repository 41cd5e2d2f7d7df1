"""`convertkit check A B`: compare two runnable models on the same inputs.

A is the reference, B the candidate. Either may be an ONNX model (fp32, fp16 or
quantised), an OpenVINO IR (.xml with its .bin), a source model (any SOURCE `convert`
takes, lowered by its adapter in a child process) or an output folder written by
`convert` (recognised by its report.json): as A it gives its recorded check inputs and
reference outputs, as B every artifact in it is checked.

When a candidate fails and both sides can show their intermediate tensors, the first
diverging node is found (checker/localize.py), mapped back to the source where the
exporter recorded it (checker/source_map.py), and with an output folder a minimal repro is
written (checker/repro.py). The result is the same `Report` that `convert` returns, with
the same exit codes; OUT is written whole or not at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from convertkit import __version__
from convertkit.adapters import LowerRequest, detect_framework, lower, merge_specs
from convertkit.build_steps import BUILD_LOG
from convertkit.checker.budgets import (
    CHECK_RULE,
    BudgetTable,
    budget_for,
    budget_table_dict,
    load_budget_file,
)
from convertkit.checker.diagnosis import TensorSide, localize, repro_dirs, run_all
from convertkit.checker.localize import TensorSource
from convertkit.checker.metrics import worst_sample
from convertkit.checker.runners import (
    OnnxTensors,
    OpenVinoTensors,
    openvino_input_specs,
)
from convertkit.checker.samples import (
    check_readable,
    evaluation_samples,
    load_samples,
    save_labels,
    save_samples,
)
from convertkit.checker.verdict import Evidence, judge
from convertkit.errors import ConvertkitError, UsageError
from convertkit.ir.external_data import checked_external_files
from convertkit.ir.info import describe
from convertkit.ir.io import load_model
from convertkit.isolation import Worker, run_limits
from convertkit.options import ConvertOptions, options_from, parse_precision
from convertkit.platforms import Runner
from convertkit.registry import load_adapter
from convertkit.reports import write_reports
from convertkit.reports.record import ArtifactResult, Report, error_record
from convertkit.spec import (
    InputSpec,
    Precision,
    SourceRef,
    Status,
    existing_file,
)
from convertkit.staging import check_output_folder, protected_inputs, relocate, staged_folder

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
REPRO_DIR = Path("repro")
# Precisions from strictest to loosest budget: a comparison takes the looser of the two.
_LOOSENESS = (Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8)
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                  "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearAdd",
                  "QLinearMul", "MatMulNBits", "QGemm"}


@dataclass(frozen=True)
class ModelRef:
    """One side of a comparison, as the user named it."""

    text: str
    kind: str  # "onnx" | "openvino" | "folder" | "source"
    path: Path | None
    source: SourceRef | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind,
                "path": str(self.path) if self.path else None}


def identify(text: str | Path) -> ModelRef:
    """What kind of model ``text`` names, judged from the file system only."""
    text = str(text)
    path = Path(text)
    if path.is_dir() and (path / REPORT_FILE).is_file():
        return ModelRef(text, "folder", path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        checked_external_files(path)  # before ONNX Runtime or a copy follows a location
        return ModelRef(text, "onnx", path)
    if path.suffix.lower() == ".xml" and path.is_file():
        if not path.with_suffix(".bin").is_file():
            raise UsageError(f"{path} has no {path.with_suffix('.bin').name} beside it",
                             hint="an OpenVINO IR is an .xml and a .bin of the same name; "
                             "keep them together", code="source-not-found")
        return ModelRef(text, "openvino", path)
    if path.is_dir() and not any(path.iterdir()):
        raise UsageError(f"{path} is an empty folder",
                         hint="pass a model file, or a folder written by `convertkit convert`",
                         code="source-not-found")
    source = SourceRef.parse(text)
    source.validate()
    return ModelRef(text, "source", source.path, source)


@dataclass
class _Reference:
    evidence: Evidence  # the samples, the reference's outputs on each, their labels
    record: dict[str, Any]
    feeds_note: str
    precision: Precision = Precision.FP32
    tensors: Callable[[], TensorSource] | None = None  # for localisation
    onnx_path: Path | None = None  # for the repro


@dataclass
class _Candidate:
    target: str
    path: str | None  # as shown in the report
    precision: Precision
    open_runner: Callable[[], Any]  # -> a Runner, or None when it cannot run here
    tensors: Callable[[], TensorSource] | None = None
    model_path: Path | None = None  # an ONNX or IR model the repro can cut
    notes: tuple[str, ...] = field(default=())


def check_models(
    reference: str | Path,
    candidate: str | Path,
    out: str | Path | None = None,
    options: ConvertOptions | None = None,
    *,
    force: bool = False,
    show_framework_output: bool = False,
    progress: Callable[[str], None] = lambda message: None,
    **values: Any,
) -> Report:
    """Compare ``candidate`` with ``reference`` on the same inputs under a budget.

    ``options`` (or keyword arguments named after its fields) as for ``convert``, less
    what only convert takes (targets, optimize). Without ``out`` nothing is written (no
    repro either). Raises UsageError for bad arguments (nothing is written); every later
    failure is recorded in the report.
    """
    options = options_from(options, values, command="check")
    side_a, side_b = identify(reference), identify(candidate)
    existing_file(options.data, "--data", folder_too=True)
    existing_file(options.labels, "--labels")
    for path, option in ((options.data, "--data"), (options.labels, "--labels")):
        check_readable(path, option)
    existing_file(options.weights, "--weights")
    budget_file = options.budget_file
    table = load_budget_file(budget_file) if budget_file is not None else None
    formats = options.report_formats
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_output_folder(out_path, force, protected_inputs(
            [side.source or side.path for side in (side_a, side_b)], options))
    for side in (side_a, side_b):
        if side.kind == "source":
            _framework_of(side, options)  # an undetectable source fails before any work

    with run_limits(options.timeout, options.memory_mb), \
            _workspace(out_path, force) as work, \
            _isolated_runs(work, out_path, show_framework_output):
        check_record: dict[str, Any] = {
            "rule": CHECK_RULE, "budgets": budget_table_dict(table),
            "budget_file": str(budget_file) if budget_file is not None else None,
            "candidate": side_b.to_dict(),
        }
        try:
            progress(f"running the reference {side_a.text}")
            ref = _resolve_reference(side_a, work, options, show_framework_output, out_path)
        except UsageError:
            raise
        except ConvertkitError as error:
            report = Report(side_a.to_dict(), check_record, error=error_record(error),
                            version=__version__, command="check")
            if out_path is not None:
                report = relocate(report, work, out_path)
                write_reports(report, work, formats)
            return report
        evidence = ref.evidence
        save_samples(work / "check" / "inputs.npz", evidence.samples)
        save_samples(work / "check" / "reference.npz", evidence.references)
        check_record.update({"inputs": ref.feeds_note, "feeds": "check/inputs.npz",
                             "reference": "check/reference.npz",
                             "samples": {"evaluation": {"source": ref.feeds_note,
                                                        "count": len(evidence.samples)}}})
        if evidence.labels is not None:
            save_labels(work / "check" / "labels.npz", evidence.labels)
            check_record["labels"] = "check/labels.npz"
        candidates, notes = _candidates(side_b, work, options, show_framework_output,
                                        out_path)
        if notes:
            check_record["notes"] = notes
        results = []
        folders = repro_dirs([c.target for c in candidates])
        reference_values: dict[int, dict[str, np.ndarray] | str] = {}
        for candidate_side in candidates:
            progress(f"checking {candidate_side.target}")
            started = time.perf_counter()
            result, outputs = _run_and_compare(candidate_side, ref, options, table)
            if result.status == Status.FAIL and options.localize:
                progress(f"localising the mismatch of {candidate_side.target}")
                worst = worst_sample(result.outputs)
                if worst not in reference_values and ref.tensors is not None:
                    reference_values[worst] = run_all(ref.tensors(), evidence.samples[worst])
                folder = folders[candidate_side.target]
                result = localize(
                    result, TensorSide(ref.tensors, ref.onnx_path),
                    TensorSide(candidate_side.tensors, candidate_side.model_path),
                    evidence.samples[worst], reference_values.get(worst, ""),
                    outputs[worst] if outputs else None, work / folder,
                    out_path / folder if out_path is not None else None)
            results.append(replace(result, duration_s=round(time.perf_counter() - started, 3)))
        report = Report(ref.record, check_record, tuple(results), version=__version__,
                        command="check")
        if out_path is not None:
            # Every path the report names is where the file is once OUT has landed.
            report = relocate(report, work, out_path)
            write_reports(report, work, formats)
    return report


# --- the reference ---------------------------------------------------------------------

def _resolve_reference(side: ModelRef, work: Path, options: ConvertOptions, echo: bool,
                       out_path: Path | None) -> _Reference:
    record = side.to_dict()
    specs = options.inputs
    if side.kind == "folder":
        return _folder_reference(side, record, options)
    if side.kind == "source":
        lowered = _lower(side, "reference", work, options, echo, out_path)
        record.update({"framework": lowered.framework, "exporter": lowered.exporter,
                       "onnx": str(lowered.onnx_path.relative_to(work)),
                       "outputs": list(lowered.output_names),
                       "inputs": [s.to_dict() for s in lowered.inputs]})
        check = lowered.check
        return _Reference(
            Evidence.load(check.feeds_path, check.reference_path, check.labels_path), record,
            check.samples["evaluation"]["source"],
            tensors=lambda: OnnxTensors(lowered.onnx_path), onnx_path=lowered.onnx_path)
    assert side.path is not None
    path = side.path
    if side.kind == "onnx":
        model = load_model(path, load_external_data=False)
        model_specs = _merge(describe(model).input_specs(), specs, side.text)
        samples, labels, _ = evaluation_samples(model_specs, model, options.data,
                                                   options.labels)
        with _isolated("ort", path, side.text) as runner:
            outputs = _run_reference(runner, samples.samples, options, model_specs)
        record.update({"precision": detect_precision(path).value,
                       "inputs": [s.to_dict() for s in model_specs],
                       "outputs": list(outputs[0])})
        return _Reference(Evidence.of(samples.samples, outputs, labels), record, samples.origin,
                          detect_precision(path), lambda: OnnxTensors(path), path)
    model_specs = _merge(openvino_input_specs(path), specs, side.text)
    samples, labels, _ = evaluation_samples(model_specs, None, options.data, options.labels)
    with _isolated("openvino", path, side.text) as runner:
        outputs = _run_reference(runner, samples.samples, options, model_specs)
    record.update({"inputs": [s.to_dict() for s in model_specs], "outputs": list(outputs[0])})
    return _Reference(Evidence.of(samples.samples, outputs, labels), record, samples.origin,
                      detect_precision(path), lambda: OpenVinoTensors(path))


def _folder_reference(side: ModelRef, record: dict[str, Any],
                      options: ConvertOptions) -> _Reference:
    assert side.path is not None
    written = _read_folder_report(side.path)
    source = written.get("source") or {}
    check_info = written.get("check") or {}
    hub = side.path / ((source.get("onnx") or {}).get("path") or "onnx/model.onnx")
    record.update({"framework": source.get("framework"), "exporter": source.get("exporter"),
                   "written_by": "convertkit convert", "source": source.get("text"),
                   "onnx": str(hub)})
    tensors = (lambda: OnnxTensors(hub)) if hub.is_file() else None
    if options.data is None:
        feeds_file = side.path / check_info.get("feeds", "check/inputs.npz")
        reference_file = side.path / check_info.get("reference", "check/reference.npz")
        labels_file = side.path / check_info["labels"] if check_info.get("labels") else None
        if not feeds_file.is_file() or not reference_file.is_file():
            raise UsageError(f"{side.path} has no recorded check inputs and reference outputs",
                             hint="pass a folder written by `convertkit convert`, or --data",
                             code="bad-folder")
        evidence = Evidence.load(feeds_file, reference_file,
                                 labels_file if labels_file and options.labels is None
                                 else None)
        return _Reference(evidence, record, f"recorded by convert in {feeds_file}",
                          tensors=tensors, onnx_path=hub if tensors else None)
    if tensors is None:
        raise UsageError(f"{side.path} has no ONNX model to run on --data",
                         hint="drop --data to use the inputs recorded in the folder",
                         code="bad-folder")
    model = load_model(hub, load_external_data=False)
    samples, labels, _ = evaluation_samples(describe(model).input_specs(), model, options.data,
                                            options.labels)
    with _isolated("ort", hub, str(hub)) as runner:
        outputs = runner.run_samples(samples.samples)
    record["note"] = (f"with --data the reference is the folder's ONNX model {hub}, not the "
                      "source framework's recorded outputs")
    return _Reference(Evidence.of(samples.samples, outputs, labels), record, samples.origin,
                      tensors=tensors, onnx_path=hub)


def _run_reference(runner, samples: Sequence[Mapping[str, np.ndarray]],
                   options: ConvertOptions, model_specs: Sequence[InputSpec],
                   ) -> list[dict[str, np.ndarray]]:
    with runner:
        try:
            return runner.run_samples(samples)
        except ConvertkitError as exc:
            if options.inputs or options.data:
                raise UsageError(
                    f"the reference model rejects the inputs: {exc.message}",
                    hint="check -i/--data against the model's inputs: "
                    + ", ".join(str(s) for s in model_specs), code="shape-rejected") from exc
            raise


def _merge(declared: Sequence[InputSpec], user: Sequence[InputSpec],
           where: str) -> list[InputSpec]:
    return merge_specs(declared, user, where)


# --- the candidates --------------------------------------------------------------------

def _candidates(side: ModelRef, work: Path, options: ConvertOptions, echo: bool,
                out_path: Path | None) -> tuple[list[_Candidate], list[str]]:
    path = side.path
    if side.kind == "onnx":
        assert path is not None
        return [_Candidate("onnx", side.text, detect_precision(path),
                           lambda: _isolated("ort", path, side.text),
                           lambda: OnnxTensors(path), path)], []
    if side.kind == "openvino":
        assert path is not None
        return [_Candidate("openvino", side.text, detect_precision(path),
                           lambda: _isolated("openvino", path, side.text),
                           lambda: OpenVinoTensors(path), path,
                           ("OpenVINO CPU, f32 inference precision hint",))], []
    if side.kind == "folder":
        assert path is not None
        return _folder_candidates(path)
    return [_source_candidate(side, work, options, echo, out_path)], []


def _source_candidate(side: ModelRef, work: Path, options: ConvertOptions, echo: bool,
                      out_path: Path | None) -> _Candidate:
    state: dict[str, Any] = {}
    # The candidate runs on the reference's samples, recorded by then.
    options = replace(options, data=work / "check" / "inputs.npz", labels=None)

    def open_runner():
        lowered = _lower(side, "candidate", work, options, echo, out_path)
        state["lowered"] = lowered
        return _RecordedOutputs(load_samples(lowered.reference_path))

    def tensors():
        return OnnxTensors(state["lowered"].onnx_path)

    return _Candidate(_framework_of(side, options), side.text, Precision.FP32,
                      open_runner, tensors,
                      notes=("the candidate's outputs come from its own framework; its ONNX "
                             "export stands in for it when localising",))


class _IsolatedRunner(Runner):
    """A model run in the check's worker process (build_steps.run_samples_step): a runtime
    that crashes or hangs on the model is that model's error, not the end of the check."""

    def __init__(self, spec: dict[str, str], what: str) -> None:
        self.spec = spec
        self.what = what

    def __enter__(self) -> _IsolatedRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_samples([feeds])[0]

    def run_samples(self, samples: Sequence[Mapping[str, np.ndarray]],
                    ) -> list[dict[str, np.ndarray]]:
        worker, scratch = _RUNS.get()
        feeds, outputs = scratch / "feeds.npz", scratch / "outputs.npz"
        save_samples(feeds, samples)
        try:
            ran = worker.call("convertkit.build_steps:run_samples_step",
                              {**self.spec, "samples": str(feeds), "outputs": str(outputs)},
                              what=f"running {self.what}")
            if not ran["ran"]:
                raise _NoRuntime
            return [dict(sample) for sample in load_samples(outputs)]
        finally:
            feeds.unlink(missing_ok=True)
            outputs.unlink(missing_ok=True)


class _NoRuntime(Exception):
    """Nothing here runs the candidate: it is reported as built, not run."""


def _isolated(kind: str, path: Path, what: str, target: str = "",
              precision: Precision = Precision.FP32) -> _IsolatedRunner:
    return _IsolatedRunner({"kind": kind, "path": str(path), "target": target,
                            "precision": precision.value}, what)


# The worker that runs the models of the check under way, and its scratch folder.
_RUNS: contextvars.ContextVar[tuple[Worker, Path]] = contextvars.ContextVar("check_runs")


@contextlib.contextmanager
def _isolated_runs(work: Path, out: Path | None, echo: bool) -> Iterator[None]:
    scratch = work / ".runs"
    scratch.mkdir(parents=True, exist_ok=True)
    shown = (str(out / BUILD_LOG) if out is not None else
             "the run log (pass -o to keep it, or --debug to see it live)")
    with Worker(work / BUILD_LOG, echo=echo, log_shown_as=shown) as worker:
        token = _RUNS.set((worker, scratch))
        try:
            yield
        finally:
            _RUNS.reset(token)
            shutil.rmtree(scratch, ignore_errors=True)


class _RecordedOutputs(Runner):
    """A runner over outputs a source framework already computed on the check samples."""

    def __init__(self, outputs: list[dict[str, np.ndarray]]) -> None:
        self.outputs = outputs

    def __enter__(self) -> _RecordedOutputs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.outputs[0]

    def run_samples(self, samples: Sequence[Mapping[str, np.ndarray]],
                    ) -> list[dict[str, np.ndarray]]:
        return self.outputs


def _folder_candidates(folder: Path) -> tuple[list[_Candidate], list[str]]:
    written = _read_folder_report(folder)
    candidates, notes = [], []
    for artifact in written.get("artifacts") or []:
        relative = artifact.get("path")
        target = str(artifact.get("target", "?"))
        if not relative:
            notes.append(f"{target}: no artifact in {folder} ({artifact.get('status')}); "
                         "not checked")
            continue
        path = folder / relative
        recorded = artifact.get("precision")
        precision = parse_precision(recorded) if recorded else detect_precision(path)
        candidates.append(_folder_candidate(target, path, precision))
    if not candidates:
        raise UsageError(f"{folder} holds no artifacts to check",
                         hint="pass a folder written by a successful `convertkit convert`",
                         code="bad-folder")
    return candidates, notes


def _folder_candidate(target: str, path: Path, precision: Precision) -> _Candidate:
    suffix = path.suffix.lower()
    tensors: Callable[[], TensorSource] | None = None
    if suffix == ".onnx":
        tensors = lambda: OnnxTensors(path)  # noqa: E731
    elif suffix == ".xml":
        tensors = lambda: OpenVinoTensors(path)  # noqa: E731

    def open_runner():
        return _isolated("platform", path, f"{target} {path}", target, precision)

    return _Candidate(target, str(path), precision, open_runner, tensors,
                      path if suffix in (".onnx", ".xml") else None)


def _read_folder_report(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / REPORT_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {folder / REPORT_FILE}: {exc}",
                         hint="pass a folder written by `convertkit convert`",
                         code="bad-folder") from exc
    if not isinstance(data, dict) or "artifacts" not in data:
        raise UsageError(f"{folder / REPORT_FILE} is not a convertkit report",
                         hint="pass a folder written by `convertkit convert`", code="bad-folder")
    return data


# --- checking one candidate --------------------------------------------------------------

def _run_and_compare(candidate: _Candidate, ref: _Reference, options: ConvertOptions,
                     table: BudgetTable | None,
                     ) -> tuple[ArtifactResult, list[dict[str, np.ndarray]] | None]:
    precision = options.precision or _looser(ref.precision, candidate.precision)
    budget = budget_for(precision, options.atol, options.rtol, table,
                        options.max_accuracy_drop)
    evidence = ref.evidence
    try:
        runner = candidate.open_runner()
        if runner is None:
            return ArtifactResult(candidate.target, Status.BUILT, candidate.path,
                                  precision.value, budget,
                                  notes=(*candidate.notes, "not run: no runtime for it here")
                                  ), None
        with runner:
            outputs = runner.run_samples(evidence.samples)
    except _NoRuntime:
        return ArtifactResult(candidate.target, Status.BUILT, candidate.path,
                              precision.value, budget,
                              notes=(*candidate.notes, "not run: no runtime for it here")), None
    except ConvertkitError as error:
        log.debug("candidate %s failed", candidate.target, exc_info=True)
        return ArtifactResult(candidate.target, Status.ERROR, candidate.path,
                              precision.value, budget, notes=candidate.notes,
                              error=error_record(error)), None
    aligned = [align_outputs(reference, got) for reference, got in
               zip(evidence.references, outputs, strict=True)]
    verdict = judge([outputs for outputs, _ in aligned], evidence, budget)
    note = aligned[0][1] if aligned else ""
    notes = (*candidate.notes, note) if note else candidate.notes
    return ArtifactResult(candidate.target, verdict.status, candidate.path, precision.value,
                          budget, verdict.metrics, notes, samples=len(evidence.samples),
                          accuracy=verdict.accuracy.to_dict() if verdict.accuracy else None,
                          ), outputs


def align_outputs(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                  ) -> tuple[dict[str, np.ndarray], str]:
    """The candidate's outputs under the reference's names: by name when they share them,
    else by position when both have as many outputs."""
    if all(name in outputs for name in reference) or len(outputs) != len(reference):
        return dict(outputs), ""
    pairs = list(zip(reference, outputs, strict=True))
    aligned = {ref_name: outputs[out_name] for ref_name, out_name in pairs}
    mapping = ", ".join(f"{r} = {o}" for r, o in pairs if r != o)
    return aligned, f"outputs matched by position ({mapping})"


# --- precision --------------------------------------------------------------------------

def detect_precision(path: Path) -> Precision:
    """The lowest precision a model computes in, read from the file: QDQ or integer ops
    mean int8; float16/bfloat16 tensors mean fp16/bf16. An OpenVINO IR runs in f32 here
    (its fp16-compressed weights are decompressed) unless it holds FakeQuantize ops."""
    if path.suffix.lower() == ".xml":
        try:
            layers = {layer.get("type") for layer in ET.parse(path).getroot().iter("layer")}
        except (ET.ParseError, OSError):
            return Precision.FP32
        return Precision.INT8 if "FakeQuantize" in layers else Precision.FP32
    if path.suffix.lower() != ".onnx":
        return Precision.FP32
    model = load_model(path, load_external_data=False)
    graph = model.graph
    if any(node.op_type in _QUANTIZED_OPS for node in graph.node):
        return Precision.INT8
    types = {t.data_type for t in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        types.add(value.type.tensor_type.elem_type)
    for node in graph.node:
        if node.op_type == "Cast":
            types.update(a.i for a in node.attribute if a.name == "to")
    if onnx.TensorProto.FLOAT16 in types:
        return Precision.FP16
    if onnx.TensorProto.BFLOAT16 in types:
        return Precision.BF16
    return Precision.FP32


def _looser(a: Precision, b: Precision) -> Precision:
    return max(a, b, key=_LOOSENESS.index)


# --- sources ----------------------------------------------------------------------------

def _framework_of(side: ModelRef, options: ConvertOptions) -> str:
    assert side.source is not None
    name = options.framework or detect_framework(side.source)
    load_adapter(name)
    return name


def _lower(side: ModelRef, role: str, work: Path, options: ConvertOptions, echo: bool,
           out_path: Path | None):
    assert side.source is not None
    name = _framework_of(side, options)
    log_path = work / "logs" / f"{role}.log"
    # A check builds nothing: every sample is graded, none calibrates.
    request = LowerRequest(side.source, options, work / role, calibrate=False)
    shown = (str(out_path / "logs" / f"{role}.log") if out_path is not None else
             "the export log (pass -o to keep it, or --debug to see it live)")
    # The export stays in OUT/<role>/: localisation reads its intermediate tensors.
    return lower(name, request, log_path=log_path, echo=echo, log_shown_as=shown)


# --- small helpers ----------------------------------------------------------------------

@contextlib.contextmanager
def _workspace(out: Path | None, force: bool) -> Iterator[Path]:
    if out is not None:
        with staged_folder(out, replace=force) as staging:
            yield staging
        return
    with tempfile.TemporaryDirectory(prefix="convertkit-check-") as scratch:
        yield Path(scratch)
