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
import json
import logging
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
from convertkit.checker.budgets import (
    CHECK_RULE,
    BudgetTable,
    budget_for,
    budget_table_dict,
    load_budget_file,
)
from convertkit.checker.inputs import (
    DEFAULT_SEED,
    generate_feeds,
    load_arrays,
    read_data,
    save_arrays,
    select_data,
)
from convertkit.checker.localize import Localization, TensorSource, locate_divergence
from convertkit.checker.metrics import compare_outputs
from convertkit.checker.repro import ReproError, write_repro
from convertkit.checker.runners import (
    OnnxTensors,
    OpenVinoTensors,
    openvino_input_specs,
    openvino_runner,
)
from convertkit.errors import ConvertkitError, UsageError
from convertkit.ir.info import describe
from convertkit.ir.io import load_model
from convertkit.options import ConvertOptions, options_from, parse_precision
from convertkit.platforms import Artifact
from convertkit.platforms.ort_runner import OrtRunner
from convertkit.registry import load_adapter, resolve_target
from convertkit.reports import write_reports
from convertkit.reports.record import ArtifactResult, Report, error_record
from convertkit.spec import (
    InputSpec,
    Precision,
    SourceRef,
    Status,
    TargetSpec,
    existing_file,
)
from convertkit.staging import check_output_folder, staged_folder

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
    feeds: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    record: dict[str, Any]
    feeds_note: str
    precision: Precision = Precision.FP32
    tensors: TensorSource | None = None  # for localisation
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
    data_path = existing_file(options.data, "--data")
    existing_file(options.weights, "--weights")
    budget_file = options.budget_file
    table = load_budget_file(budget_file) if budget_file is not None else None
    formats = options.report_formats
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        check_output_folder(out_path, force, [side_a.path, side_b.path, data_path,
                                              options.weights])
    for side in (side_a, side_b):
        if side.kind == "source":
            _framework_of(side, options)  # an undetectable source fails before any work

    with _workspace(out_path) as work:
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
                write_reports(report, work, formats)
            return report
        save_arrays(work / "check" / "inputs.npz", ref.feeds)
        save_arrays(work / "check" / "reference.npz", ref.outputs)
        check_record.update({"inputs": ref.feeds_note, "feeds": "check/inputs.npz",
                             "reference": "check/reference.npz"})
        candidates, notes = _candidates(side_b, work, options, show_framework_output,
                                        out_path)
        if notes:
            check_record["notes"] = notes
        results = []
        repro_dirs = _repro_dirs([c.target for c in candidates])
        reference_values: dict[str, np.ndarray] | None = None
        for candidate_side in candidates:
            progress(f"checking {candidate_side.target}")
            started = time.perf_counter()
            result, outputs = _run_and_compare(candidate_side, ref, options.precision,
                                               options.atol, options.rtol, table)
            if result.status == Status.FAIL and options.localize:
                progress(f"localising the mismatch of {candidate_side.target}")
                if reference_values is None and ref.tensors is not None:
                    reference_values = _safe_run_all(ref.tensors, ref.feeds)
                result = _localize(result, candidate_side, ref, reference_values, outputs,
                                   work, out_path, repro_dirs[candidate_side.target])
            results.append(replace(result, duration_s=round(time.perf_counter() - started, 3)))
        report = Report(ref.record, check_record, tuple(results), version=__version__,
                        command="check")
        if out_path is not None:
            write_reports(report, work, formats)
    return report


# --- the reference ---------------------------------------------------------------------

