"""One conversion, start to end: lower the source to ONNX, build the hub model, prepare
and build every target, check every artifact against the source framework's reference
outputs."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from convertkit import __version__
from convertkit.adapters import Lowered, LowerRequest, lower
from convertkit.check.budgets import budget_for
from convertkit.check.inputs import load_arrays
from convertkit.check.metrics import OutputMetrics, compare_outputs
from convertkit.errors import ConversionError, ConvertkitError, UsageError
from convertkit.ir.hub import HubRecord, build_hub
from convertkit.ir.info import OnnxInfo, describe
from convertkit.ir.io import load_model
from convertkit.ir.prepare import prepare
from convertkit.ir.validate import validate_and_infer
from convertkit.platforms import BuildOptions, Platform, plan_target
from convertkit.platforms.ort_runner import OrtRunner
from convertkit.registry import adapter_names, load_adapter, resolve_target
from convertkit.report import ArtifactResult, Report, error_record
from convertkit.spec import InputSpec, Precision, SourceRef, Status, TargetSpec
from convertkit.staging import check_output_folder, staged_folder

log = logging.getLogger(__name__)

ONNX_TARGET = TargetSpec("onnx")
HUB_MODEL = Path("onnx") / "model.onnx"
LOG_FILE = Path("logs") / "export.log"
WORK_DIR = Path(".work")  # scratch inside the staged output, removed before it lands


def convert(
    source: str | SourceRef,
    out: str | Path,
    *,
    framework: str | None = None,
    inputs: Sequence[str | InputSpec] = (),
    targets: Sequence[str | TargetSpec] = (),
    data: str | Path | None = None,
    weights: str | Path | None = None,
    opset: int | None = None,
    optimize: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    force: bool = False,
    show_framework_output: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> Report:
    """Convert ``source`` for ``targets`` into the folder ``out`` and check every artifact.

    Raises UsageError for bad arguments (nothing is written); every later failure is
    recorded in the returned report, which is also written to ``out/report.json``.
    """
    source_ref = source if isinstance(source, SourceRef) else SourceRef.parse(str(source))
    source_ref.validate()
    input_specs = tuple(s if isinstance(s, InputSpec) else InputSpec.parse(s) for s in inputs)
    platforms = resolve_targets(
        [t if isinstance(t, TargetSpec) else TargetSpec.parse(t) for t in targets])
    data_path = _existing(data, "--data")
    weights_path = _existing(weights, "--weights")
    out_path = Path(out)
    check_output_folder(out_path, force, [source_ref.path, data_path, weights_path])
    framework = framework or detect_framework(source_ref)
    load_adapter(framework)  # an unknown -f fails here, before any work

    with staged_folder(out_path) as staging:
        work = staging / WORK_DIR
        request = LowerRequest(source_ref, input_specs, staging / "check", data_path,
                               weights_path, opset)
        source_record = {"text": source_ref.text, "framework": framework}
        try:
            progress(f"lowering {source_ref.text} with the {framework} adapter")
            lowered = lower(framework, request, log_path=staging / LOG_FILE,
                            echo=show_framework_output,
                            log_shown_as=str(out_path / LOG_FILE))
            progress("validating and optimising the ONNX model")
            exported = work / "exported.onnx"
            validate_and_infer(lowered.onnx_path, exported, link=True)
            _remove_model(lowered.onnx_path)
            hub = build_hub(exported, staging / HUB_MODEL, opset=opset, optimize_graph=optimize)
        except UsageError:
            raise
        except ConvertkitError as error:
            shutil.rmtree(work, ignore_errors=True)
            report = Report(source_record, error=error_record(error), version=__version__)
            report.write(staging / "report.json")
            return report

        hub_model = load_model(staging / HUB_MODEL, load_external_data=False)
        hub_info = describe(hub_model)
        source_record.update(_source_record(lowered, hub_info, hub))
        feeds = load_arrays(lowered.feeds_path)
        reference = load_arrays(lowered.reference_path)
        results = []
        for target, platform_class in platforms.items():
            progress(f"building {target}")
            result = _build_and_check(platform_class(), target, staging, hub_model, hub_info,
                                      lowered.inputs, feeds, reference, atol, rtol)
            if target == ONNX_TARGET and result.status == Status.FAIL and hub.optimization:
                result = _blame_optimization(result, exported, feeds, reference)
            results.append(result)
        shutil.rmtree(work, ignore_errors=True)
        report = Report(
            source=source_record,
            check={
                "inputs": f"--data {data_path}" if data_path else
                          f"seeded random values (seed {request.seed})",
                "feeds": str(lowered.feeds_path.relative_to(staging)),
                "reference": str(lowered.reference_path.relative_to(staging)),
                "rule": "|actual - reference| <= atol + rtol * |reference|, elementwise",
            },
            artifacts=tuple(results),
            version=__version__,
        )
        report.write(staging / "report.json")
    return report


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


def resolve_targets(targets: Sequence[TargetSpec]) -> dict[TargetSpec, type[Platform]]:
    """`onnx` first, then each target under its full name (`cpu` becomes `cpu:ort`),
    duplicates dropped. Unknown targets raise a UsageError."""
    resolved: dict[TargetSpec, type[Platform]] = {}
    for target in [ONNX_TARGET, *targets]:
        platform = resolve_target(target)
        if platform.name != target.family:
            target = TargetSpec(target.family, platform.name, target.device)
        resolved.setdefault(target, platform)
    return resolved


def _build_and_check(platform: Platform, target: TargetSpec, staging: Path, hub_model,
                     hub_info: OnnxInfo, inputs: Sequence[InputSpec],
                     feeds: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                     atol: float | None, rtol: float | None) -> ArtifactResult:
    out_dir = staging / (HUB_MODEL.parent if target == ONNX_TARGET else
                         str(target).replace(":", "-").replace("@", "-"))
    try:
        plan = plan_target(platform, target, hub_model, hub_info, inputs)
        if plan.problems:
            raise ConversionError(
                f"{target} cannot take this model: " + "; ".join(plan.problems),
                hint="`convertkit inspect MODEL -t TARGET` shows what the target accepts",
                code="preflight-rejected",
            )
        model_path = prepare(staging / HUB_MODEL, plan, inputs, out_dir / "prepared.onnx")
        artifact = platform.build(model_path, target, out_dir, BuildOptions())
        notes = tuple(f"prepared: {change}" for change in plan.changes) + artifact.notes
        relative = str(artifact.path.relative_to(staging))
        budget = budget_for(artifact.precision, atol, rtol)
        runner = platform.open(artifact)
        if runner is None:
            return ArtifactResult(str(target), Status.BUILT, relative,
                                  artifact.precision.value, budget,
                                  notes=(*notes, "not run: no runtime for it here"))
        with runner:
            outputs = runner.run(feeds)
        metrics = tuple(compare_outputs(outputs, reference, budget))
        return ArtifactResult(str(target), _verdict(metrics), relative,
                              artifact.precision.value, budget, metrics, notes)
    except ConvertkitError as error:
        log.debug("target %s failed", target, exc_info=True)
        return ArtifactResult(str(target), Status.ERROR, error=error_record(error))


def _verdict(metrics: Sequence[OutputMetrics]) -> Status:
    return Status.PASS if all(m.within_budget for m in metrics) else Status.FAIL


def _blame_optimization(result: ArtifactResult, exported: Path,
                        feeds: Mapping[str, np.ndarray],
                        reference: Mapping[str, np.ndarray]) -> ArtifactResult:
    """The optimised hub model failed: check the model as exported, to tell the user
    whether the exporter or the optimisation is at fault."""
    budget = result.budget or budget_for(Precision.FP32)
    with OrtRunner(exported) as runner:
        unoptimized = _verdict(compare_outputs(runner.run(feeds), reference, budget))
    note = ("the unoptimised export passes this check: graph optimisation changed the "
            "results; --no-optimize converts without it" if unoptimized == Status.PASS else
            "the unoptimised export fails this check too: the export itself differs")
    return ArtifactResult(result.target, result.status, result.path, result.precision,
                          result.budget, result.outputs, (*result.notes, note), result.error)


def _source_record(lowered: Lowered, hub_info: OnnxInfo, hub: HubRecord) -> dict:
    return {
        "exporter": lowered.exporter,
        "notes": list(lowered.notes) + list(hub.notes),
        "inputs": [s.to_dict() for s in lowered.inputs],
        "outputs": list(lowered.output_names),
        "onnx": {"path": str(HUB_MODEL), "opset": hub_info.opset,
                 "ir_version": hub_info.ir_version, "nodes": hub_info.node_count,
                 "optimization": hub.optimization.to_dict() if hub.optimization else None},
        "log": str(LOG_FILE),
    }


def _existing(path: str | Path | None, option: str) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{option} file not found: {path}", hint=f"pass an existing {option} file",
                         code="file-not-found")
    return path


def _remove_model(path: Path) -> None:
    for file in [path, *path.parent.glob(path.name + ".data")]:
        file.unlink(missing_ok=True)
