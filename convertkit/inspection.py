"""`convertkit inspect`: what an ONNX model holds and which targets would take it."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convertkit.ir.info import OnnxInfo, describe
from convertkit.ir.io import load_model
from convertkit.ir.preflight import Preflight, Verdict
from convertkit.isolation import run_limits
from convertkit.options import ConvertOptions, options_from
from convertkit.platforms import plan_target
from convertkit.safe_text import printable
from convertkit.spec import SourceRef, TargetSpec, existing_file


@dataclass(frozen=True)
class Inspection:
    model: str  # the ONNX model inspected (for other sources: "lowered from SOURCE")
    info: OnnxInfo
    verdicts: dict[str, Preflight]
    # The targets the exit code judges: those named with -t; without -t only `onnx` (every
    # verdict is shown, but one NPU's narrow op list must not fail every inspection).
    judged: tuple[str, ...] = ("onnx",)

    @property
    def exit_code(self) -> int:
        """0 when every judged target takes the model (after preparation or not), else 3."""
        rejected = any(self.verdicts[name].verdict == Verdict.REJECTED
                       for name in self.judged if name in self.verdicts)
        return 3 if rejected else 0

    def to_dict(self) -> dict:
        return {"model": self.model, **self.info.to_dict(),
                "targets": {name: v.to_dict() for name, v in self.verdicts.items()},
                "exit_code": self.exit_code}


def inspect_model(
    source: str,
    options: ConvertOptions | None = None,
    *,
    show_framework_output: bool = False,
    **values: Any,
) -> Inspection:
    """Describe ``source`` and give every target's preflight verdict (every known target
    when ``options.targets`` is empty). A non-ONNX source is lowered to ONNX first.
    ``options`` (or keyword arguments named after its fields) as for ``convert``, less
    what only convert and check take."""
    from convertkit.adapters import detect_framework
    from convertkit.registry import load_platforms, resolve_targets

    options = options_from(options, values, command="inspect")
    source_ref = SourceRef.parse(source)
    source_ref.validate()
    targets = options.targets
    every = [TargetSpec(p.family.value, None if p.name == p.family.value else p.name)
             for p in load_platforms().values()]
    requested = []
    for target in targets or every:
        if target == TargetSpec("cpu"):  # convert picks among every CPU platform: show each
            requested += [t for t in every if t.family == "cpu"]
        else:
            requested.append(target)
    platforms = resolve_targets(requested)
    if targets and TargetSpec("onnx") not in requested:
        platforms.pop(TargetSpec("onnx"))  # convert always builds it; inspect shows what's asked
    existing_file(options.data, "--data", folder_too=True)
    existing_file(options.weights, "--weights")
    framework = options.framework or detect_framework(source_ref)
    with run_limits(options.timeout, options.memory_mb), \
            tempfile.TemporaryDirectory(prefix="convertkit-inspect-") as scratch:
        if framework == "onnx":
            assert source_ref.path is not None
            model_path, label = source_ref.path, str(source_ref.path)
        else:
            model_path = _lower(framework, source_ref, options, Path(scratch),
                                show_framework_output)
            label = f"{source} (lowered by the {framework} adapter)"
        model = load_model(model_path, load_external_data=False)
        info = describe(model)
        verdicts = {str(target): plan_target(platform(), target, model, info, options.inputs,
                                             options.opset)
                    for target, platform in platforms.items()}
    return Inspection(label, info, verdicts, tuple(verdicts) if targets else ("onnx",))


def _lower(framework: str, source: SourceRef, options: ConvertOptions, scratch: Path,
           echo: bool) -> Path:
    from convertkit.adapters import LowerRequest, lower
    from convertkit.ir.validate import validate_and_infer

    request = LowerRequest(source, options, scratch / "work")
    # The log goes with the scratch folder before the user reads an error's hint: name it
    # the way `check` without -o does, not by a path that will not be there.
    lowered = lower(framework, request, log_path=scratch / "export.log", echo=echo,
                    log_shown_as="the export log (rerun with --debug to see it live)")
    validate_and_infer(lowered.onnx_path, scratch / "model.onnx")
    return scratch / "model.onnx"


def format_inspection(inspection: Inspection) -> str:
    info = inspection.info
    lines = [inspection.model,
             f"  opset {info.opset} (" + ", ".join(f"{d} {v}" for d, v in info.opsets.items())
             + f"), IR version {info.ir_version}"]
    for label, tensors in (("inputs", info.inputs), ("outputs", info.outputs)):
        lines.append(f"  {label}:")
        width = max((len(t.name) for t in tensors), default=0)
        lines += [f"    {t.name.ljust(width)}  {t.dtype:<8} [{', '.join(map(str, t.dims))}]"
                  for t in tensors]
    lines.append(f"  parameters: {info.parameter_count:,} ({_size(info.parameter_bytes)})"
                 + (f", external data: {', '.join(info.external_files)}"
                    if info.external_files else ""))
    total = sum(op.count for op in info.ops)
    lines.append(f"  ops: {total} nodes of {len(info.ops)} types")
    lines += [f"    {(op.domain + '::' if op.domain else '') + op.op_type:<28} {op.count}"
              for op in info.ops]
    lines.append("targets:")
    width = max((len(name) for name in inspection.verdicts), default=0)
    for name, plan in inspection.verdicts.items():
        lines.append(f"  {name.ljust(width)}  {plan.verdict.value}")
        lines += [f"  {' ' * width}    will {change}" for change in plan.changes]
        lines += [f"  {' ' * width}    - {problem}" for problem in plan.problems]
    return "\n".join(printable(line) for line in lines)  # names from the model, escaped


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