def _resolve_reference(side: ModelRef, work: Path, options: ConvertOptions, echo: bool,
                       out_path: Path | None) -> _Reference:
    record = side.to_dict()
    specs, data_path = options.inputs, options.data
    if side.kind == "folder":
        return _folder_reference(side, record, data_path)
    if side.kind == "source":
        lowered = _lower(side, "reference", work, options, echo, out_path)
        record.update({"framework": lowered.framework, "exporter": lowered.exporter,
                       "onnx": str(lowered.onnx_path.relative_to(work)),
                       "outputs": list(lowered.output_names),
                       "inputs": [s.to_dict() for s in lowered.inputs]})
        return _Reference(
            load_arrays(lowered.feeds_path), load_arrays(lowered.reference_path), record,
            f"--data {data_path}" if data_path else f"seeded random values (seed {DEFAULT_SEED})",
            tensors=OnnxTensors(lowered.onnx_path), onnx_path=lowered.onnx_path)
    assert side.path is not None
    if side.kind == "onnx":
        model = load_model(side.path, load_external_data=False)
        model_specs = _merge(describe(model).input_specs(), specs, side.text)
        feeds, note = _feeds(model_specs, data_path, model)
        with OrtRunner(side.path) as runner:
            outputs = _run_reference(runner, feeds, data_path, specs, model_specs)
        record.update({"precision": detect_precision(side.path).value,
                       "inputs": [s.to_dict() for s in model_specs], "outputs": list(outputs)})
        return _Reference(feeds, outputs, record, note, detect_precision(side.path),
                          OnnxTensors(side.path), side.path)
    model_specs = _merge(openvino_input_specs(side.path), specs, side.text)
    feeds, note = _feeds(model_specs, data_path, None)
    with openvino_runner(side.path) as runner:
        outputs = _run_reference(runner, feeds, data_path, specs, model_specs)
    record.update({"inputs": [s.to_dict() for s in model_specs], "outputs": list(outputs)})
    return _Reference(feeds, outputs, record, note, detect_precision(side.path),
                      OpenVinoTensors(side.path))


def _folder_reference(side: ModelRef, record: dict[str, Any],
                      data_path: Path | None) -> _Reference:
    assert side.path is not None
    written = _read_folder_report(side.path)
    source = written.get("source") or {}
    check_info = written.get("check") or {}
    hub = side.path / ((source.get("onnx") or {}).get("path") or "onnx/model.onnx")
    record.update({"framework": source.get("framework"), "exporter": source.get("exporter"),
                   "written_by": "convertkit convert", "source": source.get("text"),
                   "onnx": str(hub)})
    tensors = OnnxTensors(hub) if hub.is_file() else None
    if data_path is None:
        feeds_file = side.path / check_info.get("feeds", "check/inputs.npz")
        reference_file = side.path / check_info.get("reference", "check/reference.npz")
        if not feeds_file.is_file() or not reference_file.is_file():
            raise UsageError(f"{side.path} has no recorded check inputs and reference outputs",
                             hint="pass a folder written by `convertkit convert`, or --data",
                             code="bad-folder")
        return _Reference(load_arrays(feeds_file), load_arrays(reference_file), record,
                          f"recorded by convert in {feeds_file}",
                          tensors=tensors, onnx_path=hub if tensors else None)
    if tensors is None:
        raise UsageError(f"{side.path} has no ONNX model to run on --data",
                         hint="drop --data to use the inputs recorded in the folder",
                         code="bad-folder")
    model_specs = describe(load_model(hub, load_external_data=False)).input_specs()
    feeds = select_data(read_data(data_path), model_specs)
    with OrtRunner(hub) as runner:
        outputs = runner.run(feeds)
    record["note"] = (f"with --data the reference is the folder's ONNX model {hub}, not the "
                      "source framework's recorded outputs")
    return _Reference(feeds, outputs, record, f"--data {data_path}", tensors=tensors,
                      onnx_path=hub)


def _feeds(specs: Sequence[InputSpec], data_path: Path | None,
           model: onnx.ModelProto | None) -> tuple[dict[str, np.ndarray], str]:
    if data_path is not None:
        return select_data(read_data(data_path), specs), f"--data {data_path}"
    return (generate_feeds(specs, model, seed=DEFAULT_SEED),
            f"seeded random values (seed {DEFAULT_SEED})")


def _run_reference(runner, feeds, data_path, user_specs, model_specs) -> dict[str, np.ndarray]:
    with runner:
        try:
            return runner.run(feeds)
        except ConvertkitError as exc:
            if user_specs or data_path:
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
                           lambda: OrtRunner(path), lambda: OnnxTensors(path), path)], []
    if side.kind == "openvino":
        assert path is not None
        return [_Candidate("openvino", side.text, detect_precision(path),
                           lambda: openvino_runner(path), lambda: OpenVinoTensors(path), path,
                           ("OpenVINO CPU, f32 inference precision hint",))], []
    if side.kind == "folder":
        assert path is not None
        return _folder_candidates(path)
    return [_source_candidate(side, work, options, echo, out_path)], []


