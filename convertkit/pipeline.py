"""One conversion, start to end: lower the source to ONNX, build the hub model, prepare
and build every target, check every artifact against the source framework's reference
outputs."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from convertkit import __version__
from convertkit.adapters import Lowered, LowerRequest, detect_framework, lower
from convertkit.checker.budgets import (
    CHECK_RULE,
    Budget,
    BudgetTable,
    budget_for,
    budget_table_dict,
    load_budget_file,
)
from convertkit.checker.diagnosis import localize_failures
from convertkit.checker.samples import check_readable
from convertkit.checker.verdict import Evidence, judge
from convertkit.config import is_debug
from convertkit.errors import ConversionError, ConvertkitError, UsageError
from convertkit.ir.hub import HubRecord, build_hub
from convertkit.ir.info import OnnxInfo, describe
from convertkit.ir.io import load_model
from convertkit.ir.prepare import prepare
from convertkit.ir.validate import validate_and_infer
from convertkit.options import ConvertOptions, options_from
from convertkit.platforms import (
    Artifact,
    BuildOptions,
    Platform,
    Runner,
    choose_precision,
    plan_target,
)
from convertkit.platforms.ort_runner import OrtRunner
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
    NOT_EVIDENCE,
    NOT_EVIDENCE_HINT,
    Candidate,
    CandidateRecord,
    Timing,
    candidates,
    choose,
    time_interleaved,
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
from convertkit.staging import check_output_folder, relocate, staged_folder

log = logging.getLogger(__name__)

HUB_MODEL = Path("onnx") / "model.onnx"
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
    data_path = existing_file(options.data, "--data", folder_too=True)
    existing_file(options.calib_data, "--calib-data", folder_too=True)
    existing_file(options.labels, "--labels")
    for path, option in ((options.data, "--data"), (options.calib_data, "--calib-data"),
                         (options.labels, "--labels")):
        check_readable(path, option)
    weights_path = existing_file(options.weights, "--weights")
    budgets = load_budget_file(options.budget_file) if options.budget_file is not None else None
    out_path = Path(out)
    check_output_folder(out_path, force, [source_ref.path, data_path, weights_path,
                                          options.calib_data, options.labels,
                                          options.budget_file])
    framework = options.framework or detect_framework(source_ref)
    load_adapter(framework)  # an unknown -f fails here, before any work

    with staged_folder(out_path) as staging:
        work = staging / WORK_DIR
        request = LowerRequest(source_ref, options, staging / "check")
        source_record = {"text": source_ref.text, "framework": framework,
                         "options": options.given()}
        try:
            progress(f"lowering {source_ref.text} with the {framework} adapter")
            lowered = lower(framework, request, log_path=staging / LOG_FILE,
                            echo=show_framework_output,
                            log_shown_as=str(out_path / LOG_FILE))
            progress("validating and optimising the ONNX model")
            exported = work / "exported.onnx"
            validate_and_infer(lowered.onnx_path, exported, link=True)
            _remove_model(lowered.onnx_path)
            hub = build_hub(exported, staging / HUB_MODEL, opset=options.opset,
                            optimize_graph=options.optimize)
        except UsageError:
            raise
        except ConvertkitError as error:
            shutil.rmtree(work, ignore_errors=True)
            report = relocate(Report(source_record, error=error_record(error),
                                     version=__version__), staging, out_path)
            write_reports(report, staging, options.report_formats)
            return report

        hub_model = load_model(staging / HUB_MODEL, load_external_data=False)
        hub_info = describe(hub_model)
        source_record.update(_source_record(lowered, hub_info, hub))
        check = lowered.check
        evidence = Evidence.load(check.feeds_path, check.reference_path, check.labels_path)
        # The calibration samples feed the builds only: moved out of what OUT keeps (the
        # report says where they came from, and which samples they were).
        calibration_path = work / "calibration.npz"
        shutil.move(check.calibration_path, calibration_path)
        calibration = check.samples["calibration"]
        context = _CheckContext(
            staging, hub_model, hub_info, lowered.inputs, evidence, options, budgets,
            BuildOptions(None, calibration_path, calibration["real"], check.feeds_path),
            calibration)
        results = []
        for target, platform_class in platforms.items():
            progress(f"building {target}")
            if target == AUTO_CPU_TARGET:
                result = _select_cpu(context, options.precision, progress)
            else:
                result = _build_and_check(context, platform_class(), target, precisions[target])
            if target == ONNX_TARGET and result.status == Status.FAIL and hub.optimization:
                result = _blame_optimization(result, exported, evidence)
            results.append(result)
        if options.localize:
            results = localize_failures(results, staging, HUB_MODEL, evidence.samples,
                                        out_path)
        shutil.rmtree(work, ignore_errors=True)
        report = Report(
            source=source_record,
            check={
                "inputs": _samples_text(check.samples),
                "samples": check.samples,
                "feeds": str(check.feeds_path.relative_to(staging)),
                "reference": str(check.reference_path.relative_to(staging)),
                "labels": (str(check.labels_path.relative_to(staging))
                           if check.labels_path else None),
                "rule": CHECK_RULE,
                "budgets": budget_table_dict(budgets),
                "budget_file": str(options.budget_file) if options.budget_file else None,
            },
            artifacts=tuple(results),
            version=__version__,
        )
        # Every path the report names is where the file is once OUT has landed.
        report = relocate(report, staging, out_path)
        write_reports(report, staging, options.report_formats)
    return report


@dataclass(frozen=True)
class _CheckContext:
    """What every target's build and check share within one conversion."""

    staging: Path
    hub_model: onnx.ModelProto
    hub_info: OnnxInfo
    inputs: Sequence[InputSpec]
    evidence: Evidence
    options: ConvertOptions
    budgets: BudgetTable | None
    build_options: BuildOptions
    calibration: dict[str, Any]  # where the calibration samples came from (SampleSet)

    def budget(self, precision: Precision) -> Budget:
        return budget_for(precision, self.options.atol, self.options.rtol, self.budgets,
                          self.options.max_accuracy_drop)


