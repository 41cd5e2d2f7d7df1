"""Lowering an inference model (a PIR ``.json`` or legacy ``.pdmodel`` with its
``.pdiparams``): the program is read without Paddle for its inputs and to check the
parameters file, paddle2onnx exports it, and the Paddle Inference predictor gives the
reference outputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convertkit.adapters import LowerRequest, make_check_feeds, merge_specs, plan_check_samples
from convertkit.adapters.paddle.export import Exported, export
from convertkit.adapters.paddle.legacy_program import read_legacy_program
from convertkit.adapters.paddle.model_files import InferenceModel, find_inference_model
from convertkit.adapters.paddle.params_file import check_params
from convertkit.adapters.paddle.pir_program import read_pir_program
from convertkit.adapters.paddle.program import input_specs_from
from convertkit.adapters.paddle.reasons import error_reason
from convertkit.errors import ConversionError, UsageError, first_line
from convertkit.spec import InputSpec


def lower_inference_model(request: LowerRequest, paddle, scratch: Path) -> Exported:
    source = request.source
    assert source.path is not None
    if request.options.weights is not None:
        raise UsageError(
            "--weights applies to FILE.py:NAME and module:NAME sources only",
            hint="an inference model's weights are its .pdiparams file; drop --weights",
            code="weights-not-applicable")
    model = find_inference_model(source.path)
    program = (read_legacy_program(model.model_path) if model.is_legacy
               else read_pir_program(model.model_path))
    check_params(model, program)
    specs = merge_specs(input_specs_from(program.inputs), request.options.inputs,
                        f"the Paddle model {model.model_path.name}")
    if not specs:
        raise UsageError(f"{model.model_path.name} declares no inputs (no feed/data ops)",
                         hint="pass a model saved with paddle.jit.save or "
                         "save_inference_model", code="bad-paddle-model")
    predictor = _open_predictor(model, paddle)
    # Inputs the model rejects are a usage error (exit 2), which outranks an export failure.
    _run_predictor(predictor, make_check_feeds(request, specs, None), specs)
    exporter, output_names = export(model, program, specs, None, request, scratch)
    plan = plan_check_samples(request, specs, request.export_path)
    references = []
    for feeds in plan.evaluation.samples:
        reference_values = _run_predictor(predictor, feeds, specs)
        if len(output_names) != len(reference_values):
            raise ConversionError(
                f"paddle2onnx wrote {len(output_names)} outputs, the predictor returns "
                f"{len(reference_values)}", hint="the program's fetch targets could not all "
                "be exported", code="output-mismatch")
        references.append(dict(zip(output_names, reference_values, strict=True)))
    notes = [f"{model.format} program {model.model_path.name}"
             + (f" with {model.params_path.name}" if model.params_path else " (no parameters)"),
             "reference outputs from the Paddle Inference predictor (CPU, IR optimisation off)"]
    if model.is_legacy:
        notes.append("paddle2onnx translated the legacy program to PIR before exporting")
    return Exported(exporter, tuple(specs), tuple(output_names), plan, tuple(references),
                    tuple(notes))


def _open_predictor(model: InferenceModel, paddle):
    from paddle import inference

    config = inference.Config(str(model.model_path),
                              str(model.params_path) if model.params_path else "")
    config.disable_gpu()
    config.disable_glog_info()
    config.switch_ir_optim(False)  # the program as written, not a fused rewrite of it
    config.disable_mkldnn()  # plain CPU kernels; oneDNN's set-up alone takes ~1.5 s
    try:
        return inference.create_predictor(config)
    except Exception as exc:
        raise UsageError(
            f"Paddle cannot load {model.model_path.name}"
            + (f" with {model.params_path.name}" if model.params_path else "")
            + f": {first_line(exc, limit=240)}",
            hint="pass the model and the .pdiparams written together by paddle.jit.save or "
            "save_inference_model", code="bad-paddle-model") from exc


def _run_predictor(predictor, feeds: dict[str, np.ndarray],
                   specs: Sequence[InputSpec]) -> list[np.ndarray]:
    try:
        for spec in specs:
            value = np.ascontiguousarray(feeds[spec.name])
            handle = predictor.get_input_handle(spec.name)
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)
        predictor.run()
        return [np.asarray(predictor.get_output_handle(n).copy_to_cpu())
                for n in predictor.get_output_names()]
    except Exception as exc:
        shapes = ", ".join(str(s) for s in specs)
        raise UsageError(
            f"the model rejects inputs {shapes}: {error_reason(exc)}",
            hint="fix the shapes and dtypes given with -i (or the arrays in --data)",
            code="shape-rejected") from exc
