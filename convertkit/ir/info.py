"""Describe an ONNX model's interface as plain data."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from convertkit.spec import InputSpec


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int | str, ...]  # a str is a symbolic (dynamic) dimension
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "dims": list(self.dims), "dtype": self.dtype}


@dataclass(frozen=True)
class OnnxInfo:
    opset: int
    ir_version: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    node_count: int

    def input_specs(self) -> list[InputSpec]:
        return [InputSpec(t.name, t.dims, t.dtype) for t in self.inputs]


def describe(model: onnx.ModelProto) -> OnnxInfo:
    initializers = {t.name for t in model.graph.initializer}
    return OnnxInfo(
        opset=default_opset(model),
        ir_version=model.ir_version,
        inputs=tuple(_tensor_info(v) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(_tensor_info(v) for v in model.graph.output),
        node_count=len(model.graph.node),
    )


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor_type = value.type.tensor_type
    dims: list[int | str] = []
    for index, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or f"{value.name}_dim{index}")
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, ValueError):
        dtype = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
    return TensorInfo(value.name, tuple(dims), dtype)
