"""Graph optimisation on the hub: constant folding, dead-node removal and the standard-
domain fusions (Conv+BN, Gemm, Pad+Conv...) of onnxslim, then shape inference.

onnxslim rather than onnxoptimizer: it is pure Python on top of onnx (no compiled
extension to match to each onnx release), actively maintained, handles models over
2 GB, and its default fusions stay in the standard ONNX domain, so every target can
still read the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from convertkit.errors import ConversionError


@dataclass(frozen=True)
class OptimizationRecord:
    passes: tuple[str, ...]
    nodes_before: int
    nodes_after: int

    def to_dict(self) -> dict:
        return {"passes": list(self.passes), "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after}


def _onnxslim(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    slimmed = onnxslim.slim(model)
    _restore_node_metadata(model, slimmed)
    if slimmed.ir_version < 4:
        # IR 3 lists every initializer among the graph inputs; onnxslim drops them from
        # the inputs, which is valid from IR 4 on (same opsets).
        slimmed.ir_version = 4
    return slimmed


def _restore_node_metadata(original: onnx.ModelProto, optimized: onnx.ModelProto) -> None:
    """onnxslim rebuilds nodes without their metadata_props, where torch's dynamo exporter
    records module names and stack traces (what localisation maps a node back to). Give
    each surviving node the metadata of the original node that wrote the same output."""
    by_output = {}
    for node in original.graph.node:
        if node.metadata_props:
            for name in node.output:
                by_output[name] = node.metadata_props
    for node in optimized.graph.node:
        if node.metadata_props:
            continue
        source = next((by_output[n] for n in node.output if n in by_output), None)
        if source is not None:
            node.metadata_props.extend(source)


def _shape_inference(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


# (name shown in the report, pass). Tests append a deliberately wrong pass here to prove
# that the numerical check catches an optimisation that changes results.
PASSES: list[tuple[str, Callable[[onnx.ModelProto], onnx.ModelProto]]] = [
    ("onnxslim: constant folding, dead-node elimination, standard-domain fusions", _onnxslim),
    ("shape inference", _shape_inference),
]


def optimize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, OptimizationRecord]:
    before = len(model.graph.node)
    applied = []
    for name, run in PASSES:
        try:
            model = run(model)
        except Exception as exc:  # a pass that cannot handle the model is a failed build
            raise ConversionError(
                f"graph optimisation '{name}' failed: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}",
                hint="rerun with --no-optimize to convert the model as exported",
                code="optimization-failed",
            ) from exc
        applied.append(name)
    return model, OptimizationRecord(tuple(applied), before, len(model.graph.node))
