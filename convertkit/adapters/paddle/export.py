"""Exporting with paddle2onnx, in a process of its own (it aborts the process on an
unsupported operator, and ``paddle.onnx.export`` calls ``sys.exit``), and giving the
exported model the inputs' axis names and the model's output names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convertkit.adapters import LowerRequest
from convertkit.adapters.paddle.model_files import InferenceModel
from convertkit.adapters.paddle.program import ProgramInfo
from convertkit.adapters.paddle.unsupported import explain_export_failure
from convertkit.checker.samples import SamplePlan
from convertkit.dependencies import require
from convertkit.errors import ConversionError, ConvertkitError, MissingDependencyError
from convertkit.spec import InputSpec

DEFAULT_OPSET = 17


@dataclass(frozen=True)
class Exported:
    """What lowering a Layer or an inference model produced, for PaddleAdapter.lower to
    save and record: the exported model's inputs and output names, the check samples and
    the reference outputs of each evaluation sample (by output name), and how they were
    made."""

    exporter: str
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]
    plan: SamplePlan
    references: tuple[dict[str, np.ndarray], ...]
    notes: tuple[str, ...]


def export(model: InferenceModel, program: ProgramInfo, specs: Sequence[InputSpec],
           output_names: Sequence[str] | None, request: LowerRequest, scratch: Path,
           operator_lines: Callable[[], dict[str, str]] | None = None,
           ) -> tuple[str, list[str]]:
    """paddle2onnx, in a process of its own. Returns the exporter's name and the exported
    model's output names.
    ``operator_lines`` says where in the model's code each operator type comes from."""
    import onnx

    from convertkit.isolation import run_in_child

    raw = scratch / "paddle2onnx.onnx"
    log = scratch / "paddle2onnx.log"
    try:
        result = run_in_child(
            "convertkit.adapters.paddle.export:export_in_child",
            {"model": str(model.model_path),
             "params": str(model.params_path) if model.params_path else "",
             "opset": request.options.opset or DEFAULT_OPSET, "out": str(raw)},
            what="paddle2onnx", log_path=log, echo=True)
    except MissingDependencyError:
        raise
    except ConvertkitError as error:
        raise explain_export_failure(model, program, log, error, paddle2onnx_version(),
                                     operator_lines) from None
    exported = onnx.load(str(raw))
    names = rename_onnx(exported, specs, output_names)
    onnx.save(exported, str(request.export_path))
    return f"paddle2onnx {result['version']}", names


def export_in_child(payload: dict) -> dict:
    """Run paddle2onnx on one program (in its own process: it aborts on failure)."""
    paddle2onnx = require("paddle2onnx", name="paddle2onnx", extra="paddle")
    # save_file=None returns the model unfolded: with a save_file paddle2onnx folds
    # constants with polygraphy after forcing POLYGRAPHY_AUTOINSTALL_DEPS=1, which lets
    # polygraphy pip-install packages. The hub folds constants with onnxslim instead.
    data = paddle2onnx.export(payload["model"], payload["params"], save_file=None,
                              opset_version=payload["opset"], auto_upgrade_opset=True,
                              enable_onnx_checker=True)
    if not isinstance(data, bytes) or not data:
        raise ConversionError("paddle2onnx returned no model", code="export-failed")
    Path(payload["out"]).write_bytes(data)
    return {"version": paddle2onnx_version()}


def paddle2onnx_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("paddle2onnx")
    except PackageNotFoundError:
        return "(unknown version)"


def rename_onnx(model, specs: Sequence[InputSpec],
                output_names: Sequence[str] | None) -> list[str]:
    """Give the exported model the inputs' axis names from ``specs`` (paddle2onnx writes
    DynamicDimension.N) and, when given, ``output_names`` in place of its outputs' names
    (kept as written where a name is already taken). Returns the outputs' names."""
    graph = model.graph
    by_name = {s.name: s for s in specs}
    dims: dict[str, str] = {}
    for value in graph.input:
        spec = by_name.get(value.name)
        if spec is None or not value.type.tensor_type.HasField("shape"):
            continue
        for dim, wanted in zip(value.type.tensor_type.shape.dim, spec.dims, strict=False):
            if not isinstance(wanted, str) or dim.HasField("dim_value"):
                continue  # a size the program fixed stays fixed
            if dim.HasField("dim_param"):
                dims.setdefault(dim.dim_param, wanted)
            dim.dim_param = wanted
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.HasField("shape"):
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in dims:
                    dim.dim_param = dims[dim.dim_param]
    written = [o.name for o in graph.output]
    if output_names is None:
        return written
    if len(written) != len(output_names):
        raise ConversionError(
            f"paddle2onnx wrote {len(written)} outputs ({', '.join(written)}), the model "
            f"returns {len(output_names)} tensors ({', '.join(output_names)})",
            hint="return tensors only from forward (no None, ints or strings)",
            code="output-mismatch")
    mapping = {old: new for old, new in zip(written, output_names, strict=True) if old != new}
    produced = {name for node in graph.node for name in node.output}
    others = ({v.name for v in graph.input} | {i.name for i in graph.initializer}
              | produced) - set(written)
    if others & set(mapping.values()) or not set(mapping) <= produced:
        return written  # a new name is taken, or an output is an input or a constant
    _rename_values(graph, mapping)
    return list(output_names)


def _rename_values(graph, mapping: dict[str, str]) -> None:
    import onnx

    for value in [*graph.output, *graph.value_info]:
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_values(attribute.g, mapping)
            for subgraph in attribute.graphs:
                _rename_values(subgraph, mapping)
