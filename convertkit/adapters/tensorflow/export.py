"""tf2onnx: the opset it writes, converting a traced function's frozen graph (or a TFLite
flatbuffer), the problems it logs instead of raising, and tidying the ONNX file it writes."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convertkit.adapters import LowerRequest
from convertkit.adapters.tensorflow.reasons import error_reason
from convertkit.checker.samples import SamplePlan
from convertkit.errors import ConversionError, ConvertkitError
from convertkit.spec import InputSpec

if TYPE_CHECKING:
    import onnx

# tf2onnx's default is 15; 17 gives LayerNormalization and is what NPU toolchains take.
DEFAULT_OPSET = 17
_TF2ONNX_LOGGER = "tf2onnx"


@dataclass(frozen=True)
class Converted:
    """What a route to ONNX (a traced function, or a TFLite file) hands the adapter once
    the ONNX model is at the request's export_path."""

    exporter: str
    inputs: list[InputSpec]  # in the ONNX model's layout
    output_names: list[str]
    notes: list[str]
    plan: SamplePlan  # the check samples, ONNX layout
    references: list[dict[str, np.ndarray]]  # TensorFlow's outputs, per evaluation sample


def tf2onnx_opset(requested: int | None) -> tuple[int, list[str]]:
    from tf2onnx import constants

    highest = max(constants.OPSET_TO_IR_VERSION)
    if requested is None:
        return min(DEFAULT_OPSET, highest), []
    if requested > highest:
        return highest, [f"tf2onnx writes opsets up to {highest}: exported at {highest}, "
                         f"converted to {requested} on the hub"]
    return requested, []


def tf2onnx_label() -> str:
    import tf2onnx

    return f"tf2onnx {tf2onnx.__version__}"


def convert_function(concrete, specs: list[InputSpec], output_names: list[str],
                     request: LowerRequest, opset: int, tf) -> None:
    """Freeze a traced function and write it to the request's export_path as ONNX."""
    from tf2onnx import tf_loader

    inputs = [t.name for t in concrete.inputs[:len(specs)]]
    outputs = [t.name for t in concrete.outputs]
    rename = dict(zip(inputs, [s.name for s in specs], strict=True))
    rename.update(zip(outputs, output_names, strict=True))
    with Tf2OnnxProblems() as problems:
        try:
            with tf.device("/cpu:0"):
                frozen = tf_loader.from_function(concrete, inputs, outputs)
        except Exception as exc:
            raise ConversionError(
                f"TensorFlow could not freeze the model: {type(exc).__name__}: "
                f"{error_reason(exc)}", hint="the full output is in logs/export.log",
                code="export-failed") from exc

        def process():
            from tf2onnx import tfonnx

            with tf.Graph().as_default() as graph:
                tf.import_graph_def(frozen, name="")
                return tfonnx.process_tf_graph(
                    graph, continue_on_error=False, opset=opset, input_names=inputs,
                    output_names=outputs, tensors_to_rename=rename,
                    inputs_as_nchw=list(request.options.inputs_as_nchw))

        model = run_tf2onnx(process, problems, request, tf)
    save_onnx(model, request.export_path)


def run_tf2onnx(process: Callable[[], Any], problems: Tf2OnnxProblems,
                request: LowerRequest, tf) -> onnx.ModelProto:
    """Run tf2onnx's ``process`` (which builds its graph) and make the ONNX model, each
    failure as a ConversionError naming the unsupported op or the node that failed."""
    from tf2onnx import optimizer

    try:
        with tf.device("/cpu:0"):
            graph = process()
        problems.raise_if_unsupported()
        graph = optimizer.optimize_graph(graph, catch_errors=True)
        return graph.make_model(f"converted from {request.source.text} by convertkit")
    except ConvertkitError:
        raise
    except Exception as exc:
        problems.raise_if_unsupported()
        where = f" at node {problems.failed_node}" if problems.failed_node else ""
        raise ConversionError(
            f"tf2onnx could not convert the model{where}: {type(exc).__name__}: "
            f"{error_reason(exc)}",
            hint="try another --opset; the full output is in logs/export.log",
            code="export-failed") from exc


