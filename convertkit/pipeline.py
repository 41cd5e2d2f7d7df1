"""One conversion, start to end: lower the source to ONNX, build the hub model, prepare
and build every target, check every artifact against the source framework's reference
outputs."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from convertkit import __version__
from convertkit.adapters import Lowered, LowerRequest, detect_framework, lower
from convertkit.build_steps import BUILD_LOG, HUB_MODEL, BuildContext
from convertkit.checker.budgets import CHECK_RULE, budget_table_dict, load_budget_file
from convertkit.checker.samples import check_readable
from convertkit.checker.verdict import Evidence
from convertkit.errors import ConvertkitError, UsageError
from convertkit.ir.info import OnnxInfo
from convertkit.isolation import Worker, run_limits
from convertkit.options import ConvertOptions, options_from
from convertkit.platforms import BuildOptions, Platform, choose_precision
from convertkit.records import decode
from convertkit.registry import (
    AUTO_CPU_TARGET,
    ONNX_TARGET,
    load_adapter,
    load_platforms,
    resolve_targets,
)
from convertkit.reports import write_reports
from convertkit.reports.record import ArtifactResult, Report, error_record
from convertkit.selection import (
    DECODER_ONLY,
    NOT_EVIDENCE,
    NOT_EVIDENCE_HINT,
    Candidate,
    CandidateRecord,
    Timing,
    candidates,
    choose,
    decode_record,
)
from convertkit.spec import (
    Family,
    InputSpec,
    Precision,
    SourceRef,
    Status,
    TargetSpec,
    existing_file,
)
from convertkit.staging import check_output_folder, protected_inputs, relocate, staged_folder

log = logging.getLogger(__name__)

LOG_FILE = Path("logs") / "export.log"
WORK_DIR = Path(".work")  # scratch inside the staged output, removed before it lands


def convert(
    source: str | SourceRef,
    out: str | Path,
    options: ConvertOptions | None = None,
    *,
    force: bool = False,
    show_framework_output: bool = False,
    progress: Callable[[str], None] = lambda message: None,
    **values: Any,
) -> Report:
    """Convert ``source`` into the folder ``out`` for every target ``options`` names, and
    check every artifact against the source framework's own outputs.

    ``options`` is a ConvertOptions; keyword arguments named after its fields build one
    instead (``inputs=["x:1x3x224x224"], targets=["cpu"]``, values as the CLI takes them).
    Raises UsageError for bad arguments (nothing is written); every later failure is
    recorded in the returned report, which is also written to ``out/report.json``.
    """
    options = options_from(options, values, command="convert")
    source_ref = source if isinstance(source, SourceRef) else SourceRef.parse(str(source))
    source_ref.validate()
    platforms = resolve_targets(options.targets)
    precisions = {target: choose_precision(platform(), target, None if target == ONNX_TARGET
                                           else options.precision)
                  for target, platform in platforms.items() if target != AUTO_CPU_TARGET}
    existing_file(options.data, "--data", folder_too=True)
    existing_file(options.calib_data, "--calib-data", folder_too=True)
    existing_file(options.labels, "--labels")
    for path, option in ((options.data, "--data"), (options.calib_data, "--calib-data"),
                         (options.labels, "--labels")):
        check_readable(path, option)
    existing_file(options.weights, "--weights")
    budgets = load_budget_file(options.budget_file) if options.budget_file is not None else None
    out_path = Path(out)
    check_output_folder(out_path, force, protected_inputs(source_ref, options))
    framework = options.framework or detect_framework(source_ref)
    load_adapter(framework)  # an unknown -f fails here, before any work

    with run_limits(options.timeout, options.memory_mb), \
            staged_folder(out_path, replace=force) as staging, \
            Worker(staging / BUILD_LOG, echo=show_framework_output,
                   log_shown_as=str(out_path / BUILD_LOG)) as worker:
        work = staging / WORK_DIR
        request = LowerRequest(source_ref, options, staging / "check")
        source_record = {"text": source_ref.text, "framework": framework,
                         "options": options.given()}
        try:
            progress(f"lowering {source_ref.text} with the {framework} adapter")
            lowered = lower(framework, request, log_path=staging / LOG_FILE,
                            echo=show_framework_output,
                            log_shown_as=str(out_path / LOG_FILE))
            parts = lowered.parts or (("", lowered),)
            hubs = [_build_hub(worker, staging / name, work / name, part, options,
                               progress) for name, part in parts]
        except UsageError:
            raise
        except ConvertkitError as error:
            shutil.rmtree(work, ignore_errors=True)
            report = relocate(Report(source_record, error=error_record(error),
                                     version=__version__), staging, out_path)
            write_reports(report, staging, options.report_formats)
            return report

        results: list[ArtifactResult] = []
        checks: dict[str, dict[str, Any]] = {}
        for (name, part), (hub, hub_info, exported) in zip(parts, hubs, strict=True):
            part_record = _source_record(lowered if not name else part, hub_info, hub, name)
            if name:
                source_record.update(exporter=lowered.exporter, notes=list(lowered.notes),
                                     log=str(LOG_FILE))
                source_record.setdefault("components", {})[name] = part_record
                checks[name] = _check_record(part, staging, options, budgets)
            else:
                source_record.update(part_record)
            steps = _TargetSteps(worker, _build_context(staging / name, work / name, part,
                                                        options), out_path / name, exported)
            for target, platform_class in platforms.items():
                progress(f"building {target}" + (f" ({name})" if name else ""))
                if target == AUTO_CPU_TARGET:
                    result = _select_cpu(steps, options.precision, progress)
                else:
                    result = steps.build_and_check(platform_class, target,
                                                   precisions[target])
                results.append(_in_component(result, name))
        shutil.rmtree(work, ignore_errors=True)
        check = (_check_record(lowered, staging, options, budgets) if not lowered.parts
                 else {**checks[parts[-1][0]], "components": checks})
        report = Report(source=source_record, check=check, artifacts=tuple(results),
                        version=__version__)
        # Every path the report names is where the file is once OUT has landed.
        report = relocate(report, staging, out_path)
        write_reports(report, staging, options.report_formats)
    return report


def _build_hub(worker: Worker, staging: Path, work: Path, lowered: Lowered,
               options: ConvertOptions, progress: Callable[[str], None],
               ) -> tuple[dict[str, Any], OnnxInfo, Path | None]:
    """Validate and optimise one exported model into the hub model under ``staging``:
    the hub record, the hub model's description, and the unoptimised export when the hub
    was optimised (to blame the optimisation for a failure)."""
    progress("validating and optimising the ONNX model")
    exported = work / "exported.onnx"
    work.mkdir(parents=True, exist_ok=True)
    built = worker.call("convertkit.build_steps:build_hub_step", {
        "staging": str(staging), "lowered": str(lowered.onnx_path),
        "exported": str(exported), "opset": options.opset,
        "optimize": options.optimize}, what="validating and optimising the ONNX model")
    hub = built["hub"]
    return hub, decode(built["info"]), exported if hub["optimization"] else None


def _build_context(staging: Path, work: Path, lowered: Lowered,
                   options: ConvertOptions) -> BuildContext:
    """What every target's build and check of one exported model share."""
    check = lowered.check
    Evidence.load(check.feeds_path, check.reference_path, check.labels_path)  # labels fit
    # The calibration samples feed the builds only: moved out of what OUT keeps (the
    # report says where they came from, and which samples they were).
    calibration_path = work / "calibration.npz"
    shutil.move(check.calibration_path, calibration_path)
    calibration = check.samples["calibration"]
    return BuildContext(
        staging, lowered.inputs, check.feeds_path, check.reference_path,
        check.labels_path, options,
        BuildOptions(None, calibration_path, calibration["real"], check.feeds_path),
        calibration, check.decode_path)


