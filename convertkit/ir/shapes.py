"""Fix dynamic input dimensions to the concrete sizes a user gave with -i."""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from convertkit.errors import UsageError
from convertkit.spec import InputSpec


def fix_input_shapes(model: onnx.ModelProto, specs: Sequence[InputSpec]) -> list[str]:
    """Set every dynamic input dimension of ``model`` (in place) from ``specs``, then
    re-infer shapes. Returns one line per fixed input ("x: batch->1")."""
    by_name = {s.name: s for s in specs}
    changes = []
    for value in model.graph.input:
        spec = by_name.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if spec is None or not any(not d.HasField("dim_value") for d in dims):
            continue
        contradicts = len(spec.dims) == len(dims) and any(
            d.HasField("dim_value") and d.dim_value != size for d, size in zip(dims, spec.dims,
                                                                              strict=True))
        if len(spec.dims) != len(dims) or spec.is_dynamic or contradicts:
            raise UsageError(
                f"cannot fix the shape of input {value.name}: -i {spec} is not a concrete "
                f"shape of rank {len(dims)} that agrees with its fixed dims",
                hint=f"pass -i {value.name}:" + "x".join(["N"] * len(dims)) + " with numbers",
                code="bad-input-spec")
        fixed = []
        for dim, size in zip(dims, spec.dims, strict=True):
            if not dim.HasField("dim_value"):
                fixed.append(f"{dim.dim_param or '?'}->{size}")
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
        changes.append(f"{value.name}: {', '.join(fixed)}")
    if changes:
        for value in model.graph.value_info:
            value.type.tensor_type.ClearField("shape")
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        model.graph.CopyFrom(inferred.graph)
    return changes