def _source_candidate(side: ModelRef, work: Path, options: ConvertOptions, echo: bool,
                      out_path: Path | None) -> _Candidate:
    state: dict[str, Any] = {}
    # The candidate runs on the reference's inputs, recorded by then.
    options = replace(options, data=work / "check" / "inputs.npz")

    def open_runner():
        lowered = _lower(side, "candidate", work, options, echo, out_path)
        state["lowered"] = lowered
        return _RecordedOutputs(load_arrays(lowered.reference_path))

    def tensors():
        return OnnxTensors(state["lowered"].onnx_path)

    return _Candidate(_framework_of(side, options), side.text, Precision.FP32,
                      open_runner, tensors,
                      notes=("the candidate's outputs come from its own framework; its ONNX "
                             "export stands in for it when localising",))


class _RecordedOutputs:
    """A runner over outputs a source framework already computed on the check inputs."""

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs

    def __enter__(self) -> _RecordedOutputs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
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
        runner = _platform_runner(target, path, precision)
        if runner is not None:
            return runner
        if suffix == ".onnx":
            return OrtRunner(path)
        if suffix == ".xml":
            return openvino_runner(path)
        return None

    return _Candidate(target, str(path), precision, open_runner, tensors,
                      path if suffix in (".onnx", ".xml") else None)


def _platform_runner(target: str, path: Path, precision: Precision):
    """The runner the target's own platform opens for the artifact, when it is known."""
    try:
        platform = resolve_target(TargetSpec.parse(target))
        return platform().open(Artifact(target, path, precision))
    except ConvertkitError:
        return None


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

def _run_and_compare(candidate: _Candidate, ref: _Reference, chosen: Precision | None,
                     atol: float | None, rtol: float | None, table: BudgetTable | None,
                     ) -> tuple[ArtifactResult, dict[str, np.ndarray] | None]:
    precision = chosen or _looser(ref.precision, candidate.precision)
    budget = budget_for(precision, atol, rtol, table)
    try:
        runner = candidate.open_runner()
        if runner is None:
            return ArtifactResult(candidate.target, Status.BUILT, candidate.path,
                                  precision.value, budget,
                                  notes=(*candidate.notes, "not run: no runtime for it here")
                                  ), None
        with runner:
            outputs = runner.run(ref.feeds)
    except ConvertkitError as error:
        log.debug("candidate %s failed", candidate.target, exc_info=True)
        return ArtifactResult(candidate.target, Status.ERROR, candidate.path,
                              precision.value, budget, notes=candidate.notes,
                              error=error_record(error)), None
    aligned, note = align_outputs(ref.outputs, outputs)
    metrics = tuple(compare_outputs(aligned, ref.outputs, budget))
    status = Status.PASS if all(m.within_budget for m in metrics) else Status.FAIL
    notes = (*candidate.notes, note) if note else candidate.notes
    return ArtifactResult(candidate.target, status, candidate.path, precision.value, budget,
                          metrics, notes), outputs


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


def _localize(result: ArtifactResult, candidate: _Candidate, ref: _Reference,
              reference_values: dict[str, np.ndarray] | str | None,
              outputs: dict[str, np.ndarray] | None, work: Path, out_path: Path | None,
              repro_dir: Path) -> ArtifactResult:
    if ref.tensors is None or candidate.tensors is None:
        why = ("the reference cannot show its intermediate tensors" if ref.tensors is None
               else "this artifact cannot show its intermediate tensors here")
        return replace(result, notes=(*result.notes, f"not localised: {why}"))
    if isinstance(reference_values, str):
        return replace(result, notes=(*result.notes, f"not localised: {reference_values}"))
    assert reference_values is not None and result.budget is not None
    tensors = candidate.tensors()
    candidate_values = _safe_run_all(tensors, ref.feeds)
    if isinstance(candidate_values, str):
        return replace(result, notes=(*result.notes, f"not localised: {candidate_values}"))
    localization = locate_divergence(ref.tensors, tensors, reference_values, candidate_values,
                                     result.budget, candidate_outputs=outputs)
    if out_path is not None:
        localization = _with_repro(localization, ref, candidate, reference_values,
                                   candidate_values, result, work / repro_dir,
                                   out_path / repro_dir)
    return replace(result, localization=localization)


