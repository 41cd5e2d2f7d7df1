"""Every source but TFLite: the loaded model (a ``TfModel``) traced as one tf.function with
the inputs' names, shapes and dtypes, converted by tf2onnx, and run eagerly on the check
inputs for the reference outputs."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convertkit.adapters import LowerRequest, plan_check_samples
from convertkit.adapters.outputs import output_name, tensor_leaves, to_numpy
from convertkit.adapters.tensorflow.export import (
    Converted,
    convert_function,
    finish_onnx,
    tf2onnx_opset,
)
from convertkit.adapters.tensorflow.inputs import DeclaredInput, resolve_inputs, user_specs
from convertkit.adapters.tensorflow.layout import onnx_layout, tensorflow_feeds
from convertkit.adapters.tensorflow.reasons import inputs_rejected
from convertkit.errors import ConversionError, ConvertkitError
from convertkit.spec import InputSpec


@dataclass
class TfModel:
    """A loaded source as one callable: check inputs by name in, structured outputs out."""

    call: Callable[[dict[str, Any]], Any]
    declared: list[DeclaredInput]  # empty: the source records no inputs, -i is needed
    what: str  # for messages: "SavedModel signature 'serving_default'"
    exporter: str  # the route to ONNX, for the report
    output_names: list[str] | None = None  # preferred names (a Keras model's output layers)
    notes: list[str] = field(default_factory=list)
    inputs_hint: str = ""  # what to pass with -i when the source records no inputs
    # What ``call`` needs alive: a loaded SavedModel's functions refer to its variables,
    # which TensorFlow deletes with the object.
    owner: Any = None


def lower_traced(model: TfModel, request: LowerRequest, tf) -> Converted:
    """Trace ``model``, write it to the request's export_path as ONNX, and run it on the
    check inputs."""
    nchw = request.options.inputs_as_nchw
    specs = resolve_inputs(model.declared, user_specs(request, model.declared), nchw,
                           model.what, model.inputs_hint)
    onnx_specs = [onnx_layout(s, nchw) for s in specs]

    function, output_names = _trace(model, specs, request, tf)
    opset, opset_notes = tf2onnx_opset(request.options.opset)
    convert_function(function, specs, output_names, request, opset, tf)
    finish_onnx(request.export_path, onnx_specs, output_names)

    plan = plan_check_samples(request, onnx_specs, request.export_path)
    references = []
    for feeds in plan.evaluation.samples:
        names, reference = _reference(model, feeds, specs, request, tf)
        if names != output_names:
            raise ConversionError(
                f"{model.what} returned outputs {names} when run, {output_names} when traced",
                hint="the model's outputs must not depend on how it is called",
                code="output-mismatch")
        references.append(reference)
    return Converted(exporter=model.exporter, inputs=onnx_specs, output_names=output_names,
                     notes=model.notes + opset_notes, plan=plan, references=references)


def _trace(model: TfModel, specs: list[InputSpec], request: LowerRequest, tf):
    """One tf.function over the model, with the inputs' names, shapes and dtypes."""
    names = [s.name for s in specs]
    traced_names: list[str] = []

    def serve(*args):
        structured = model.call(dict(zip(names, args, strict=True)))
        output_names, tensors = _output_leaves(structured, model.output_names, tf)
        traced_names[:] = output_names
        return tuple(tensors)

    signature = [_tf_spec(s, tf) for s in specs]
    try:
        function = tf.function(serve, input_signature=signature)
        concrete = function.get_concrete_function()
    except ConvertkitError:
        raise
    except Exception as exc:
        raise inputs_rejected(model.what, model.declared, specs, request, exc) from exc
    if not traced_names:
        raise ConversionError(f"{model.what} returned no tensors",
                              hint="return a tensor, or a list or dict of tensors",
                              code="no-outputs")
    if len(set(traced_names)) != len(traced_names):
        raise ConversionError(f"{model.what} has duplicate output names {traced_names}",
                              hint="give each output its own name", code="output-mismatch")
    return concrete, list(traced_names)


def _output_leaves(structured, preferred: list[str] | None,
                   tf) -> tuple[list[str], list[Any]]:
    """(names, tensors) of a model's (possibly nested) outputs, in a stable order (mapping
    keys sorted, as tf.nest and signatures order them). Outputs that are not a mapping take
    the ``preferred`` names when there are as many, all different."""
    leaves = tensor_leaves(
        structured, lambda value: isinstance(value, (tf.Tensor, tf.Variable, np.ndarray)),
        sort_keys=True)
    names = [output_name(path) for path, _ in leaves]
    is_positional = not isinstance(structured, Mapping)
    if preferred and is_positional and len(preferred) == len(leaves) \
            and len(set(preferred)) == len(preferred):
        names = list(preferred)
    return names, [value for _, value in leaves]


def _tf_spec(spec: InputSpec, tf):
    shape = [d if isinstance(d, int) else None for d in spec.dims]
    return tf.TensorSpec(shape, tf.as_dtype(spec.dtype), name=_placeholder_name(spec.name))


def _placeholder_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
    return cleaned if re.match(r"[A-Za-z0-9.]", cleaned) else f"input{cleaned}"


def _reference(model: TfModel, feeds: Mapping[str, np.ndarray], specs: list[InputSpec],
               request: LowerRequest, tf) -> tuple[list[str], dict[str, np.ndarray]]:
    tf_feeds = {name: tf.constant(value) for name, value in
                tensorflow_feeds(feeds, request.options.inputs_as_nchw).items()}
    try:
        structured = model.call(tf_feeds)
    except Exception as exc:
        raise inputs_rejected(model.what, model.declared, specs, request, exc, feeds) from exc
    names, values = _output_leaves(structured, model.output_names, tf)
    return names, {name: to_numpy(value) for name, value in zip(names, values, strict=True)}