def _check_record(lowered: Lowered, staging: Path, options: ConvertOptions,
                  budgets: Any) -> dict[str, Any]:
    check = lowered.check
    return {
        "inputs": _samples_text(check.samples),
        "samples": check.samples,
        "feeds": str(check.feeds_path.relative_to(staging)),
        "reference": str(check.reference_path.relative_to(staging)),
        "labels": (str(check.labels_path.relative_to(staging))
                   if check.labels_path else None),
        "decode": (str(check.decode_path.relative_to(staging))
                   if check.decode_path else None),
        "rule": CHECK_RULE,
        "budgets": budget_table_dict(budgets),
        "budget_file": str(options.budget_file) if options.budget_file else None,
    }


def _in_component(result: ArtifactResult, name: str) -> ArtifactResult:
    """``result`` of one part of a model exported as several (an encoder-decoder), with
    its paths relative to OUT rather than to the part's folder."""
    if not name:
        return result
    mixed = result.mixed_precision
    return replace(
        result, component=name,
        path=f"{name}/{result.path}" if result.path else None,
        mixed_precision=(replace(mixed, override_file=f"{name}/{mixed.override_file}")
                         if mixed else None),
        candidates=tuple(replace(c, path=f"{name}/{c.path}" if c.path else c.path)
                         for c in result.candidates))