class Tf2OnnxProblems(logging.Handler):
    """Collects what tf2onnx logs instead of raising: ops it has no conversion for (it
    leaves them in the graph as TensorFlow ops) and the node whose conversion failed. While
    attached, tf2onnx's INFO lines go to stderr, which is logs/export.log."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.unsupported: list[tuple[str, str]] = []
        self.failed_node: str | None = None
        self._echo = logging.StreamHandler()
        self._echo.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._level = logging.NOTSET

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        args = record.args if isinstance(record.args, tuple) else ()
        if "is not supported" in message and len(args) >= 2:
            self.unsupported.append((_model_node(str(args[0])), str(args[1])))
        elif message.startswith("Failed to convert node") and args:
            self.failed_node = self.failed_node or _model_node(str(args[0]))

    def __enter__(self) -> Tf2OnnxProblems:
        logger = logging.getLogger(_TF2ONNX_LOGGER)
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        logger.addHandler(self._echo)
        return self

    def __exit__(self, *exc_info) -> None:
        logger = logging.getLogger(_TF2ONNX_LOGGER)
        logger.removeHandler(self)
        logger.removeHandler(self._echo)
        logger.setLevel(self._level)

    def raise_if_unsupported(self) -> None:
        if self.unsupported:
            raise ConversionError(
                f"tf2onnx has no ONNX conversion for TensorFlow op(s) "
                f"{describe_unsupported(self.unsupported)}",
                hint="replace the op in the model, or try another --opset (tf2onnx writes "
                "opsets up to 18); the full output is in logs/export.log",
                code="unsupported-op")


def describe_unsupported(ops: Sequence[tuple[str, str]], limit: int = 4) -> str:
    """'Svd (node model/svd), Lgamma (node lg)' from (node, op) pairs, one per op type."""
    seen: dict[str, str] = {}
    for node, op in ops:
        seen.setdefault(op, node)
    parts = [f"{op} (node {node})" for op, node in seen.items()]
    shown = ", ".join(parts[:limit])
    return shown + (f" and {len(parts) - limit} more" if len(parts) > limit else "")


def _model_node(name: str) -> str:
    """A node's name in the model, without the call of convertkit's own wrapper function
    (inlined as ``PartitionedCall/`` or ``StatefulPartitionedCall/``)."""
    return re.sub(r"^(?:Stateful)?PartitionedCall(?:_\d+)?/", "", name)


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    from convertkit.ir.io import save_model

    save_model(model, path)


def finish_onnx(path: Path, specs: list[InputSpec], output_names: list[str]) -> None:
    """Name the dynamic axes as the report does, fix the axes -i fixed, check names and put
    inputs and outputs in the model's order."""
    from convertkit.ir.io import load_model, save_model

    model = load_model(path)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    outputs = {o.name: o for o in graph.output}
    expected_inputs = [s.name for s in specs]
    if set(inputs) != set(expected_inputs):
        raise ConversionError(f"tf2onnx wrote inputs {sorted(inputs)}, expected "
                              f"{expected_inputs}", code="input-mismatch")
    if set(outputs) != set(output_names) or len(graph.output) != len(output_names):
        raise ConversionError(f"tf2onnx wrote outputs {list(outputs)}, expected {output_names}",
                              code="output-mismatch")
    for spec in specs:
        shape = inputs[spec.name].type.tensor_type.shape
        if len(shape.dim) != len(spec.dims):
            continue
        for dim, value in zip(shape.dim, spec.dims, strict=True):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    # tf2onnx names every unknown axis unk__N, unrelated to the input names above: drop
    # them (and its intermediate shapes) so that shape inference on the hub carries
    # `batch` through to the outputs.
    del graph.value_info[:]
    for output in graph.output:
        for dim in output.type.tensor_type.shape.dim:
            if dim.dim_param.startswith("unk__"):
                dim.ClearField("dim_param")
    ordered_inputs = [inputs[n] for n in expected_inputs] + [
        i for i in graph.input if i.name in initializers]
    ordered_outputs = [outputs[n] for n in output_names]
    for field_, ordered in ((graph.input, ordered_inputs), (graph.output, ordered_outputs)):
        copies = [type(v)() for v in ordered]
        for copy, value in zip(copies, ordered, strict=True):
            copy.CopyFrom(value)
        del field_[:]
        field_.extend(copies)
    save_model(model, path)
