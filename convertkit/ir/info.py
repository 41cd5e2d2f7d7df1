"""Describe an ONNX model's interface as plain data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

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
class OpCount:
    domain: str  # "" for the default ONNX domain
    op_type: str
    count: int

    def to_dict(self) -> dict:
        return {"domain": self.domain or "ai.onnx", "op_type": self.op_type, "count": self.count}


@dataclass(frozen=True)
class OnnxInfo:
    """A model's interface and contents, as plain data (no weights)."""

    opset: int
    ir_version: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    node_count: int  # top-level graph nodes
    ops: tuple[OpCount, ...] = ()  # every node, subgraphs included, most frequent first
    opsets: dict[str, int] = field(default_factory=dict)  # domain -> version
    parameter_count: int = 0
    parameter_bytes: int = 0
    external_files: tuple[str, ...] = ()

    def input_specs(self) -> list[InputSpec]:
        return [InputSpec(t.name, t.dims, t.dtype) for t in self.inputs]

    @property
    def dynamic_inputs(self) -> list[TensorInfo]:
        return [t for t in self.inputs if any(isinstance(d, str) for d in t.dims)]

    def to_dict(self) -> dict:
        return {
            "opset": self.opset, "ir_version": self.ir_version, "opsets": self.opsets,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "nodes": self.node_count, "ops": [o.to_dict() for o in self.ops],
            "parameters": {"count": self.parameter_count, "bytes": self.parameter_bytes},
            "external_data": list(self.external_files),
        }


def describe(model: onnx.ModelProto) -> OnnxInfo:
    """Describe ``model``; it may be loaded without its external data."""
    initializers = {t.name for t in model.graph.initializer}
    census = Counter((n.domain if n.domain != "ai.onnx" else "", n.op_type)
                     for n in iter_nodes(model.graph))
    count = size = 0
    external = []
    for tensor in _parameters(model.graph):
        elements = 1
        for dim in tensor.dims:
            elements *= dim
        count += elements
        size += elements * _itemsize(tensor.data_type)
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in external:
                external.append(entry.value)
    return OnnxInfo(
        opset=default_opset(model),
        ir_version=model.ir_version,
        inputs=tuple(_tensor_info(v) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(_tensor_info(v) for v in model.graph.output),
        node_count=len(model.graph.node),
        ops=tuple(OpCount(d, o, c) for (d, o), c in
                  sorted(census.items(), key=lambda item: (-item[1], item[0]))),
        opsets={(e.domain or "ai.onnx"): e.version for e in model.opset_import},
        parameter_count=count,
        parameter_bytes=size,
        external_files=tuple(external),
    )


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs inside If, Loop and Scan."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from iter_nodes(subgraph)


def _parameters(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant values of ``graph`` and of its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "value":
                yield attribute.t
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _parameters(attribute.g)
            for subgraph in attribute.graphs:
                yield from _parameters(subgraph)


def _itemsize(data_type: int) -> int:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, ValueError):
        return 0


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
