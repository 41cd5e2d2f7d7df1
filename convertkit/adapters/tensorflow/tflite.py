"""``.tflite`` flatbuffers: converted by tf2onnx's own flatbuffer reader (no tracing), with
the reference outputs from the TFLite interpreter."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convertkit.adapters import LowerRequest, plan_check_samples
from convertkit.adapters.outputs import to_numpy
from convertkit.adapters.tensorflow.export import (
    Converted,
    Tf2OnnxProblems,
    finish_onnx,
    run_tf2onnx,
    save_onnx,
    tf2onnx_label,
    tf2onnx_opset,
)
from convertkit.adapters.tensorflow.inputs import DeclaredInput, resolve_inputs, user_specs
from convertkit.adapters.tensorflow.layout import onnx_layout, tensorflow_feeds
from convertkit.adapters.tensorflow.reasons import error_reason, inputs_rejected
from convertkit.adapters.tensorflow.savedmodel import choose_signature
from convertkit.errors import UsageError


@dataclass
class _TfliteModel:
    declared: list[DeclaredInput]
    output_names: list[str]
    rename: dict[str, str]  # flatbuffer tensor name -> input/output name
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    notes: list[str]


def lower_tflite(request: LowerRequest, tf) -> Converted:
    """Write the request's TFLite file to its export_path as ONNX, and run the interpreter
    on the check inputs."""
    path = request.source.path
    assert path is not None
    model = _load_tflite(path, request.options.signature, tf)
    what = f"TFLite model {path.name}"
    specs = resolve_inputs(model.declared, user_specs(request, model.declared),
                           request.options.inputs_as_nchw, what)
    onnx_specs = [onnx_layout(s, request.options.inputs_as_nchw) for s in specs]
    opset, opset_notes = tf2onnx_opset(request.options.opset)

    def process():
        from tf2onnx import tfonnx

        return tfonnx.process_tf_graph(
            None, tflite_path=str(path), continue_on_error=False, opset=opset,
            tensors_to_rename=model.rename, inputs_as_nchw=list(request.options.inputs_as_nchw))

    with Tf2OnnxProblems() as problems:
        onnx_model = run_tf2onnx(process, problems, request, tf)
    save_onnx(onnx_model, request.export_path)
    finish_onnx(request.export_path, onnx_specs, model.output_names)

    plan = plan_check_samples(request, onnx_specs, request.export_path)
    references = []
    for feeds in plan.evaluation.samples:
        try:
            outputs = model.run(tensorflow_feeds(feeds, request.options.inputs_as_nchw))
        except Exception as exc:
            raise inputs_rejected(what, model.declared, specs, request, exc, feeds) from exc
        references.append({name: to_numpy(outputs[name]) for name in model.output_names})
    return Converted(exporter=f"{tf2onnx_label()} (TFLite flatbuffer)", inputs=onnx_specs,
                     output_names=model.output_names, notes=model.notes + opset_notes,
                     plan=plan, references=references)


def _load_tflite(path: Path, signature: str | None, tf) -> _TfliteModel:
    with _quiet_tflite_warning():
        try:
            interpreter = tf.lite.Interpreter(model_path=str(path))
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"{path} is not a readable TFLite model: {error_reason(exc)}",
                             hint="pass a .tflite file written by tf.lite.TFLiteConverter",
                             code="bad-tflite") from exc
    signatures = interpreter.get_signature_list()
    notes = ["reference: the TFLite interpreter (tf.lite.Interpreter)"]
    if signatures:
        name = choose_signature(list(signatures), signature, f"TFLite model {path.name}")
        if len(signatures) > 1:
            notes.append(f"signature '{name}' of {', '.join(sorted(signatures))}")
        runner = interpreter.get_signature_runner(name)
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        declared = [_tflite_declared(key, detail) for key, detail in inputs.items()]
        rename = {d["name"]: key for key, d in inputs.items()}
        rename.update({d["name"]: key for key, d in outputs.items()})
        return _TfliteModel(declared, list(outputs), rename,
                            lambda feeds: dict(runner(**feeds)), notes)
    if signature is not None:
        raise UsageError(f"TFLite model {path.name} has no signatures",
                         hint="drop --signature", code="unknown-signature")
    input_details = interpreter.get_input_details()
    output_details = interpreter.get_output_details()
    rename = {d["name"]: d["name"].removesuffix(":0") for d in input_details + output_details}
    declared = [_tflite_declared(rename[d["name"]], d) for d in input_details]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for detail in input_details:
            interpreter.resize_tensor_input(detail["index"], feeds[rename[detail["name"]]].shape)
        interpreter.allocate_tensors()
        for detail in input_details:
            interpreter.set_tensor(detail["index"], feeds[rename[detail["name"]]])
        interpreter.invoke()
        return {rename[d["name"]]: interpreter.get_tensor(d["index"]) for d in output_details}

    return _TfliteModel(declared, [rename[d["name"]] for d in output_details], rename, run,
                        notes)


def _tflite_declared(name: str, detail: Mapping[str, Any]) -> DeclaredInput:
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    dims = tuple(None if int(d) < 0 else int(d) for d in shape)
    return DeclaredInput(name, dims, np.dtype(detail["dtype"]).name)


@contextlib.contextmanager
def _quiet_tflite_warning() -> Iterator[None]:
    """tf.lite.Interpreter warns that it moves to ai_edge_litert; it still works in 2.21."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        yield