class _TargetSteps:
    """Each target's build and check, and the CPU candidates' timing, as steps of the
    run's worker (build_steps.py). A step that crashes the worker, or runs out of time or
    memory, is that target's error: its half-written folder is removed, and the next step
    runs in a new worker."""

    def __init__(self, worker: Worker, context: BuildContext, out: Path,
                 exported: Path | None) -> None:
        self.worker = worker
        self.context = context
        self.out = out
        self.exported = exported  # the unoptimised export, when the hub was optimised
        self.hub_passed = False

    def build_and_check(self, platform: type[Platform], target: TargetSpec,
                        precision: Precision, out_dir: Path | None = None) -> ArtifactResult:
        staging = self.context.staging
        if out_dir is None:
            out_dir = staging / (HUB_MODEL.parent if target == ONNX_TARGET else
                                 str(target).replace(":", "-").replace("@", "-"))
        is_hub = target == ONNX_TARGET
        localize = self.context.options.localize and self.hub_passed and not is_hub
        payload = {"context": self.context.to_payload(), "target": str(target),
                   "platform": platform.name, "precision": precision.value,
                   "out_dir": str(out_dir),
                   "exported": str(self.exported) if is_hub and self.exported else None,
                   "localize_in": str(self.out) if localize else None}
        try:
            result = decode(self.worker.call("convertkit.build_steps:build_and_check_step",
                                             payload, what=f"{target} {precision.value}"))
        except ConvertkitError as error:
            if out_dir != staging / HUB_MODEL.parent:
                shutil.rmtree(out_dir, ignore_errors=True)
            return ArtifactResult(str(target), Status.ERROR, error=error_record(error))
        if is_hub:
            self.hub_passed = result.status == Status.PASS
        return result

    def time(self, found: Sequence[Candidate], results: Sequence[ArtifactResult],
             indices: Sequence[int]) -> dict[int, Timing]:
        """The timings of the candidates at ``indices`` (selection.time_interleaved)."""
        artifacts = [{"index": i, "target": str(found[i].target), "path": results[i].path,
                      "platform": found[i].platform.name,
                      "precision": found[i].precision.value} for i in indices]
        value = self.worker.call("convertkit.build_steps:time_step",
                                 {"context": self.context.to_payload(),
                                  "artifacts": artifacts},
                                 what="timing " + ", ".join(
                                     f"{found[i].target} {found[i].precision.value}"
                                     for i in indices))
        return {int(index): decode(timing) for index, timing in value.items()}


