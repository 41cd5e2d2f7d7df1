"""One conversion, start to end: lower the source to ONNX, validate it on the hub, build
every target, check every artifact against the source framework's reference outputs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from convertkit import __version__
from convertkit.adapters import Lowered, LowerRequest, lower
from convertkit.check.budgets import budget_for
from convertkit.check.inputs import load_arrays
from convertkit.check.metrics import compare_outputs
from convertkit.errors import ConversionError, ConvertkitError, UsageError
from convertkit.ir.info import describe
from convertkit.ir.io import load_model
from convertkit.ir.validate import validate_and_infer
from convertkit.registry import adapter_names, load_adapter, resolve_target
from convertkit.report import ArtifactResult, Report, error_record
from convertkit.spec import InputSpec, SourceRef, Status, TargetSpec
from convertkit.staging import check_output_folder, staged_folder

log = logging.getLogger(__name__)

ONNX_TARGET = TargetSpec("onnx")
HUB_MODEL = Path("onnx") / "model.onnx"
LOG_FILE = Path("logs") / "export.log"


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
    target_specs = _with_onnx_first(
        [t if isinstance(t, TargetSpec) else TargetSpec.parse(t) for t in targets])
    platforms = _resolve_targets(target_specs)
    data_path = _existing(data, "--data")
    weights_path = _existing(weights, "--weights")
    out_path = Path(out)
    check_output_folder(out_path, force, [source_ref.path, data_path, weights_path])
    framework = framework or detect_framework(source_ref)
    load_adapter(framework)  # an unknown -f fails here, before any work

    with staged_folder(out_path) as staging:
        request = LowerRequest(source_ref, input_specs, staging / "check", data_path,
                               weights_path, opset)
        source_record = {"text": source_ref.text, "framework": framework}
        try:
            progress(f"lowering {source_ref.text} with the {framework} adapter")
            lowered = lower(framework, request, log_path=staging / LOG_FILE,
                            echo=show_framework_output,
                            log_shown_as=str(out_path / LOG_FILE))
            progress("validating the ONNX model")
            validate_and_infer(lowered.onnx_path, staging / HUB_MODEL)
            _remove_model(lowered.onnx_path)
        except UsageError:
            raise
        except ConvertkitError as error:
            report = Report(source_record, error=error_record(error), version=__version__)
            report.write(staging / "report.json")
            return report

        hub_info = describe(load_model(staging / HUB_MODEL, load_external_data=False))
        source_record.update(_source_record(lowered, staging, hub_info))
        feeds = load_arrays(lowered.feeds_path)
        reference = load_arrays(lowered.reference_path)
        results = []
        for target, platform_class in platforms.items():
            progress(f"building {target}")
            results.append(_build_and_check(platform_class(), target, staging, hub_info, feeds,
                                            reference, atol, rtol))
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


def _build_and_check(platform, target: TargetSpec, staging: Path, hub_info, feeds, reference,
                     atol: float | None, rtol: float | None) -> ArtifactResult:
    out_dir = staging / (str(target).replace(":", "-").replace("@", "-")
                         if target != ONNX_TARGET else HUB_MODEL.parent)
    try:
        problems = [p for p in platform.preflight(hub_info, target) if not p.fixable]
        if problems:
            raise ConversionError(
                f"{target} cannot take this model: " + "; ".join(p.message for p in problems),
                hint="`convertkit targets` lists what each target accepts",
                code="preflight-rejected",
            )
        artifact = platform.build(staging / HUB_MODEL, target, out_dir)
        relative = str(artifact.path.relative_to(staging))
        budget = budget_for(artifact.precision, atol, rtol)
        runner = platform.open(artifact)
        if runner is None:
            return ArtifactResult(str(target), Status.BUILT, relative,
                                  artifact.precision.value, budget,
                                  notes=(*artifact.notes, "not run: no runtime for it here"))
        with runner:
            outputs = runner.run(feeds)
        metrics = tuple(compare_outputs(outputs, reference, budget))
        status = Status.PASS if all(m.within_budget for m in metrics) else Status.FAIL
        return ArtifactResult(str(target), status, relative, artifact.precision.value, budget,
                              metrics, artifact.notes)
    except ConvertkitError as error:
        log.debug("target %s failed", target, exc_info=True)
        return ArtifactResult(str(target), Status.ERROR,
                              error=error_record(error))


def _source_record(lowered: Lowered, staging: Path, hub_info) -> dict:
    return {
        "exporter": lowered.exporter,
        "notes": list(lowered.notes),
        "inputs": [s.to_dict() for s in lowered.inputs],
        "outputs": list(lowered.output_names),
        "onnx": {"path": str(HUB_MODEL), "opset": hub_info.opset,
                 "ir_version": hub_info.ir_version, "nodes": hub_info.node_count},
        "log": str(LOG_FILE),
    }


def _resolve_targets(targets: list[TargetSpec]) -> dict[TargetSpec, type]:
    """Each target under its full name (`cpu` becomes `cpu:ort`), duplicates dropped."""
    resolved: dict[TargetSpec, type] = {}
    for target in targets:
        platform = resolve_target(target)
        if platform.name != target.family:
            target = TargetSpec(target.family, platform.name, target.device)
        resolved.setdefault(target, platform)
    return resolved


def _with_onnx_first(targets: list[TargetSpec]) -> list[TargetSpec]:
    ordered = [ONNX_TARGET]
    for target in targets:
        if target not in ordered:
            ordered.append(target)
    return ordered


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