def _with_repro(localization: Localization, ref: _Reference, candidate: _Candidate,
                reference_values, candidate_values, result: ArtifactResult, folder: Path,
                shown_as: Path) -> Localization:
    if localization.node is None:
        return localization
    if ref.onnx_path is None or candidate.model_path is None:
        return localization.with_repro(None, "no repro: it needs an ONNX reference and an "
                                             "ONNX or OpenVINO candidate")
    assert result.budget is not None
    try:
        repro = write_repro(folder, shown_as, ref.onnx_path, candidate.model_path,
                            localization.node, reference_values, candidate_values,
                            result.budget)
    except ReproError as exc:
        return localization.with_repro(None, f"no repro: {exc}")
    return localization.with_repro(repro)


def _safe_run_all(tensors: TensorSource, feeds: Mapping[str, np.ndarray],
                  ) -> dict[str, np.ndarray] | str:
    """Every tensor of ``tensors``, or why they could not be had."""
    try:
        return tensors.run_all(feeds)
    except ConvertkitError as exc:
        log.debug("exposing the tensors of %s failed", tensors.label, exc_info=True)
        return f"{tensors.label} did not run with its tensors exposed: {exc.message}"


def _repro_dirs(targets: Sequence[str]) -> dict[str, Path]:
    """OUT/repro for a single candidate, OUT/repro/<target> when there are several."""
    if len(targets) == 1:
        return {targets[0]: REPRO_DIR}
    return {t: REPRO_DIR / t.replace(":", "-").replace("@", "-") for t in targets}


# --- the pipeline's hook ----------------------------------------------------------------

def localize_failures(results: Sequence[ArtifactResult], staging: Path, hub_model: Path,
                      feeds: Mapping[str, np.ndarray], shown_as: Path,
                      ) -> list[ArtifactResult]:
    """For `convert`: localise each failed ONNX or OpenVINO artifact against the hub ONNX
    model, when the hub model itself passed. Writes OUT/repro/<target>/."""
    results = list(results)
    hub = next((r for r in results if r.target == "onnx"), None)
    if hub is None or hub.status != Status.PASS:
        return results
    reference = OnnxTensors(staging / hub_model)
    ref = _Reference(dict(feeds), {}, {}, "", tensors=reference, onnx_path=staging / hub_model)
    reference_values: dict[str, np.ndarray] | str | None = None
    for index, result in enumerate(results):
        if result.status != Status.FAIL or result.path is None:
            continue
        path = staging / result.path
        suffix = path.suffix.lower()
        if suffix not in (".onnx", ".xml") or (suffix == ".onnx" and _is_ep_context(path)):
            results[index] = replace(result, notes=(
                *result.notes, "not localised: this artifact cannot show its intermediate "
                "tensors here"))
            continue
        if reference_values is None:
            reference_values = _safe_run_all(reference, feeds)
        candidate = _Candidate(
            result.target, result.path, Precision.FP32, lambda: None,
            (lambda p=path: OnnxTensors(p)) if suffix == ".onnx"
            else (lambda p=path: OpenVinoTensors(p)), path)
        repro_dir = REPRO_DIR / result.target.replace(":", "-").replace("@", "-")
        results[index] = _localize(result, candidate, ref, reference_values, None, staging,
                                   shown_as, repro_dir)
    return results


def _is_ep_context(path: Path) -> bool:
    """A context-binary model (EPContext nodes, e.g. QNN's): only its own execution
    provider can run it, so its intermediate tensors cannot be shown here."""
    model = load_model(path, load_external_data=False)
    return any(node.op_type == "EPContext" for node in model.graph.node)


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
    request = LowerRequest(side.source, options, work / role)
    shown = (str(out_path / "logs" / f"{role}.log") if out_path is not None else
             "the export log (pass -o to keep it, or --debug to see it live)")
    # The export stays in OUT/<role>/: localisation reads its intermediate tensors.
    return lower(name, request, log_path=log_path, echo=echo, log_shown_as=shown)


# --- small helpers ----------------------------------------------------------------------

@contextlib.contextmanager
def _workspace(out: Path | None) -> Iterator[Path]:
    if out is not None:
        with staged_folder(out) as staging:
            yield staging
        return
    with tempfile.TemporaryDirectory(prefix="convertkit-check-") as scratch:
        yield Path(scratch)