def _select_cpu(steps: _TargetSteps, precision: Precision | None,
                progress: Callable[[str], None]) -> ArtifactResult:
    """`-t cpu`: build and check every CPU candidate, time those that pass in turn, keep
    the fastest beyond the timing noise (selection.py). The result is the chosen
    candidate's, with every candidate listed."""
    decoder = steps.context.decode_path is not None
    found = candidates(load_platforms().values(), Family.CPU, precision, decoder=decoder)
    if not found:
        only_decoders = precision in DECODER_ONLY and not decoder
        error = UsageError(f"no CPU platform here builds {precision.value if precision else ''}"
                           + (" for this model" if only_decoders else ""),
                           hint=("`-t cpu` builds int4 (weight-only) for decoders with a KV "
                                 "cache only; ask -t cpu:ort or -t cpu:openvino for it"
                                 if only_decoders else
                                 "`convertkit targets` lists the CPU targets"),
                           code="no-candidate")
        return ArtifactResult(str(AUTO_CPU_TARGET), Status.ERROR, error=error_record(error))
    records, results = [], []
    for candidate in found:
        progress(f"building cpu candidate {candidate.target} {candidate.precision.value}")
        result = steps.build_and_check(candidate.platform, candidate.target,
                                       candidate.precision,
                                       steps.context.staging / candidate.folder)
        results.append(result)
        worst = max((m for m in result.outputs if m.max_abs is not None),
                    key=lambda m: m.max_abs, default=None)
        # Asked for by its precision, a candidate is judged by its check alone.
        unproven = result.is_calibrated_on_generated and precision is None
        reason = result.error["message"] if result.error else ""
        if unproven and result.status == Status.PASS:
            reason = NOT_EVIDENCE
        if result.decode is not None and not result.decode.within_budget and not reason:
            reason = f"decode check failed: {result.decode.note}"
        records.append(CandidateRecord(
            str(candidate.target), candidate.precision.value, result.status, result.path,
            result.latency_ms, worst.max_abs if worst else None,
            min((m.cosine for m in result.outputs if m.cosine is not None), default=None),
            reason=reason, calibrated_on_generated=unproven,
            accuracy_drop=result.accuracy["drop"] if result.accuracy else None,
            mixed=result.mixed_precision.summary() if result.mixed_precision else "",
            decode=decode_record(result.decode)))
    progress("timing the candidates that passed, in turn"
             + (", decoding token by token" if decoder else ""))
    timings = _time_candidates(steps, found, results, records)
    for index, timing in timings.items():
        records[index] = replace(records[index], latency_ms=timing.median_ms,
                                 spread_ms=timing.spread_ms, round_ms=timing.round_ms,
                                 ttft_ms=timing.ttft_ms, tokens_per_s=timing.tokens_per_s)
        results[index] = replace(results[index], latency_ms=timing.median_ms)
    picked = choose(records)
    if picked is None:
        status = Status.FAIL if any(r.status == Status.FAIL for r in records) else Status.ERROR
        first_error = next((r.error for r in results if r.error), None)
        passed_unproven = any(r.status == Status.PASS for r in records)
        note = ("only candidates calibrated on generated inputs passed: " + NOT_EVIDENCE_HINT
                if passed_unproven else "no candidate passed its budget")
        return ArtifactResult(str(AUTO_CPU_TARGET), status, candidates=tuple(records),
                              notes=(note,),
                              error=first_error if status == Status.ERROR else None)
    chosen, why = picked
    records[chosen] = replace(records[chosen], chosen=True)
    best = results[chosen]
    note = f"chose {records[chosen].target} {records[chosen].precision}: {why}"
    return replace(best, target=str(AUTO_CPU_TARGET), notes=(note, *best.notes),
                   candidates=tuple(records))


def _time_candidates(steps: _TargetSteps, found: Sequence[Candidate],
                     results: Sequence[ArtifactResult],
                     records: list[CandidateRecord]) -> dict[int, Timing]:
    """The timings of every candidate that passed, measured in turn on the first
    evaluation sample (a decoder: decoding the check's greedy continuation). When timing
    them together crashes, each is timed alone (its runs then pair with no other's), and
    one whose timing crashes cannot be chosen."""
    passed = [i for i, r in enumerate(results) if r.status == Status.PASS and r.path]
    if not passed:
        return {}
    try:
        return steps.time(found, results, passed)
    except ConvertkitError as error:
        log.warning("timing the CPU candidates together failed: %s", error.message)
    timings = {}
    for index in passed:
        try:
            timing = steps.time(found, results, [index])[index]
        except ConvertkitError as error:
            records[index] = replace(records[index], status=Status.ERROR,
                                     reason=f"timing failed: {error.message}")
            continue
        timings[index] = replace(timing, round_ms=())  # timed alone: not paired
    return timings


def _samples_text(record: Mapping[str, Any]) -> str:
    """One line on what the check ran on and what calibrated, for report.json."""
    evaluation, calibration = record["evaluation"], record["calibration"]
    return (f"{evaluation['count']} sample(s) from {evaluation['source']}; calibration: "
            f"{calibration['count']} other sample(s) from {calibration['source']}")


def _source_record(lowered: Lowered, hub_info: OnnxInfo, hub: Mapping[str, Any],
                   part: str = "") -> dict:
    return {
        "exporter": lowered.exporter,
        "notes": list(lowered.notes) + list(hub["notes"]),
        "inputs": [_input_record(s, lowered) for s in lowered.inputs],
        "outputs": list(lowered.output_names),
        "onnx": {"path": str(Path(part) / HUB_MODEL), "opset": hub_info.opset,
                 "ir_version": hub_info.ir_version, "nodes": hub_info.node_count,
                 "optimization": hub["optimization"]},
        "log": str(LOG_FILE),
    }


def _input_record(spec: InputSpec, lowered: Lowered) -> dict:
    record = spec.to_dict()
    if spec.name in lowered.nchw_inputs:  # --inputs-as-nchw: say which layout each side saw
        record.update(layout="NCHW", source_layout="NHWC")
    return record