def _build_and_check(context: _CheckContext, platform: Platform, target: TargetSpec,
                     precision: Precision, out_dir: Path | None = None) -> ArtifactResult:
    staging = context.staging
    if out_dir is None:
        out_dir = staging / (HUB_MODEL.parent if target == ONNX_TARGET else
                             str(target).replace(":", "-").replace("@", "-"))
    try:
        plan = plan_target(platform, target, context.hub_model, context.hub_info,
                           context.inputs)
        if plan.problems:
            raise ConversionError(
                f"{target} cannot take this model: " + "; ".join(plan.problems),
                hint="`convertkit inspect MODEL -t TARGET` shows what the target accepts",
                code="preflight-rejected",
            )
        options = replace(context.build_options, precision=precision)
        model_path = prepare(staging / HUB_MODEL, plan, context.inputs,
                             out_dir / "prepared.onnx")
        artifact = platform.build(model_path, target, out_dir, options)
        if model_path.parent == out_dir and model_path not in (artifact.path, *artifact.files):
            _remove_model(model_path)  # an intermediate the platform copied or compiled
        notes = tuple(f"prepared: {change}" for change in plan.changes) + artifact.notes
        relative = str(artifact.path.relative_to(staging))
        budget = context.budget(artifact.precision)
        calibration = context.calibration if artifact.calibrated else None
        if artifact.is_prepared_only:
            return ArtifactResult(str(target), Status.PREPARED, relative,
                                  artifact.precision.value, budget,
                                  notes=(*notes, "not built here: no toolchain here builds it; "
                                         "the files beside it are ready for one"),
                                  calibration=calibration)
        runner = platform.open(artifact)
        if runner is None:
            return ArtifactResult(str(target), Status.BUILT, relative,
                                  artifact.precision.value, budget,
                                  notes=(*notes, "not run: no runtime for it here"),
                                  calibration=calibration)
        layers: list[dict] = []
        samples = context.evidence.samples
        with runner:
            verdict = judge(runner.run_samples(samples), context.evidence, budget)
            if verdict.status == Status.FAIL:
                layers = _layer_analysis(runner, samples[verdict.worst_sample])
        return ArtifactResult(str(target), verdict.status, relative,
                              artifact.precision.value, budget, verdict.metrics, notes,
                              checked_in=artifact.checked_in,
                              layer_analysis=tuple(layers), samples=len(samples),
                              accuracy=verdict.accuracy.to_dict() if verdict.accuracy else None,
                              calibration=calibration)
    except ConvertkitError as error:
        log.debug("target %s failed", target, exc_info=True)
        return ArtifactResult(str(target), Status.ERROR, error=error_record(error))


def _layer_analysis(runner: Runner, feeds: Mapping[str, np.ndarray]) -> list[dict]:
    """The toolkit's per-layer analysis of a failed artifact; its own failure only costs
    the analysis (logged), never the result."""
    try:
        return runner.layer_analysis(feeds)
    except ConvertkitError:
        log.warning("the per-layer analysis failed", exc_info=is_debug())
        return []


def _select_cpu(context: _CheckContext, precision: Precision | None,
                progress: Callable[[str], None]) -> ArtifactResult:
    """`-t cpu`: build and check every CPU candidate, time those that pass in turn, keep
    the fastest beyond the timing noise (selection.py). The result is the chosen
    candidate's, with every candidate listed."""
    found = candidates(load_platforms().values(), Family.CPU, precision)
    if not found:
        error = UsageError(f"no CPU platform here builds {precision.value if precision else ''}",
                           hint="`convertkit targets` lists the CPU targets",
                           code="no-candidate")
        return ArtifactResult(str(AUTO_CPU_TARGET), Status.ERROR, error=error_record(error))
    records, results = [], []
    for candidate in found:
        progress(f"building cpu candidate {candidate.target} {candidate.precision.value}")
        result = _build_and_check(context, candidate.platform(), candidate.target,
                                  candidate.precision, context.staging / candidate.folder)
        results.append(result)
        worst = max((m for m in result.outputs if m.max_abs is not None),
                    key=lambda m: m.max_abs, default=None)
        # Asked for by its precision, a candidate is judged by its check alone.
        unproven = result.is_calibrated_on_generated and precision is None
        reason = result.error["message"] if result.error else ""
        if unproven and result.status == Status.PASS:
            reason = NOT_EVIDENCE
        records.append(CandidateRecord(
            str(candidate.target), candidate.precision.value, result.status, result.path,
            result.latency_ms, worst.max_abs if worst else None,
            min((m.cosine for m in result.outputs if m.cosine is not None), default=None),
            reason=reason, calibrated_on_generated=unproven,
            accuracy_drop=result.accuracy["drop"] if result.accuracy else None))
    progress("timing the candidates that passed, in turn")
    timings = _time_candidates(context, found, results)
    for index, timing in timings.items():
        records[index] = replace(records[index], latency_ms=timing.median_ms,
                                 spread_ms=timing.spread_ms, round_ms=timing.round_ms)
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


def _time_candidates(context: _CheckContext, found: Sequence[Candidate],
                     results: Sequence[ArtifactResult]) -> dict[int, Timing]:
    """The timings of every candidate that passed, measured in turn on the first
    evaluation sample (selection.time_interleaved)."""
    runners = {}
    for index, (candidate, result) in enumerate(zip(found, results, strict=True)):
        if result.status != Status.PASS or result.path is None:
            continue
        artifact = Artifact(str(candidate.target), context.staging / result.path,
                            candidate.precision)
        runner = candidate.platform().open(artifact)
        if runner is not None:
            runners[index] = runner
    try:
        return time_interleaved(runners, context.evidence.samples[0])
    except ConvertkitError:
        log.warning("timing the CPU candidates failed", exc_info=is_debug())
        return {}


def _blame_optimization(result: ArtifactResult, exported: Path,
                        evidence: Evidence) -> ArtifactResult:
    """The optimised hub model failed: check the model as exported, to tell the user
    whether the exporter or the optimisation is at fault."""
    budget = result.budget or budget_for(Precision.FP32)
    with OrtRunner(exported) as runner:
        unoptimized = judge(runner.run_samples(evidence.samples), evidence, budget).status
    note = ("the unoptimised export passes this check: graph optimisation changed the "
            "results; --no-optimize converts without it" if unoptimized == Status.PASS else
            "the unoptimised export fails this check too: the export itself differs")
    return replace(result, notes=(*result.notes, note))


def _samples_text(record: Mapping[str, Any]) -> str:
    """One line on what the check ran on and what calibrated, for report.json."""
    evaluation, calibration = record["evaluation"], record["calibration"]
    return (f"{evaluation['count']} sample(s) from {evaluation['source']}; calibration: "
            f"{calibration['count']} other sample(s) from {calibration['source']}")


def _source_record(lowered: Lowered, hub_info: OnnxInfo, hub: HubRecord) -> dict:
    return {
        "exporter": lowered.exporter,
        "notes": list(lowered.notes) + list(hub.notes),
        "inputs": [_input_record(s, lowered) for s in lowered.inputs],
        "outputs": list(lowered.output_names),
        "onnx": {"path": str(HUB_MODEL), "opset": hub_info.opset,
                 "ir_version": hub_info.ir_version, "nodes": hub_info.node_count,
                 "optimization": hub.optimization.to_dict() if hub.optimization else None},
        "log": str(LOG_FILE),
    }


def _input_record(spec: InputSpec, lowered: Lowered) -> dict:
    record = spec.to_dict()
    if spec.name in lowered.nchw_inputs:  # --inputs-as-nchw: say which layout each side saw
        record.update(layout="NCHW", source_layout="NHWC")
    return record


def _remove_model(path: Path) -> None:
    for file in [path, *path.parent.glob(path.name + ".data")]:
        file.unlink(missing_ok=True)
